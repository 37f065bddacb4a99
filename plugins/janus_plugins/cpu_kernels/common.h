// What the kernel sources share: the includes and the functions between them. Each family is a source of its
// own: linear.cpp (the weight-streaming matmul's entry) with one source of tiles per architecture
// (linear_x86.cpp, linear_arm.cpp) and its torch-free drivers (linear.h); attention.cpp (one query position over
// a KV cache) and layer_ops.cpp (RMSNorm, rotary, SiLU gate), written once over the architecture's float32 lanes
// (lanes.h: x86.h's AVX2 or neon.h's); prompt_attention.cpp (many query positions, x86 with AVX512-BF16 only);
// decoder_step.cpp (a decode step's layers as one call of the others). bindings.cpp is the Python module.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

#include "linear.h"

namespace janus_kernels {

// Runs [0, n) tiles on torch's threads (the `parallel` of linear.h's matmul), each thread taking the next run
// of tiles as it finishes one, about 8 runs per thread. With the tiles split in halves up front, a thread woken
// late or on a slower core (a VM's busy neighbour, an efficiency core) kept the others waiting for its whole
// half; taking runs, a one-image int8 step on a Zen 3 VM ran 1.06x as fast (bench/RESULTS.md).
struct TorchThreads {
  template <typename Body>
  void operator()(int64_t n, const Body& body) const {
    const int64_t threads = at::get_num_threads();
    if (threads == 1 || n < 2) return body(0, n);
    const int64_t run = std::max<int64_t>(1, n / (8 * threads));
    std::atomic<int64_t> next{0};
    at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
      for (int64_t begin = next.fetch_add(run); begin < n; begin = next.fetch_add(run))
        body(begin, std::min(n, begin + run));
    });
  }
};

// linear.cpp
std::vector<at::Tensor> linear_many(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                                    const std::vector<at::Tensor>& scales, const std::vector<at::Tensor>& biases,
                                    bool wide);

// The loop form of the tiles that have two for two rows of x (linear.cpp): set from a measurement per machine.
void set_two_row_loop(bool rolled);
bool two_row_loop_rolled();

// What each architecture's linear source gives linear.cpp: whether this CPU runs its widest tiles (x86: the
// AVX-512 BF16/VNNI ones; ARM64: none yet), and ys[i] [M, N_i] float32 = x @ weights[i].T for x's contiguous rows
// (weights of one dtype and width).
bool wide_supported();
void stream_weights(const at::Tensor& x, const std::vector<at::Tensor>& weights, bool wide,
                    const std::vector<float*>& ys);

// A weight's output features: [N, K] rows, or bfloat16 panels [N / kPanelRows, K / 2, 2 * kPanelRows] (linear.h).
inline int64_t output_features(const at::Tensor& weight) {
  return weight.dim() == 3 ? weight.size(0) * kPanelRows : weight.size(0);
}

// The weights of a call as linear.h's drivers take them, their elements read as W.
template <typename W>
std::vector<Weight<W>> weights_as(const std::vector<at::Tensor>& weights, const std::vector<float*>& ys) {
  std::vector<Weight<W>> out;
  for (size_t i = 0; i < weights.size(); ++i)
    out.push_back({static_cast<const W*>(weights[i].data_ptr()), output_features(weights[i]), ys[i]});
  return out;
}

// attention.cpp
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

// prompt_attention.cpp (x86 with AVX512-BF16 only: wide_supported())
at::Tensor prompt_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            bool causal);

// layer_ops.cpp
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                                const at::Tensor& weight, double eps);
void rotary_into_cache(at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                       const at::Tensor& sin, at::Tensor& keys, at::Tensor& values, int64_t start);
at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up);

// decoder_step.cpp: a decode step's decoder layers in one call (weights held from construction).
class DecoderStack {
 public:
  // Per layer: weights [input norm, post-attention norm, q, k, v, o, gate, up, down], the projections' 7 scales
  // and biases (empty tensors where none), and eps of the two norms (2 per layer, in order).
  DecoderStack(const std::vector<std::vector<at::Tensor>>& weights, const std::vector<std::vector<at::Tensor>>& scales,
               const std::vector<std::vector<at::Tensor>>& biases, const std::vector<double>& eps, int64_t heads,
               int64_t kv_heads);
  at::Tensor run(at::Tensor x, at::Tensor& keys, at::Tensor& values, const at::Tensor& cos, const at::Tensor& sin,
                 int64_t start, double scale, bool wide) const;

 private:
  struct Projections {  // linear layers that read the same rows: one linear_many call
    std::vector<at::Tensor> weights, scales, biases;
    std::vector<at::Tensor> operator()(const at::Tensor& x, bool wide) const;
  };
  struct Layer {
    at::Tensor input_norm, post_norm;
    double input_eps, post_eps;
    Projections qkv, o, gate_up, down;
  };
  std::vector<Layer> layers_;
  int64_t heads_, kv_heads_;
};

}  // namespace janus_kernels
