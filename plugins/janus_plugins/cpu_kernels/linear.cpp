// The linear kernel's entry, the same on every architecture: y = x @ w.T (* scale) (+ bias) for few rows of x and
// one weight or several that read the same x, the weights streamed by this architecture's tiles (stream_weights:
// linear_x86.cpp or linear_arm.cpp). Conversions happen here and in the tiles, not as torch ops: a decode step
// makes ~100 of these calls, and each torch op around them costs tens of microseconds.
#include "common.h"
#include "lanes.h"
#include "linear.h"

namespace janus_kernels {

namespace {
// Whether tiles with a rolled and an unrolled form for two rows of x (x86: the AVX-512 bfloat16 tile) take the
// rolled one: which is faster differs between CPUs (a Zen 4 and a Zen 5 disagree, linear_x86.cpp), so it is
// measured per machine (packed.py, `two_row_loop`) and set once; read at each call. Both give the same values.
std::atomic<bool> rolled_two_rows{true};
}  // namespace

void set_two_row_loop(bool rolled) { rolled_two_rows.store(rolled, std::memory_order_relaxed); }
bool two_row_loop_rolled() { return rolled_two_rows.load(std::memory_order_relaxed); }

// x: [M, K] float32 or bfloat16; weights[i]: [N_i, K] float32, bfloat16 or int8 (packed), or bfloat16 panels
// [N_i / 8, K / 2, 16] (x86; linear.h), all of one dtype and layout;
// scales[i]: [N_i] float32 (int8 only, else empty); biases[i]: [N_i] or empty. Returns x @ weights[i].T (* scale)
// (+ bias) for each, [M, N_i] in x's dtype, from one pass over all the weights. `wide`: the architecture's widest
// tiles where they apply (needs wide_supported()).
std::vector<at::Tensor> linear_many(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                                    const std::vector<at::Tensor>& scales, const std::vector<at::Tensor>& biases,
                                    bool wide) {
  TORCH_CHECK(!weights.empty() && scales.size() == weights.size() && biases.size() == weights.size(),
              "one scale and one bias (maybe empty) per weight");
  TORCH_CHECK(x.dim() == 2, "x must be [rows, features]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "x must be float32 or bfloat16");
  TORCH_CHECK(!wide || wide_supported(), "this CPU does not run the kernel's widest tiles");
  const int64_t M = x.size(0);
  std::vector<int64_t> offsets{0};  // where each weight's y starts in one buffer
  for (const at::Tensor& weight : weights) {
    TORCH_CHECK(weight.dim() == weights.front().dim(), "the weights of one call share a layout");
    TORCH_CHECK(weight.scalar_type() == weights.front().scalar_type(), "the weights of one call share a dtype");
    if (weight.dim() == 3) {
      TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && weight.size(1) * 2 == x.size(1) &&
                      weight.size(2) == 2 * kPanelRows && output_features(weight) % kPanelTile == 0,
                  "panels must be bfloat16 [N / 8, K / 2, 16] (pack_panels), N % 32 == 0");
    } else {
      TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1), "shapes do not match");
    }
    TORCH_CHECK(weight.is_contiguous() && x.size(1) % kBlock == 0, "weight must be contiguous, K % 16 == 0");
    TORCH_CHECK(weight.scalar_type() != at::kChar || weight.size(1) % kChunk == 0,
                "int8 weights must be packed (pack_int8), with K % 64 == 0");
    offsets.push_back(offsets.back() + M * output_features(weight));
  }
  const std::unique_ptr<float[]> y(new float[offsets.back()]);  // every element is written by the tiles
  std::vector<float*> ys;
  for (size_t i = 0; i < weights.size(); ++i) ys.push_back(y.get() + offsets[i]);
  stream_weights(x.contiguous(), weights, wide, ys);
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t N = output_features(weights[i]);
    const at::Tensor& bias = biases[i];
    const at::Tensor bias_f = bias.defined() && bias.numel() > 0 ? bias.to(at::kFloat).contiguous() : bias;
    const float* scale_p = scales[i].defined() && scales[i].numel() > 0 ? scales[i].data_ptr<float>() : nullptr;
    const float* bias_p = bias_f.defined() && bias_f.numel() > 0 ? bias_f.data_ptr<float>() : nullptr;
    at::Tensor out = at::empty({M, N}, x.options());
    if (x.scalar_type() == at::kFloat) {
      scale_and_store<Lanes>(ys[i], scale_p, bias_p, M, N, out.data_ptr<float>());
    } else {
      scale_and_store<Lanes>(ys[i], scale_p, bias_p, M, N, out.data_ptr<at::BFloat16>());
    }
    outs.push_back(out);
  }
  return outs;
}

}  // namespace janus_kernels
