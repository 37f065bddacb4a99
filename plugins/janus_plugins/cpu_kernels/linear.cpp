// The linear kernel's entry, the same on every architecture: y = x @ w.T (* scale) (+ bias) for few rows of x,
// the weights streamed by this architecture's tiles (stream_weights: linear_x86.cpp or linear_arm.cpp).
// Conversions happen here and in the tiles, not as torch ops: a decode step makes ~170 of these calls, and each
// torch op around them costs tens of microseconds.
#include "common.h"
#include "lanes.h"
#include "linear.h"

namespace janus_kernels {

// x: [M, K] float32 or bfloat16; weight: [N, K] float32, bfloat16 or int8 (packed); scale: [N] float32 (int8 only,
// else empty); bias: [N] or empty. Returns [M, N] in x's dtype. `wide`: the architecture's widest tiles where
// they apply (needs wide_supported()).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& bias,
                  bool wide) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "shapes do not match");
  TORCH_CHECK(weight.is_contiguous() && weight.size(1) % kBlock == 0, "weight must be contiguous, K % 16 == 0");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "x must be float32 or bfloat16");
  TORCH_CHECK(!wide || wide_supported(), "this CPU does not run the kernel's widest tiles");
  TORCH_CHECK(weight.scalar_type() != at::kChar || weight.size(1) % kChunk == 0,
              "int8 weights must be packed (pack_int8), with K % 64 == 0");
  const int64_t M = x.size(0), N = weight.size(0);
  const std::unique_ptr<float[]> y(new float[M * N]);  // every element is written by the tiles
  stream_weights(x.contiguous(), weight, wide, y.get());
  const at::Tensor bias_f = bias.defined() && bias.numel() > 0 ? bias.to(at::kFloat).contiguous() : bias;
  const float* scale_p = scale.defined() && scale.numel() > 0 ? scale.data_ptr<float>() : nullptr;
  const float* bias_p = bias_f.defined() && bias_f.numel() > 0 ? bias_f.data_ptr<float>() : nullptr;
  at::Tensor out = at::empty({M, N}, x.options());
  if (x.scalar_type() == at::kFloat) {
    scale_and_store<Lanes>(y.get(), scale_p, bias_p, M, N, out.data_ptr<float>());
  } else {
    scale_and_store<Lanes>(y.get(), scale_p, bias_p, M, N, out.data_ptr<at::BFloat16>());
  }
  return out;
}

}  // namespace janus_kernels
