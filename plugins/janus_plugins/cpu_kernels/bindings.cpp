// The Python module: one binding per kernel (the families' sources hold the code).
#include <torch/extension.h>

#include "common.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &janus_kernels::linear, "y = x @ weight.T * scale + bias for few rows of x (AVX2, or AVX-512 if asked)");
  m.def("avx512_supported", &janus_kernels::avx512_supported, "whether this CPU runs the AVX-512 (BF16, VNNI) tiles");
  m.def("decode_attention", &janus_kernels::decode_attention, "softmax(q k^T * scale) v for one query position (AVX2)");
  m.def("rms_norm", &janus_kernels::rms_norm, "transformers' LlamaRMSNorm of every row (AVX2)");
  m.def("add_rms_norm", &janus_kernels::add_rms_norm, "(x + delta, rms_norm(x + delta)) (AVX2)");
  m.def("rotary_into_cache", &janus_kernels::rotary_into_cache, "rotary embedding of q in place, of k into the key cache (AVX2)");
  m.def("silu_mul", &janus_kernels::silu_mul, "silu(gate) * up (AVX2)");
}
