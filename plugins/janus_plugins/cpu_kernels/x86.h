// The AVX2 helpers the x86 sources share (linear_x86.cpp, attention.cpp, layer_ops.cpp): sums, and eight float32
// or bfloat16 values in and out of float32 lanes.
#pragma once

#include <immintrin.h>

#include "common.h"

namespace janus_kernels {

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// Eight float32 or bfloat16 values as eight float32 lanes.
inline __m256 widen8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 widen8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Eight values of a float32 or bfloat16 tensor in float32 lanes, and back (bfloat16: rounded to nearest even,
// as torch rounds).
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const c10::BFloat16* p) { return widen8(reinterpret_cast<const uint16_t*>(p)); }

// v rounded to T's precision (round to nearest even), still as float32.
inline __m256 round_to(const float*, __m256 v) { return v; }
inline __m256 round_to(const c10::BFloat16*, __m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
  return _mm256_castsi256_ps(_mm256_and_si256(rounded, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void store8(c10::BFloat16* p, __m256 v) {
  const __m256i high = _mm256_srli_epi32(_mm256_castps_si256(round_to(p, v)), 16);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}

// Eight float32 lanes as the portable kernels take them (lanes.h).
struct Avx2Lanes {
  static constexpr int64_t kWidth = 8;
  static __m256 zero() { return _mm256_setzero_ps(); }
  static __m256 splat(float v) { return _mm256_set1_ps(v); }
  template <typename T>
  static __m256 load(const T* p) { return load8(p); }
  template <typename T>
  static __m256 widen(const T* p) { return widen8(p); }
  template <typename T>
  static __m256 round_to(const T* like, __m256 v) { return janus_kernels::round_to(like, v); }
  static __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  static __m256 sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
  static __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
  static __m256 div(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
  static __m256 min(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
  static __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
  static __m256 fma(__m256 a, __m256 b, __m256 acc) { return _mm256_fmadd_ps(a, b, acc); }
  static __m256 fnma(__m256 a, __m256 b, __m256 acc) { return _mm256_fnmadd_ps(a, b, acc); }
  static __m256 round_nearest(__m256 v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static __m256 pow2(__m256 n) {  // 2^n for integral n in [-126, 127]
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static float sum(__m256 v) { return horizontal_sum(v); }
  static float max_of(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  template <typename T>
  static void store(T* p, __m256 v) { store8(p, v); }
  static void store_int16(int16_t* p, __m256 v) {  // rounded to nearest even (the default rounding mode)
    const __m256i i = _mm256_cvtps_epi32(v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1)));
  }
};

}  // namespace janus_kernels
