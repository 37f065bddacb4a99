// The architecture's float32 vector as the kernels written once for every architecture take it (linear.h's x
// quantization and stores, attention.cpp, layer_ops.cpp): x86.h's Avx2Lanes (8 lanes) or neon.h's Lanes (4).
// Each has kWidth, zero, splat, load, widen (float32 or bfloat16 bits to float32), mul, add, fma (a * b + acc),
// sum, max_of, store and store_int16 (rounded to nearest even), and what the layer ops need besides.
#pragma once

#if defined(__aarch64__) || defined(_M_ARM64)
#include "neon.h"
namespace janus_kernels {
using Lanes = neon::Lanes;
}
#else
#include "x86.h"
namespace janus_kernels {
using Lanes = Avx2Lanes;
}
#endif
