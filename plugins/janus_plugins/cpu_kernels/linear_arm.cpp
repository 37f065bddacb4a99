// The ARM64 side of the linear kernel (linear.h has the drivers, neon.h the tiles, linear.cpp the entry). No
// wider tiles yet: BFDOT/BFMMLA (bfloat16 pairs, Apple M2 and later, Graviton 3) and SDOT would be them.

#include "common.h"
#include "neon.h"

namespace janus_kernels {
namespace {

inline float32x4_t load4(const float* p) { return vld1q_f32(p); }

// v rounded to bfloat16 (nearest even, as torch rounds) and narrowed to its 16 high bits.
inline uint16x4_t to_bf16(float32x4_t v) {
  const uint32x4_t bits = vreinterpretq_u32_f32(v);
  const uint32x4_t lsb = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
  return vshrn_n_u32(vaddq_u32(bits, vaddq_u32(lsb, vdupq_n_u32(0x7FFF))), 16);
}
inline void store4(float* p, float32x4_t v) { vst1q_f32(p, v); }
inline void store4(c10::BFloat16* p, float32x4_t v) { vst1_u16(reinterpret_cast<uint16_t*>(p), to_bf16(v)); }

// out[m, n] = y[m, n] * scale[n] + bias[n] in out's dtype (scale, bias: float32, maybe null), 4 at a time.
template <typename T>
void store_rows_of(const float* y, const float* scale, const float* bias, int64_t M, int64_t N, T* out) {
  for (int64_t m = 0; m < M; ++m) {
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) {
      float32x4_t v = load4(y + m * N + n);
      if (scale) v = vmulq_f32(v, load4(scale + n));
      if (bias) v = vaddq_f32(v, load4(bias + n));
      store4(out + m * N + n, v);
    }
    for (; n < N; ++n) {
      float v = y[m * N + n];
      if (scale) v *= scale[n];
      if (bias) v += bias[n];
      out[m * N + n] = static_cast<T>(v);
    }
  }
}

}  // namespace

bool wide_supported() { return false; }

void stream_weights(const at::Tensor& x, const at::Tensor& weight, bool, float* y) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const auto in_order = [](int64_t j) { return j; };
  const std::vector<float> xf = x.scalar_type() == at::kFloat ? float_rows(x.data_ptr<float>(), M, K, in_order)
                                                                 : float_rows(x.data_ptr<at::BFloat16>(), M, K, in_order);
  const FloatRows rows{xf.data(), K};
  const TorchThreads threads;
  switch (weight.scalar_type()) {
    case at::kFloat: matmul<neon::Tiles>(rows, M, weight.data_ptr<float>(), N, y, threads); break;
    case at::kBFloat16:
      matmul<neon::Tiles>(rows, M, reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()), N, y, threads);
      break;
    case at::kChar: {
      std::vector<int16_t> q;
      std::vector<float> q_scale;
      matmul<neon::Tiles>(quantize_rows(xf.data(), M, K, q, q_scale), M, weight.data_ptr<int8_t>(), N, y, threads);
      break;
    }
    default: TORCH_CHECK(false, "unsupported weight dtype ", weight.scalar_type());
  }
}

void store_rows(const float* y, const float* scale, const float* bias, int64_t M, int64_t N, float* out) {
  store_rows_of(y, scale, bias, M, N, out);
}
void store_rows(const float* y, const float* scale, const float* bias, int64_t M, int64_t N, c10::BFloat16* out) {
  store_rows_of(y, scale, bias, M, N, out);
}

}  // namespace janus_kernels
