// The ARM64 side of the linear kernel (linear.h has the drivers, neon.h the tiles, linear.cpp the entry). The
// wider tiles are BFDOT's for bfloat16 weights and rows (neon.h); int8 weights go through SDOT wherever the CPU
// has it, in every build, since its outputs are the NEON tile's (I8MM and BFMMLA would be further tiles).

#include "common.h"
#include "neon.h"

#if (defined(JANUS_NEON_BF16) || defined(JANUS_NEON_DOTPROD)) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
#endif

namespace janus_kernels {

namespace {

// Whether this CPU runs the SDOT tiles: Linux reports DOTPROD in the auxiliary vector; where the compiler's flags
// enable DOTPROD (as Apple's clang should for arm64 Macs), every CPU the build runs on has it.
bool dot_supported() {
#if defined(JANUS_NEON_DOTPROD) && defined(__ARM_FEATURE_DOTPROD)
  return true;
#elif defined(JANUS_NEON_DOTPROD) && defined(__linux__)
  static const bool reported = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return reported;
#else
  return false;
#endif
}

}  // namespace

// Whether this CPU runs the BFDOT tiles: Linux reports BF16 in the auxiliary vector; elsewhere, or where the
// compiler built without them, it does not.
bool wide_supported() {
#if defined(JANUS_NEON_BF16) && defined(__linux__)
  return (getauxval(AT_HWCAP2) & HWCAP2_BF16) != 0;
#else
  return false;
#endif
}

// `wide`: the BFDOT tiles for bfloat16 x against bfloat16 weights (the NEON ones for the rest).
void stream_weights(const at::Tensor& x, const std::vector<at::Tensor>& weights, bool wide,
                    const std::vector<float*>& ys) {
  const int64_t M = x.size(0), K = x.size(1);
  const at::ScalarType kind = weights.front().scalar_type();
  TORCH_CHECK(weights.front().dim() == 2, "bfloat16 panels are an x86 layout: pass [N, K] rows");
  const TorchThreads threads;
  if (wide && kind == at::kBFloat16 && x.scalar_type() == at::kBFloat16) {
#ifdef JANUS_NEON_BF16
    const Bf16Rows rows{reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()), K};
    matmul<neon::Bf16DotTiles>(rows, M, weights_as<uint16_t>(weights, ys), threads);
#endif
    return;
  }
  if (kind == at::kChar) {
    std::vector<int16_t> q;
    std::vector<float> q_scale;
    const Int16Rows quantized =
        x.scalar_type() == at::kFloat ? quantize_rows<neon::Lanes>(x.data_ptr<float>(), M, K, q, q_scale)
                                      : quantize_rows<neon::Lanes>(x.data_ptr<at::BFloat16>(), M, K, q, q_scale);
#ifdef JANUS_NEON_DOTPROD
    if (dot_supported()) {
      std::vector<int8_t> hi, lo;
      matmul<neon::Int8DotTiles>(neon::split_bytes(quantized, M, hi, lo), M, weights_as<int8_t>(weights, ys), threads);
      return;
    }
#endif
    matmul<neon::Tiles>(quantized, M, weights_as<int8_t>(weights, ys), threads);
    return;
  }
  const auto in_order = [](int64_t j) { return j; };
  const std::vector<float> xf = x.scalar_type() == at::kFloat
                                    ? float_rows(x.data_ptr<float>(), M, K, in_order, K)
                                    : float_rows(x.data_ptr<at::BFloat16>(), M, K, in_order, K);
  const FloatRows rows{xf.data(), K};
  switch (kind) {
    case at::kFloat: matmul<neon::Tiles>(rows, M, weights_as<float>(weights, ys), threads); break;
    case at::kBFloat16: matmul<neon::Tiles>(rows, M, weights_as<uint16_t>(weights, ys), threads); break;
    default: TORCH_CHECK(false, "unsupported weight dtype ", kind);
  }
}

}  // namespace janus_kernels
