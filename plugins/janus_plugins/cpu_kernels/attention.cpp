// Attention of one query position over a KV cache (a decode step), in float32, written once over the
// architecture's float32 lanes (lanes.h: AVX2 on x86, NEON on ARM64).
#include "common.h"
#include "lanes.h"

namespace janus_kernels {
namespace {

constexpr int kKeys = 4;  // keys scored together

// q . k for keys [l, l + N), scaled, into scores: each key's sum over D in its own register, as one key's
// would be (the same sums in the same order), so that N chains of FMAs overlap and q is loaded once for N keys.
// One key at a time, with the C library's exp per key, a Zen 4's two cores attended 46 GB/s of bfloat16 keys
// and values held in cache (L = 640), slower than its memory reads at their best; with both changes 73.
template <int N, typename T>
void score(const float* q, const T* k, int64_t l, int64_t D, int64_t row, float scale, float* scores) {
  Vec acc[N];
  for (int j = 0; j < N; ++j) acc[j] = Lanes::zero();
  for (int64_t d = 0; d < D; d += Lanes::kWidth) {
    const Vec qd = Lanes::load(q + d);
    for (int j = 0; j < N; ++j) acc[j] = Lanes::fma(qd, Lanes::widen(k + (l + j) * row + d), acc[j]);
  }
  for (int j = 0; j < N; ++j) scores[l + j] = Lanes::sum(acc[j]) * scale;
}

// The softmax of scores[0, L) in place, kWidth at a time (`padded`: L rounded up to kWidth, the room
// `scores` has): e^x through exp_lanes, as the prompt's attention takes it, not a call of the C library's exp
// per key.
inline void softmax(float* scores, int64_t L, int64_t padded) {
  constexpr int64_t W = Lanes::kWidth;
  std::fill(scores + L, scores + padded, -INFINITY);
  Vec top = Lanes::splat(-INFINITY);
  for (int64_t l = 0; l < padded; l += W) top = Lanes::max(top, Lanes::load(scores + l));
  const Vec most = Lanes::splat(Lanes::max_of(top));
  for (int64_t l = 0; l < padded; l += W)
    Lanes::store(scores + l, exp_lanes(Lanes::sub(Lanes::load(scores + l), most)));
  std::fill(scores + L, scores + padded, 0.f);  // exp_lanes clamps: e^-inf would be e^-87, not 0
  Vec sum = Lanes::zero();
  for (int64_t l = 0; l < padded; l += W) sum = Lanes::add(sum, Lanes::load(scores + l));
  const Vec total = Lanes::splat(Lanes::sum(sum));
  for (int64_t l = 0; l < padded; l += W) Lanes::store(scores + l, Lanes::div(Lanes::load(scores + l), total));
}

// One query row against L keys and values (rows of D, D % 8 == 0, `row` elements apart): softmax(q k^T *
// scale) v in float32, written to out[D]. `scores` has room for L rounded up to kWidth floats.
template <typename T>
void attend_one(const float* q, const T* k, const T* v, int64_t L, int64_t D, int64_t row, float scale,
                float* scores, float* out) {
  int64_t l = 0;
  for (; l + kKeys <= L; l += kKeys) score<kKeys>(q, k, l, D, row, scale, scores);
  for (; l < L; ++l) score<1>(q, k, l, D, row, scale, scores);
  softmax(scores, L, (L + Lanes::kWidth - 1) / Lanes::kWidth * Lanes::kWidth);
  for (int64_t d = 0; d < D; ++d) out[d] = 0.f;
  for (l = 0; l < L; ++l) {
    const Vec p = Lanes::splat(scores[l]);
    for (int64_t d = 0; d < D; d += Lanes::kWidth)
      Lanes::store(out + d, Lanes::fma(p, Lanes::widen(v + l * row + d), Lanes::load(out + d)));
  }
}

}  // namespace

// One decode step of attention: q [B, H, 1, D]; k, v [B, Hkv, L, D] with unit stride along D (views of a
// cache are fine); H a multiple of Hkv (grouped-query heads share their key/value head). Returns
// softmax(q k^T * scale) v as [B, H, 1, D] in q's dtype.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale) {
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && k.dim() == 4 && v.sizes() == k.sizes(), "shapes do not match");
  TORCH_CHECK(k.scalar_type() == v.scalar_type() && k.stride(3) == 1 && k.strides() == v.strides(),
              "keys and values must be laid out alike, with unit stride along D");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1), L = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(3) == D && D % 8 == 0 && H % Hkv == 0, "shapes do not match");
  const at::Tensor qf = q.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({B, H, 1, D}, qf.options());
  const float* qp = qf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = H / Hkv, sb = k.stride(0), sh = k.stride(1), row = k.stride(2);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores((L + Lanes::kWidth - 1) / Lanes::kWidth * Lanes::kWidth);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, kv = (i % H) / group, offset = b * sb + kv * sh;
      if (k.scalar_type() == at::kBFloat16) {
        const auto* kp = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>()) + offset;
        const auto* vp = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>()) + offset;
        attend_one(qp + i * D, kp, vp, L, D, row, static_cast<float>(scale), scores.data(), op + i * D);
      } else {
        attend_one(qp + i * D, k.data_ptr<float>() + offset, v.data_ptr<float>() + offset, L, D, row,
                   static_cast<float>(scale), scores.data(), op + i * D);
      }
    }
  });
  return out.to(q.scalar_type());
}

}  // namespace janus_kernels
