// A decode step's decoder layers in one call, for the case where every part of every layer is one of the
// kernels of this module anyway (janus_plugins/deepseek_llm/native_step.py decides): the same calls, in the same
// order, on the same arguments as the Python layers make them, so the hidden states are those of the Python
// path bit for bit. What it saves is the interpreter and torch's dispatch around those calls, ~100 us per layer
// (~2.3 ms of a 1B step on a Zen 4, whose weights stream in 40-75 ms).
#include "common.h"

namespace janus_kernels {

DecoderStack::DecoderStack(const std::vector<std::vector<at::Tensor>>& weights,
                           const std::vector<std::vector<at::Tensor>>& scales,
                           const std::vector<std::vector<at::Tensor>>& biases, const std::vector<double>& eps,
                           int64_t heads, int64_t kv_heads)
    : heads_(heads), kv_heads_(kv_heads) {
  TORCH_CHECK(scales.size() == weights.size() && biases.size() == weights.size() && eps.size() == 2 * weights.size(),
              "one list of scales and of biases and two eps per layer");
  TORCH_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, "heads must be a multiple of kv_heads");
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& w = weights[i];
    const auto& s = scales[i];
    const auto& b = biases[i];
    TORCH_CHECK(w.size() == 9 && s.size() == 7 && b.size() == 7,
                "a layer is [input norm, post-attention norm, q, k, v, o, gate, up, down] with 7 scales and biases");
    const auto projections = [&](size_t first, size_t count) {
      return Projections{{w.begin() + 2 + first, w.begin() + 2 + first + count},
                         {s.begin() + first, s.begin() + first + count},
                         {b.begin() + first, b.begin() + first + count}};
    };
    layers_.push_back({w[0], w[1], eps[2 * i], eps[2 * i + 1], projections(0, 3), projections(3, 1),
                       projections(4, 2), projections(6, 1)});
  }
}

std::vector<at::Tensor> DecoderStack::Projections::operator()(const at::Tensor& x, bool wide) const {
  return linear_many(x.reshape({-1, x.size(-1)}), weights, scales, biases, wide);
}

// x [B, 1, hidden] at position `start` through every layer; keys, values [layers, B, kv_heads, L, D] (the cache,
// written at `start`); cos, sin [1, 1, D]; `wide`: the linear kernel's widest tiles (as the layers' routes say).
at::Tensor DecoderStack::run(at::Tensor x, at::Tensor& keys, at::Tensor& values, const at::Tensor& cos,
                             const at::Tensor& sin, int64_t start, double scale, bool wide) const {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == 1, "x must be [rows, 1, hidden]");
  TORCH_CHECK(keys.dim() == 5 && keys.size(0) == static_cast<int64_t>(layers_.size()), "one cache per layer");
  const int64_t B = x.size(0), hidden = x.size(2), D = hidden / heads_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    const at::Tensor normed = rms_norm(x.contiguous(), layer.input_norm, layer.input_eps);
    const std::vector<at::Tensor> qkv = layer.qkv(normed, wide);
    at::Tensor q = qkv[0].view({B, 1, heads_, D});
    at::Tensor layer_keys = keys[i], layer_values = values[i];
    rotary_into_cache(q, qkv[1].view({B, 1, kv_heads_, D}), qkv[2].view({B, 1, kv_heads_, D}), cos, sin, layer_keys,
                      layer_values, start);
    const at::Tensor attended = decode_attention(q.transpose(1, 2), layer_keys.narrow(2, 0, start + 1),
                                                 layer_values.narrow(2, 0, start + 1), scale);
    const at::Tensor o = layer.o(attended.transpose(1, 2).reshape({B, 1, heads_ * D}), wide)[0];
    const auto [total, post_normed] = add_rms_norm(x.contiguous(), o.view({B, 1, hidden}), layer.post_norm, layer.post_eps);
    const std::vector<at::Tensor> gate_up = layer.gate_up(post_normed, wide);
    const at::Tensor product = silu_mul(gate_up[0], gate_up[1]);
    x = total + layer.down(product, wide)[0].view({B, 1, hidden});
  }
  return x;
}

}  // namespace janus_kernels
