// Weight-streaming matmul for few rows (decode steps) on AVX2 CPUs: y = x @ w.T (* scale) (+ bias).
//
// Each output row is a dot product of x with one weight row; a tile walks R weight rows once, converting each
// block of 16 weights to float32 in registers and feeding it to up to 4 rows of x, so the weights are read
// from memory once per call whatever the number of rows (the rows of x stay in cache).
// Weight formats: float32, bfloat16 (widened by interleaving with zeros, which permutes each block of 16;
// x is permuted the same way once per call) and int8 with one float32 scale per output feature.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdint>

namespace {

constexpr int64_t kBlock = 16;  // weights converted per step; the in-features must be a multiple
constexpr int kTileRows = 4;    // weight rows walked together
constexpr int kMaxGroup = 4;    // rows of x served by one pass over a weight tile

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
    __m256 lo[R], hi[R];
    for (int r = 0; r < R; ++r) widen(w + r * K + k, lo[r], hi[r]);
    for (int m = 0; m < G; ++m) {
      const __m256 xl = _mm256_loadu_ps(x + m * K + k);
      const __m256 xh = _mm256_loadu_ps(x + m * K + k + 8);
      for (int r = 0; r < R; ++r) {
        acc[m][r] = _mm256_fmadd_ps(lo[r], xl, acc[m][r]);
        acc[m][r] = _mm256_fmadd_ps(hi[r], xh, acc[m][r]);
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
    case 3: tile<W, 3, R>(x + m * K, w, K, y + m * N, N); break;
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

}  // namespace

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
}
