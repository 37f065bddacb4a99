// The architecture's float32 vector as the kernels written once for every architecture take it (linear.h's x
// quantization and stores, attention.cpp, layer_ops.cpp): x86.h's Avx2Lanes (8 lanes) or neon.h's Lanes (4).
// Each has kWidth, zero, splat, load, widen (float32 or bfloat16 bits to float32), mul, add, fma (a * b + acc),
// sum, max_of, store and store_int16 (rounded to nearest even), and what the layer ops need besides; and e^x over
// them (exp_lanes: the SiLU of layer_ops.cpp, the softmax of prompt_attention.cpp).
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

namespace janus_kernels {

using Vec = decltype(Lanes::zero());

// e^x for x in [-87, 88] (clamped), relative error ~2e-7: Cephes' polynomial on x - n ln2, times 2^n.
inline Vec exp_lanes(Vec x) {
  x = Lanes::min(Lanes::max(x, Lanes::splat(-87.f)), Lanes::splat(88.f));
  const Vec n = Lanes::round_nearest(Lanes::mul(x, Lanes::splat(1.44269504088896341f)));
  Vec r = Lanes::fnma(n, Lanes::splat(0.693359375f), x);
  r = Lanes::fnma(n, Lanes::splat(-2.12194440e-4f), r);
  Vec p = Lanes::splat(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    p = Lanes::fma(p, r, Lanes::splat(c));
  p = Lanes::fma(Lanes::mul(p, r), r, Lanes::add(r, Lanes::splat(1.f)));
  return Lanes::mul(p, Lanes::pow2(n));
}

}  // namespace janus_kernels
