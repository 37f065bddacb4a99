// The ARM64 side of the linear kernel (linear.h has the drivers, neon.h the tiles, linear.cpp the entry). No
// wider tiles yet: BFDOT/BFMMLA (bfloat16 pairs, Apple M2 and later, Graviton 3) and SDOT would be them.

#include "common.h"
#include "neon.h"

namespace janus_kernels {

bool wide_supported() { return false; }

void stream_weights(const at::Tensor& x, const at::Tensor& weight, bool, float* y) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const TorchThreads threads;
  if (weight.scalar_type() == at::kChar) {
    std::vector<int16_t> q;
    std::vector<float> q_scale;
    const Int16Rows quantized =
        x.scalar_type() == at::kFloat ? quantize_rows<neon::Lanes>(x.data_ptr<float>(), M, K, q, q_scale)
                                      : quantize_rows<neon::Lanes>(x.data_ptr<at::BFloat16>(), M, K, q, q_scale);
    matmul<neon::Tiles>(quantized, M, weight.data_ptr<int8_t>(), N, y, threads);
    return;
  }
  const auto in_order = [](int64_t j) { return j; };
  const std::vector<float> xf = x.scalar_type() == at::kFloat ? float_rows(x.data_ptr<float>(), M, K, in_order)
                                                                 : float_rows(x.data_ptr<at::BFloat16>(), M, K, in_order);
  const FloatRows rows{xf.data(), K};
  switch (weight.scalar_type()) {
    case at::kFloat: matmul<neon::Tiles>(rows, M, weight.data_ptr<float>(), N, y, threads); break;
    case at::kBFloat16:
      matmul<neon::Tiles>(rows, M, reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()), N, y, threads);
      break;
    default: TORCH_CHECK(false, "unsupported weight dtype ", weight.scalar_type());
  }
}

}  // namespace janus_kernels
