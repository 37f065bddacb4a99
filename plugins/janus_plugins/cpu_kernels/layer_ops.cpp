// The elementwise parts of a decoder layer (RMSNorm, the residual add, rotary embedding with the cache write,
// the SwiGLU product), each one call where torch takes five to fifteen small ops; written once over the
// architecture's float32 lanes (lanes.h: AVX2 on x86, NEON on ARM64).
#include "common.h"
#include "lanes.h"

namespace janus_kernels {
namespace {

// ---- The elementwise parts of a decoder layer, in float32 registers, rounded to the tensors' dtype exactly
// where transformers' LLaMA modules round (so bfloat16 results match torch's bit for bit up to the order of a
// sum or an exp's last float32 bit). Rows are multiples of 8 elements.

constexpr int64_t W = Lanes::kWidth;

// transformers' LlamaRMSNorm of one row: x * rsqrt(mean(x^2) + eps) in float32, rounded to T, times the
// weight, rounded to T.
template <typename T>
void rms_norm_row(const T* x, const T* w, float eps, int64_t n, T* y) {
  Vec squares = Lanes::zero();
  for (int64_t i = 0; i < n; i += W) squares = Lanes::fma(Lanes::load(x + i), Lanes::load(x + i), squares);
  const Vec r = Lanes::splat(1.f / std::sqrt(Lanes::sum(squares) / static_cast<float>(n) + eps));
  for (int64_t i = 0; i < n; i += W)
    Lanes::store(y + i, Lanes::mul(Lanes::load(w + i), Lanes::round_to(y, Lanes::mul(Lanes::load(x + i), r))));
}

// rms_norm_row over every row of x (numel elements, rows of weight.numel()) into y.
template <typename T>
void rms_norm_rows(const T* x, const at::Tensor& weight, double eps, int64_t numel, T* y) {
  const int64_t n = weight.numel();
  const T* w = weight.data_ptr<T>();
  for (int64_t m = 0; m < numel / n; ++m) rms_norm_row(x + m * n, w, static_cast<float>(eps), n, y + m * n);
}

template <typename F>
void with_dtype(const at::Tensor& t, F&& body) {
  if (t.scalar_type() == at::kFloat) {
    body(float{});
  } else if (t.scalar_type() == at::kBFloat16) {
    body(c10::BFloat16{});
  } else {
    TORCH_CHECK(false, "float32 or bfloat16 expected, got ", t.scalar_type());
  }
}

void check_rows(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.is_contiguous() && weight.is_contiguous() && x.scalar_type() == weight.scalar_type(),
              "x and weight must be contiguous and of one dtype");
  TORCH_CHECK(x.size(-1) == weight.numel() && weight.numel() % 8 == 0, "rows must have weight.numel() % 8 == 0");
}
}  // namespace

// RMSNorm of every row of x [..., n] (contiguous) with weight [n]: transformers' LlamaRMSNorm.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rows(x, weight);
  at::Tensor y = at::empty_like(x);
  with_dtype(x, [&](auto zero) {
    using T = decltype(zero);
    rms_norm_rows(x.data_ptr<T>(), weight, eps, x.numel(), y.data_ptr<T>());
  });
  return y;
}

// The residual add and the next RMSNorm: (x + delta rounded to x's dtype, rms_norm of that).
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                                      const at::Tensor& weight, double eps) {
  check_rows(x, weight);
  TORCH_CHECK(delta.sizes() == x.sizes() && delta.is_contiguous() && delta.scalar_type() == x.scalar_type(),
              "delta must be contiguous, shaped and typed like x");
  at::Tensor sum = at::empty_like(x), y = at::empty_like(x);
  with_dtype(x, [&](auto zero) {
    using T = decltype(zero);
    const T* a = x.data_ptr<T>();
    const T* d = delta.data_ptr<T>();
    T* s = sum.data_ptr<T>();
    for (int64_t i = 0; i < x.numel(); i += W) Lanes::store(s + i, Lanes::add(Lanes::load(a + i), Lanes::load(d + i)));
    rms_norm_rows(s, weight, eps, x.numel(), y.data_ptr<T>());
  });
  return {sum, y};
}

// Rotary embedding of positions start..start+T, as transformers' apply_rotary_pos_emb (x * cos +
// rotate_half(x) * sin, each product rounded to the dtype): q [B, T, H, D] rotated in place; k [B, T, Hkv, D]
// rotated into keys and v copied into values, both [B, Hkv, L, D] caches (unit stride along D), at positions
// start..start+T. cos, sin: [T, D] (any leading ones).
void rotary_into_cache(at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                       const at::Tensor& sin, at::Tensor& keys, at::Tensor& values, int64_t start) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && keys.dim() == 4 && values.sizes() == keys.sizes(),
              "q, k, v must be [B, T, heads, D] and the caches [B, heads, L, D]");
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), Hkv = k.size(2), L = keys.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(1) == T && k.size(3) == D && keys.size(0) == B && keys.size(1) == Hkv &&
                  keys.size(3) == D && D % 16 == 0 && cos.numel() == T * D && sin.numel() == T * D,
              "shapes do not match");
  TORCH_CHECK(start >= 0 && start + T <= L, "positions ", start, "..", start + T, " do not fit a cache of ", L);
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous() && cos.is_contiguous() && sin.is_contiguous() &&
                  keys.stride(3) == 1 && values.strides() == keys.strides(),
              "q, k, v, cos, sin must be contiguous and the caches laid out alike with unit stride along D");
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&k, &v, &cos, &sin, &keys, &values})
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "all tensors must have q's dtype");
  const int64_t half = D / 2;
  with_dtype(q, [&](auto zero) {
    using T_ = decltype(zero);
    const T_* c = cos.data_ptr<T_>();
    const T_* s = sin.data_ptr<T_>();
    // out[:half] = x1 c1 - x2 s1, out[half:] = x2 c2 + x1 s2, every product and sum rounded to T_
    auto rotate = [&](const T_* x, const T_* ct, const T_* st, T_* out) {
      const auto rounded_product = [&](Vec a, const T_* b) { return Lanes::round_to(out, Lanes::mul(a, Lanes::load(b))); };
      for (int64_t i = 0; i < half; i += W) {
        const Vec x1 = Lanes::load(x + i), x2 = Lanes::load(x + half + i);
        const Vec lo = Lanes::sub(rounded_product(x1, ct + i), rounded_product(x2, st + i));
        const Vec hi = Lanes::add(rounded_product(x2, ct + half + i), rounded_product(x1, st + half + i));
        Lanes::store(out + i, lo);
        Lanes::store(out + half + i, hi);
      }
    };
    T_* qp = q.data_ptr<T_>();
    const T_* kp = k.data_ptr<T_>();
    const T_* vp = v.data_ptr<T_>();
    T_* kc = keys.data_ptr<T_>();
    T_* vc = values.data_ptr<T_>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const T_* ct = c + t * D;
        const T_* st = s + t * D;
        for (int64_t h = 0; h < H; ++h) {
          T_* x = qp + ((b * T + t) * H + h) * D;
          rotate(x, ct, st, x);
        }
        for (int64_t h = 0; h < Hkv; ++h) {
          const int64_t from = ((b * T + t) * Hkv + h) * D;
          const int64_t to = b * keys.stride(0) + h * keys.stride(1) + (start + t) * keys.stride(2);
          rotate(kp + from, ct, st, kc + to);
          std::copy_n(vp + from, D, vc + to);
        }
      }
  });
}

// silu(gate) rounded to the dtype, times up, rounded: the SwiGLU product of transformers' LlamaMLP.
at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.sizes() == up.sizes() && gate.is_contiguous() && up.is_contiguous() &&
                  gate.scalar_type() == up.scalar_type() && gate.numel() % 8 == 0,
              "gate and up must be contiguous, shaped and typed alike, numel % 8 == 0");
  at::Tensor out = at::empty_like(gate);
  with_dtype(gate, [&](auto zero) {
    using T = decltype(zero);
    const T* g = gate.data_ptr<T>();
    const T* u = up.data_ptr<T>();
    T* o = out.data_ptr<T>();
    const Vec one = Lanes::splat(1.f);
    at::parallel_for(0, gate.numel() / 8, 512, [&](int64_t begin, int64_t end) {  // ~4 ns per element
      for (int64_t i = begin * 8; i < end * 8; i += W) {
        const Vec x = Lanes::load(g + i);
        const Vec silu = Lanes::div(x, Lanes::add(one, exp_lanes(Lanes::sub(Lanes::zero(), x))));
        Lanes::store(o + i, Lanes::mul(Lanes::round_to(o, silu), Lanes::load(u + i)));
      }
    });
  });
  return out;
}

}  // namespace janus_kernels
