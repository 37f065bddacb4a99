// Decode-step kernels for AVX2 CPUs: a weight-streaming matmul for few rows, y = x @ w.T (* scale) (+ bias),
// and attention of one query position over a KV cache.
//
// Each output row is a dot product of x with one weight row; a tile walks R weight rows once, converting each
// block of 16 weights to float32 in registers and feeding it to up to 3 rows of x, so the weights are read
// from memory once per call whatever the number of rows (the rows of x stay in cache).
// Weight formats: float32, bfloat16 (widened by interleaving with zeros, which permutes each block of 16;
// x is permuted the same way once per call) and int8 with one float32 scale per output feature.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBlock = 16;  // weights converted per step; the in-features must be a multiple
constexpr int kTileRows = 4;    // weight rows walked together
constexpr int kMaxGroup = 3;    // rows of x per pass over a tile: 3 x 4 accumulators fit AVX2's 16 registers

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// Loads 16 weights as two float32 vectors, in the order the (possibly permuted) x expects.
inline void widen(const float* w, __m256& lo, __m256& hi) {
  lo = _mm256_loadu_ps(w);
  hi = _mm256_loadu_ps(w + 8);
}
inline void widen(const uint16_t* w, __m256& lo, __m256& hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i zero = _mm256_setzero_si256();
  lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));  // weights 0-3 and 8-11
  hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));  // weights 4-7 and 12-15
}
inline void widen(const int8_t* w, __m256& lo, __m256& hi) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
  hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v)));
}

// y[m * ldy + r] = dot(x[m * K:], w[r * K:]) for G rows of x and R rows of w.
template <typename W, int G, int R>
inline void tile(const float* x, const W* w, int64_t K, float* y, int64_t ldy) {
  __m256 acc[G][R];
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += kBlock) {
    for (int r = 0; r < R; ++r) {  // one weight row at a time: G * R accumulators + 2 stay in registers
      __m256 lo, hi;
      widen(w + r * K + k, lo, hi);
      for (int m = 0; m < G; ++m) {
        acc[m][r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + m * K + k), acc[m][r]);
        acc[m][r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + m * K + k + 8), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = horizontal_sum(acc[m][r]);
}

// Every row of x against R consecutive weight rows, kMaxGroup rows of x per pass.
template <typename W, int R>
void weight_rows(const float* x, int64_t M, const W* w, int64_t K, float* y, int64_t N) {
  int64_t m = 0;
  for (; m + kMaxGroup <= M; m += kMaxGroup) tile<W, kMaxGroup, R>(x + m * K, w, K, y + m * N, N);
  switch (M - m) {
    case 2: tile<W, 2, R>(x + m * K, w, K, y + m * N, N); break;
    case 1: tile<W, 1, R>(x + m * K, w, K, y + m * N, N); break;
    default: break;
  }
}

template <typename W>
void matmul(const float* x, int64_t M, const W* w, int64_t K, int64_t N, float* y) {
  const int64_t tiles = N / kTileRows;
  at::parallel_for(0, tiles, 4, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      weight_rows<W, kTileRows>(x, M, w + t * kTileRows * K, K, y + t * kTileRows, N);
  });
  for (int64_t n = tiles * kTileRows; n < N; ++n) weight_rows<W, 1>(x, M, w + n * K, K, y + n, N);
}

inline __m256 widen8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 widen8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// One query row against L keys and values (rows of D, D % 8 == 0, `row` elements apart): softmax(q k^T *
// scale) v in float32, written to out[D]. `scores` has room for L floats.
template <typename T>
void attend_one(const float* q, const T* k, const T* v, int64_t L, int64_t D, int64_t row, float scale,
                float* scores, float* out) {
  float top = -INFINITY;
  for (int64_t l = 0; l < L; ++l) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), widen8(k + l * row + d), acc);
    scores[l] = horizontal_sum(acc) * scale;
    top = std::max(top, scores[l]);
  }
  float total = 0.f;
  for (int64_t l = 0; l < L; ++l) total += (scores[l] = std::exp(scores[l] - top));
  for (int64_t d = 0; d < D; ++d) out[d] = 0.f;
  for (int64_t l = 0; l < L; ++l) {
    const __m256 p = _mm256_set1_ps(scores[l] / total);
    for (int64_t d = 0; d < D; d += 8)
      _mm256_storeu_ps(out + d, _mm256_fmadd_ps(p, widen8(v + l * row + d), _mm256_loadu_ps(out + d)));
  }
}

}  // namespace

// One decode step of attention: q [B, H, 1, D]; k, v [B, Hkv, L, D] with unit stride along D (views of a
// cache are fine); H a multiple of Hkv (grouped-query heads share their key/value head). Returns
// softmax(q k^T * scale) v as [B, H, 1, D] in q's dtype.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               double scale) {
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && k.dim() == 4 && v.sizes() == k.sizes(), "shapes do not match");
  TORCH_CHECK(k.scalar_type() == v.scalar_type() && k.stride(3) == 1 && k.strides() == v.strides(),
              "keys and values must be laid out alike, with unit stride along D");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1), L = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(3) == D && D % 8 == 0 && H % Hkv == 0, "shapes do not match");
  const torch::Tensor qf = q.to(torch::kFloat).contiguous();
  torch::Tensor out = torch::empty({B, H, 1, D}, qf.options());
  const float* qp = qf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = H / Hkv, sb = k.stride(0), sh = k.stride(1), row = k.stride(2);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(L);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, kv = (i % H) / group, offset = b * sb + kv * sh;
      if (k.scalar_type() == torch::kBFloat16) {
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

// x: [M, K] any float dtype; weight: [N, K] float32, bfloat16 or int8; scale: [N] float32 (int8 only, else
// empty); bias: [N] or empty. Returns [M, N] in x's dtype.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& scale,
                     const torch::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "shapes do not match");
  TORCH_CHECK(weight.is_contiguous() && weight.size(1) % kBlock == 0, "weight must be contiguous, K % 16 == 0");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  torch::Tensor xf = x.to(torch::kFloat);
  if (weight.scalar_type() == torch::kBFloat16) {  // match the lane order of widen(const uint16_t*)
    xf = xf.view({M, K / kBlock, 2, 2, 4}).transpose(2, 3);
  }
  xf = xf.contiguous();
  torch::Tensor y = torch::empty({M, N}, xf.options());
  const float* xp = xf.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (weight.scalar_type()) {
    case torch::kFloat: matmul(xp, M, weight.data_ptr<float>(), K, N, yp); break;
    case torch::kBFloat16:
      matmul(xp, M, reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()), K, N, yp);
      break;
    case torch::kChar: matmul(xp, M, weight.data_ptr<int8_t>(), K, N, yp); break;
    default: TORCH_CHECK(false, "unsupported weight dtype ", weight.scalar_type());
  }
  if (scale.defined() && scale.numel() > 0) y.mul_(scale);
  if (bias.defined() && bias.numel() > 0) y.add_(bias);
  return y.to(x.scalar_type());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear, "y = x @ weight.T * scale + bias for few rows of x (AVX2)");
  m.def("decode_attention", &decode_attention, "softmax(q k^T * scale) v for one query position (AVX2)");
}
