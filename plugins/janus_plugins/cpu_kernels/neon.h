// The ARM64 tiles of the linear kernel (NEON, which every ARM64 CPU has: Apple Silicon, Graviton, Ampere), for
// linear.h's drivers; linear_arm.cpp runs them in the module, tests/plugins/test_neon_tiles.py alone under
// emulation. 32 registers of 128 bits: a pass feeds each weight vector to 2 rows of x, with two accumulators per
// (row, weight row) so that 1-2 rows are not bound by one FMA chain's latency.
// - float32 and bfloat16 weights in float32 FMAs: bfloat16 widened by a shift into the high half of each lane,
//   in memory order (x needs no permutation);
// - int8 weights against x's int16 values: widened to int16 and multiplied into exact int32 sums per scale block
//   (`smlal`: 4 multiply-adds per instruction), scaled and added up in float32; where the CPU has DOTPROD, `sdot`
//   (16 byte products per instruction) gives the same sums, so the same outputs.
// Each tile asks for the next tile's weights (into L2) while it computes, as the x86 tiles do.
#pragma once

#include <arm_neon.h>

#include "linear.h"

namespace janus_kernels {
namespace neon {

// Loads 16 weights as four float32 vectors, in memory order.
inline void widen(const float* w, float32x4_t v[4]) {
  for (int i = 0; i < 4; ++i) v[i] = vld1q_f32(w + 4 * i);
}
inline void widen(const uint16_t* w, float32x4_t v[4]) {
  const uint16x8_t a = vld1q_u16(w), b = vld1q_u16(w + 8);
  v[0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(a), 16));
  v[1] = vreinterpretq_f32_u32(vshll_high_n_u16(a, 16));
  v[2] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(b), 16));
  v[3] = vreinterpretq_f32_u32(vshll_high_n_u16(b, 16));
}

// y[m * ldy + r] = dot(x[m], w[r]) for G rows of x and R rows of w (rows K apart), in float32.
template <int G, int R, typename W>
inline void tile(const FloatRows& x, const W* w, float* y, int64_t ldy) {
  const int64_t K = x.K;
  float32x4_t even[G][R], odd[G][R];
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) even[m][r] = odd[m][r] = vdupq_n_f32(0.f);
  for (int64_t k = 0; k < K; k += kBlock) {
    for (int r = 0; r < R; ++r) {
      float32x4_t v[4];
      widen(w + r * K + k, v);
      __builtin_prefetch(w + (R + r) * K + k, 0, 2);
      for (int m = 0; m < G; ++m) {
        const float* xm = x.data + m * K + k;
        even[m][r] = vfmaq_f32(even[m][r], v[0], vld1q_f32(xm));
        odd[m][r] = vfmaq_f32(odd[m][r], v[1], vld1q_f32(xm + 4));
        even[m][r] = vfmaq_f32(even[m][r], v[2], vld1q_f32(xm + 8));
        odd[m][r] = vfmaq_f32(odd[m][r], v[3], vld1q_f32(xm + 12));
      }
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = vaddvq_f32(vaddq_f32(even[m][r], odd[m][r]));
}

// A scale block's exact int32 sum from its lanes (added with wrap-around: exact wherever the sum itself fits, and
// below 512 * 127 * 32767 < 2^31 it does), rounded to float32 once and scaled: what every int8 tile adds to a
// row's total, so that the tiles agree bit for bit.
inline float block_value(int32x4_t lanes, float scale) { return static_cast<float>(vaddvq_s32(lanes)) * scale; }

// The same for int16 x and (packed) int8 w: exact int32 sums per scale block, scaled and added up in float32.
template <int G, int R>
inline void tile(const Int16Rows& x, const int8_t* w, float* y, int64_t ldy) {
  const int64_t K = x.K;
  float total[G][R] = {};
  for (int64_t b = 0; b < x.blocks; ++b) {
    int32x4_t even[G][R], odd[G][R];
    for (int m = 0; m < G; ++m)
      for (int r = 0; r < R; ++r) even[m][r] = odd[m][r] = vdupq_n_s32(0);
    for (int64_t k = b * kScaleBlock; k < std::min(K, (b + 1) * kScaleBlock); k += kBlock) {
      for (int r = 0; r < R; ++r) {
        const int8x16_t wv = vld1q_s8(packed_at<R>(w, r, k));
        __builtin_prefetch(packed_at<R>(w + R * K, r, k), 0, 2);
        const int16x8_t lo = vmovl_s8(vget_low_s8(wv)), hi = vmovl_high_s8(wv);
        for (int m = 0; m < G; ++m) {
          const int16x8_t xl = vld1q_s16(x.data + m * K + k), xh = vld1q_s16(x.data + m * K + k + 8);
          even[m][r] = vmlal_s16(even[m][r], vget_low_s16(lo), vget_low_s16(xl));
          odd[m][r] = vmlal_high_s16(odd[m][r], lo, xl);
          even[m][r] = vmlal_s16(even[m][r], vget_low_s16(hi), vget_low_s16(xh));
          odd[m][r] = vmlal_high_s16(odd[m][r], hi, xh);
        }
      }
    }
    for (int m = 0; m < G; ++m) {
      const float scale = x.scale[m * x.blocks + b];
      for (int r = 0; r < R; ++r) total[m][r] += block_value(vaddq_s32(even[m][r], odd[m][r]), scale);
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = total[m][r];
}

// ---- BF16 (BFDOT: Armv8.6, optional from Armv8.2; Graviton 3 and later, Neoverse V1/N2 and later): bfloat16
// weights against bfloat16 rows with no widening, `bfdot` summing 4 lanes of 2 bfloat16 products each into
// float32 (8 weights per instruction where the widening tile takes a shift and two FMAs). Compiled with GCC's
// per-function target (its arm_neon.h declares the BF16 intrinsics for armv8.2-a+bf16) or where the flags
// enable BF16; Apple's clang builds without it. Called only where the CPU reports BF16 (`wide_supported`) and
// chosen by measurement against the other tiles and torch.
#if defined(__ARM_FEATURE_BF16) || (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10)
#define JANUS_NEON_BF16 1
#if defined(__ARM_FEATURE_BF16)
#define JANUS_BF16_TARGET
#else
#define JANUS_BF16_TARGET __attribute__((target("arch=armv8.2-a+bf16")))
#endif

// y[m * ldy + r] = dot(x[m], w[r]) for G rows of x and R rows of w (rows K apart), 8 bfloat16 pairs at a time.
template <int G, int R>
JANUS_BF16_TARGET void tile_dot(const Bf16Rows& x, const uint16_t* w, float* y, int64_t ldy) {
  const int64_t K = x.K;
  float32x4_t acc[G][R];
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = vdupq_n_f32(0.f);
  for (int64_t k = 0; k < K; k += 8) {
    bfloat16x8_t xv[G];
    for (int m = 0; m < G; ++m) xv[m] = vreinterpretq_bf16_u16(vld1q_u16(x.data + m * K + k));
    for (int r = 0; r < R; ++r) {
      const bfloat16x8_t wv = vreinterpretq_bf16_u16(vld1q_u16(w + r * K + k));
      __builtin_prefetch(w + (R + r) * K + k, 0, 2);
      for (int m = 0; m < G; ++m) acc[m][r] = vbfdotq_f32(acc[m][r], xv[m], wv);
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = vaddvq_f32(acc[m][r]);
}
#endif

// ---- DOTPROD (SDOT: Armv8.4, optional from Armv8.2; Apple M1 and later, Graviton 2 and later, Neoverse N1 and
// later): int8 weights against x's int16 values split into bytes, `sdot` summing 4 lanes of 4 signed byte products
// each (16 weights per instruction, no widening, where the NEON tile widens them and takes 4 multiply-adds per
// instruction). Compiled with GCC's per-function target or where the flags enable DOTPROD (Apple's clang for
// arm64 Macs should: not verified on a Mac); called only where the CPU reports it (`dot_supported` in
// linear_arm.cpp).
#if defined(__ARM_FEATURE_DOTPROD) || (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8)
#define JANUS_NEON_DOTPROD 1
#if defined(__ARM_FEATURE_DOTPROD)
#define JANUS_DOTPROD_TARGET
#else
#define JANUS_DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

// x's int16 values q as two signed bytes each, for `sdot`, which multiplies signed bytes only: hi = q >> 8 and
// lo = (q & 255) - 128, so that q = 256 * hi + lo + 128.
struct SignedBytePairRows {
  const int8_t* hi;
  const int8_t* lo;
  const float* scale;
  int64_t K, blocks;
  SignedBytePairRows from(int64_t m) const { return {hi + m * K, lo + m * K, scale + m * blocks, K, blocks}; }
};

inline SignedBytePairRows split_bytes(const Int16Rows& q, int64_t M, std::vector<int8_t>& hi,
                                      std::vector<int8_t>& lo) {
  hi.resize(M * q.K);
  lo.resize(M * q.K);
  const int8x8_t flip = vdup_n_s8(-128);  // the low byte's bits xor 0x80, read as signed: the byte - 128
  for (int64_t i = 0; i < M * q.K; i += 8) {  // K % 64 == 0 (int8 weights are packed)
    const int16x8_t v = vld1q_s16(q.data + i);
    vst1_s8(hi.data() + i, vshrn_n_s16(v, 8));
    vst1_s8(lo.data() + i, veor_s8(vmovn_s16(v), flip));
  }
  return {hi.data(), lo.data(), q.scale, q.K, q.blocks};
}

// The int8 tile through `sdot`: per scale block, sum(q * w) = 256 * sum(hi * w) + sum(lo * w) + 128 * sum(w), the
// weights' sum made by one more `sdot` per weight vector (against ones), shared by the G rows of x; the block's
// exact int32 sum then as the NEON tile adds it (block_value), so both give the same outputs.
template <int G, int R>
JANUS_DOTPROD_TARGET void tile_dot(const SignedBytePairRows& x, const int8_t* w, float* y, int64_t ldy) {
  const int64_t K = x.K;
  const int8x16_t ones = vdupq_n_s8(1);
  float total[G][R] = {};
  for (int64_t b = 0; b < x.blocks; ++b) {
    int32x4_t hi[G][R], lo[G][R], w_sum[R];
    for (int r = 0; r < R; ++r) {
      w_sum[r] = vdupq_n_s32(0);
      for (int m = 0; m < G; ++m) hi[m][r] = lo[m][r] = vdupq_n_s32(0);
    }
    for (int64_t k = b * kScaleBlock; k < std::min(K, (b + 1) * kScaleBlock); k += kBlock) {
      int8x16_t xh[G], xl[G];
      for (int m = 0; m < G; ++m) {
        xh[m] = vld1q_s8(x.hi + m * K + k);
        xl[m] = vld1q_s8(x.lo + m * K + k);
      }
      for (int r = 0; r < R; ++r) {
        const int8x16_t wv = vld1q_s8(packed_at<R>(w, r, k));
        __builtin_prefetch(packed_at<R>(w + R * K, r, k), 0, 2);
        w_sum[r] = vdotq_s32(w_sum[r], wv, ones);
        for (int m = 0; m < G; ++m) {
          hi[m][r] = vdotq_s32(hi[m][r], xh[m], wv);
          lo[m][r] = vdotq_s32(lo[m][r], xl[m], wv);
        }
      }
    }
    for (int m = 0; m < G; ++m) {
      const float scale = x.scale[m * x.blocks + b];
      for (int r = 0; r < R; ++r) {
        const int32x4_t low = vaddq_s32(lo[m][r], vshlq_n_s32(w_sum[r], 7));
        total[m][r] += block_value(vaddq_s32(vshlq_n_s32(hi[m][r], 8), low), scale);
      }
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = total[m][r];
}
#endif

// The dot-product tiles as policies for linear.h's drivers: BFDOT, 4 x 4 accumulators, 4 rows of x and a weight
// vector (21 of 32 registers); SDOT, 2 x 4 x 2 accumulators, 4 weight sums, 2 x 2 rows of x bytes, a weight vector
// and the ones (26).
#if defined(JANUS_NEON_BF16) || defined(JANUS_NEON_DOTPROD)
template <int Group>
struct DotTiles {
  static constexpr int kGroup = Group;
  static constexpr int kRows = kTileRows;
  template <int G, int R, typename X, typename W>
  static void run(const X& x, const W* w, float* y, int64_t ldy) { tile_dot<G, R>(x, w, y, ldy); }
};
#endif
#ifdef JANUS_NEON_BF16
using Bf16DotTiles = DotTiles<4>;
#endif
#ifdef JANUS_NEON_DOTPROD
using Int8DotTiles = DotTiles<2>;
#endif

// Four float32 lanes as the portable kernels take them (lanes.h). T: float32, or any 16-bit type holding
// bfloat16 bits (c10::BFloat16 in the module); bfloat16 is stored rounded to nearest even, as torch rounds.
struct Lanes {
  static constexpr int64_t kWidth = 4;
  static float32x4_t zero() { return vdupq_n_f32(0.f); }
  static float32x4_t splat(float v) { return vdupq_n_f32(v); }
  static float32x4_t widen(const float* p) { return vld1q_f32(p); }
  static float32x4_t widen(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  template <typename T>
  static float32x4_t load(const T* p) {
    if constexpr (sizeof(T) == 4) {
      return vld1q_f32(reinterpret_cast<const float*>(p));
    } else {
      return widen(reinterpret_cast<const uint16_t*>(p));
    }
  }
  // v rounded to T's precision, still as float32.
  template <typename T>
  static float32x4_t round_to(const T*, float32x4_t v) {
    if constexpr (sizeof(T) == 4) {
      return v;
    } else {
      const uint32x4_t bits = vreinterpretq_u32_f32(v);
      const uint32x4_t lsb = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
      const uint32x4_t rounded = vaddq_u32(bits, vaddq_u32(lsb, vdupq_n_u32(0x7FFF)));
      return vreinterpretq_f32_u32(vandq_u32(rounded, vdupq_n_u32(0xFFFF0000u)));
    }
  }
  static float32x4_t add(float32x4_t a, float32x4_t b) { return vaddq_f32(a, b); }
  static float32x4_t sub(float32x4_t a, float32x4_t b) { return vsubq_f32(a, b); }
  static float32x4_t mul(float32x4_t a, float32x4_t b) { return vmulq_f32(a, b); }
  static float32x4_t div(float32x4_t a, float32x4_t b) { return vdivq_f32(a, b); }
  static float32x4_t min(float32x4_t a, float32x4_t b) { return vminq_f32(a, b); }
  static float32x4_t max(float32x4_t a, float32x4_t b) { return vmaxq_f32(a, b); }
  static float32x4_t fma(float32x4_t a, float32x4_t b, float32x4_t acc) { return vfmaq_f32(acc, a, b); }
  static float32x4_t fnma(float32x4_t a, float32x4_t b, float32x4_t acc) { return vfmsq_f32(acc, a, b); }
  static float32x4_t round_nearest(float32x4_t v) { return vrndnq_f32(v); }
  static float32x4_t pow2(float32x4_t n) {  // 2^n for integral n in [-126, 127]
    return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23));
  }
  static float sum(float32x4_t v) { return vaddvq_f32(v); }
  static float max_of(float32x4_t v) { return vmaxvq_f32(v); }
  static void store_int16(int16_t* p, float32x4_t v) { vst1_s16(p, vqmovn_s32(vcvtnq_s32_f32(v))); }  // ties to even
  template <typename T>
  static void store(T* p, float32x4_t v) {
    if constexpr (sizeof(T) == 4) {
      vst1q_f32(reinterpret_cast<float*>(p), v);
    } else {
      vst1_u16(reinterpret_cast<uint16_t*>(p), vshrn_n_u32(vreinterpretq_u32_f32(round_to(p, v)), 16));
    }
  }
};

// The tiles as a policy for linear.h's drivers: float, 2 x 4 x 2 accumulators, 4 weight vectors and a row of x
// in flight (25 of 32 registers); int8, 2 x 4 x 2 accumulators and 2 x 4 totals, 2 weight and 2 x vectors.
struct Tiles {
  static constexpr int kGroup = 2;
  static constexpr int kRows = kTileRows;
  template <int G, int R, typename X, typename W>
  static void run(const X& x, const W* w, float* y, int64_t ldy) { tile<G, R>(x, w, y, ldy); }
};

}  // namespace neon
}  // namespace janus_kernels
