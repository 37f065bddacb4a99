// The Python module: one binding per kernel (the families' sources hold the code), the same on every
// architecture.
#include <torch/extension.h>

#include "common.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear_many", &janus_kernels::linear_many, "x @ weight.T * scale + bias for few rows of x and each weight, in one pass (`wide`: the widest tiles)");
  m.def("set_two_row_loop", &janus_kernels::set_two_row_loop, "whether tiles with two forms for two rows of x (x86: AVX-512 bfloat16) take the rolled one (the same values; measured per machine)");
  m.def("two_row_loop_rolled", &janus_kernels::two_row_loop_rolled, "the form set_two_row_loop set (rolled: the default)");
  m.def("wide_supported", &janus_kernels::wide_supported, "whether this CPU runs the widest tiles (x86: AVX-512 BF16/VNNI)");
  m.def("decode_attention", &janus_kernels::decode_attention, "softmax(q k^T * scale) v for one query position");
  m.def("prompt_attention", &janus_kernels::prompt_attention, "softmax(q k^T * scale) v for many query positions (AVX512-BF16 only)");
  m.def("rms_norm", &janus_kernels::rms_norm, "transformers' LlamaRMSNorm of every row");
  m.def("add_rms_norm", &janus_kernels::add_rms_norm, "(x + delta, rms_norm(x + delta))");
  m.def("rotary_into_cache", &janus_kernels::rotary_into_cache, "rotary embedding of q in place, of k into the key cache");
  m.def("silu_mul", &janus_kernels::silu_mul, "silu(gate) * up");
  pybind11::class_<janus_kernels::DecoderStack>(m, "DecoderStack", "a decode step's decoder layers in one call")
      .def(pybind11::init<const std::vector<std::vector<at::Tensor>>&, const std::vector<std::vector<at::Tensor>>&,
                          const std::vector<std::vector<at::Tensor>>&, const std::vector<double>&, int64_t, int64_t>())
      // without the GIL: a step takes tens of milliseconds, in which a server's event loop keeps answering
      .def("run", &janus_kernels::DecoderStack::run, pybind11::call_guard<pybind11::gil_scoped_release>(),
           "x at position start through every layer, writing the cache");
}
