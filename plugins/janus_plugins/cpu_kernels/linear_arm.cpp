// The ARM64 side of the linear kernel (linear.h has the drivers, neon.h the tiles, linear.cpp the entry). No
// wider tiles yet: BFDOT/BFMMLA (bfloat16 pairs, Apple M2 and later, Graviton 3) and SDOT would be them.

#include "common.h"
#include "neon.h"

namespace janus_kernels {

bool wide_supported() { return false; }

void stream_weights(const at::Tensor& x, const std::vector<at::Tensor>& weights, bool,
                    const std::vector<float*>& ys) {
  const int64_t M = x.size(0), K = x.size(1);
  const at::ScalarType kind = weights.front().scalar_type();
  const TorchThreads threads;
  if (kind == at::kChar) {
    std::vector<int16_t> q;
    std::vector<float> q_scale;
    const Int16Rows quantized =
        x.scalar_type() == at::kFloat ? quantize_rows<neon::Lanes>(x.data_ptr<float>(), M, K, q, q_scale)
                                      : quantize_rows<neon::Lanes>(x.data_ptr<at::BFloat16>(), M, K, q, q_scale);
    matmul<neon::Tiles>(quantized, M, weights_as<int8_t>(weights, ys), threads);
    return;
  }
  const auto in_order = [](int64_t j) { return j; };
  const std::vector<float> xf = x.scalar_type() == at::kFloat ? float_rows(x.data_ptr<float>(), M, K, in_order)
                                                                 : float_rows(x.data_ptr<at::BFloat16>(), M, K, in_order);
  const FloatRows rows{xf.data(), K};
  switch (kind) {
    case at::kFloat: matmul<neon::Tiles>(rows, M, weights_as<float>(weights, ys), threads); break;
    case at::kBFloat16: matmul<neon::Tiles>(rows, M, weights_as<uint16_t>(weights, ys), threads); break;
    default: TORCH_CHECK(false, "unsupported weight dtype ", kind);
  }
}

}  // namespace janus_kernels
