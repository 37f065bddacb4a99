// The x86 tiles of the linear kernel (linear.h has the drivers, linear.cpp the entry): AVX2 for every weight
// format, and AVX-512 tiles (BF16, VNNI) compiled for those extensions only, called where the CPU has them.
// AVX2: float32 and bfloat16 weights in float32 FMAs (bfloat16 widened by interleaving with zeros, which permutes
// each block of 16; x is permuted the same way once per call); int8 weights against x's int16 values through
// `vpmaddwd` (16 multiply-adds per instruction; the weights made int16 in their lanes by shifts, never float32,
// which made int8 no faster than bfloat16 on Zen 1).

#include "linear.h"
#include "x86.h"

namespace janus_kernels {
namespace {

// Rows of x per pass over a tile: 3 x 4 accumulators and 2 operands fit AVX2's 16 registers (the int8 tile reads
// some of its 6 x vectors from cache).
constexpr int kMaxGroup = 3;

// Loads 16 weights as two float32 vectors, in the order the (possibly permuted) x expects.
inline void widen(const float* w, __m256& lo, __m256& hi) {
  lo = _mm256_loadu_ps(w);
  hi = _mm256_loadu_ps(w + 8);
}
inline void widen(const uint16_t* w, __m256& lo, __m256& hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i zero = _mm256_setzero_si256();
  lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));  // weights 0-3 and 8-11
  hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));  // weights 4-7 and 12-15
}

// y[m * ldy + r] = dot(x[m], w[r]) for G rows of x and R rows of w (rows K apart), in float32.
template <int G, int R, typename W>
inline void tile(const FloatRows& x, const W* w, float* y, int64_t ldy) {
  const int64_t K = x.K;
  __m256 acc[G][R];
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += kBlock) {
    for (int r = 0; r < R; ++r) {  // one weight row at a time: G * R accumulators + 2 stay in registers
      __m256 lo, hi;
      widen(w + r * K + k, lo, hi);
      _mm_prefetch(reinterpret_cast<const char*>(w + (R + r) * K + k), _MM_HINT_T1);
      for (int m = 0; m < G; ++m) {
        acc[m][r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x.data + m * K + k), acc[m][r]);
        acc[m][r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x.data + m * K + k + 8), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = horizontal_sum(acc[m][r]);
}

// A scale block's exact int32 sum from its 8 lanes (below 512 * 127 * 32767 < 2^31), rounded to float32 once and
// scaled: what the int8 tile adds to a row's total (as the NEON int8 tiles do, neon.h).
inline float block_value(__m256i lanes, float scale) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<float>(_mm_cvtsi128_si32(s)) * scale;
}

// The same for int16 x and (packed) int8 w: 32 weights per load, made int16 in their lanes by shifts, the low
// byte of each 16-bit pair (the even weights, sign-extended by a shift left and back) and the high byte (the odd
// ones, an arithmetic shift), each against the x values of the same parity (x's blocks of 32 reordered once per
// call, pairs_apart). On one Zen 3 core this streamed 2 rows 25-30% faster than widening 16 weights by
// `vpmovsxbw` (which crosses the 128-bit lanes), 65% faster with the weights in cache. Exact int32 sums per
// scale block, added up in float32 (block_value).
template <int G, int R>
inline void tile(const Int16Rows& x, const int8_t* w, float* y, int64_t ldy) {
  const int64_t K = x.K;
  const int16_t* row[G];
#pragma GCC unroll 8
  for (int m = 0; m < G; ++m) row[m] = x.data + m * K;
  float total[G][R] = {};
  const int8_t* chunk = w;  // chunk k / kChunk of the R rows (packed_at), walked in order
  for (int64_t b = 0; b < x.blocks; ++b) {
    __m256i acc[G][R];
#pragma GCC unroll 8
    for (int m = 0; m < G; ++m)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_si256();
    const int64_t end = std::min(K, (b + 1) * kScaleBlock);
    for (int64_t k = b * kScaleBlock; k < end; k += kChunk, chunk += R * kChunk) {
#pragma GCC unroll 2
      for (int64_t half = 0; half < kChunk; half += 2 * kBlock) {
        __m256i even_x[G], odd_x[G];
#pragma GCC unroll 8
        for (int m = 0; m < G; ++m) {
          even_x[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[m] + k + half));
          odd_x[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[m] + k + half + kBlock));
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const int8_t* at = chunk + r * kChunk + half;
          const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at));
          _mm_prefetch(reinterpret_cast<const char*>(at + R * K), _MM_HINT_T1);  // the next tile's, R * K ahead
          const __m256i even = _mm256_srai_epi16(_mm256_slli_epi16(pairs, 8), 8);
          const __m256i odd = _mm256_srai_epi16(pairs, 8);
#pragma GCC unroll 8
          for (int m = 0; m < G; ++m) {
            const __m256i sum =
                _mm256_add_epi32(_mm256_madd_epi16(even, even_x[m]), _mm256_madd_epi16(odd, odd_x[m]));
            acc[m][r] = _mm256_add_epi32(acc[m][r], sum);
            // Rows of x > 1: each sum added where it is made (an empty asm that holds it in a register).
            // Free to reassociate the integer adds, GCC 12 computed every product of a step first and kept
            // the sums on the stack: 2 rows ~15% slower on one Zen 3 core; 1 row 3-5% faster without it.
            if constexpr (G > 1) asm("" : "+x"(acc[m][r]));
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < G; ++m) {
      const float scale = x.scale[m * x.blocks + b];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) total[m][r] += block_value(acc[m][r], scale);
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = total[m][r];
}

// x's int16 values as the AVX2 int8 tile takes them: each block of 32 as its 16 even-indexed values, then its 16
// odd ones (K % 64 == 0 for int8 weights).
Int16Rows pairs_apart(const Int16Rows& q, int64_t M, std::vector<int16_t>& out) {
  out.resize(M * q.K);
  const auto even_of = [](__m256i v) { return _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 16); };
  for (int64_t i = 0; i < M * q.K; i += 2 * kBlock) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.data + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.data + i + kBlock));
    // packs interleaves the 128-bit halves of its two inputs; the permute puts them back in order
    const __m256i even =
        _mm256_permute4x64_epi64(_mm256_packs_epi32(even_of(a), even_of(b)), _MM_SHUFFLE(3, 1, 2, 0));
    const __m256i odd = _mm256_permute4x64_epi64(
        _mm256_packs_epi32(_mm256_srai_epi32(a, 16), _mm256_srai_epi32(b, 16)), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.data() + i), even);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.data() + i + kBlock), odd);
  }
  return {out.data(), q.scale, q.K, q.blocks};
}

constexpr int64_t kPanelPrefetch = 1024;  // elements ahead in a panel's own stream (2 KiB)

// Rows of x in float32, `stride` apart: the panel tiles read 8 rows' values at the same k, which with rows K
// floats apart (K = 2048: 8 KiB) would all fall in one set of the L1 cache; a stride of K + 16 spreads them.
struct StridedRows {
  const float* data;
  int64_t K, stride;
  StridedRows from(int64_t m) const { return {data + m * stride, K, stride}; }
};

// bfloat16 panels (linear.h): P panels of 8 outputs against G rows of x, one float32 accumulator per row and
// panel. Per pair of inputs the P weight vectors are widened for x[k] (a shift) and fed to every row, then again
// for x[k + 1] (a mask), each row's value broadcast once per use. Each output's sum runs over k in the same order
// whatever G and P, so a row's outputs do not depend on the rows beside it.
// Written so that GCC 12 keeps every accumulator in a register: a pointer per row (x.data + m * stride + k
// addressed each time cost an address computation per broadcast) and the small loops unrolled by pragma before
// GCC places the arrays (unrolled later, it stored every accumulator to the stack on every step). Against the
// earlier form (8 rows in one pass, 8 x 1), on a Zen 3 with two threads streaming 10 distinct weights: 4 rows
// 1.44-1.71x as fast, 8 rows 0.98-1.17x, 1-2 rows 0.99-1.11x (bench/RESULTS.md).
template <int G, int P>
inline void panels(const StridedRows& x, const uint16_t* w, float* y, int64_t ldy) {
  const int64_t K = x.K, panel = kPanelRows * K;
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  const float* row[G];
#pragma GCC unroll 8
  for (int m = 0; m < G; ++m) row[m] = x.data + m * x.stride;
  __m256 acc[G][P];
#pragma GCC unroll 8
  for (int m = 0; m < G; ++m)
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) acc[m][p] = _mm256_setzero_ps();
  const auto feed = [&](const __m256 (&weights)[P], int64_t k) {
#pragma GCC unroll 8
    for (int m = 0; m < G; ++m) {
      const __m256 value = _mm256_broadcast_ss(row[m] + k);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[m][p] = _mm256_fmadd_ps(value, weights[p], acc[m][p]);
    }
  };
  for (int64_t k = 0; k < K; k += 2) {
    const uint16_t* at = w + k * kPanelRows;
    __m256 weights[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      _mm_prefetch(reinterpret_cast<const char*>(at + p * panel + kPanelPrefetch), _MM_HINT_T0);
      const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at + p * panel));
      weights[p] = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
    }
    feed(weights, k);
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at + p * panel));
      weights[p] = _mm256_castsi256_ps(_mm256_and_si256(pairs, high));
    }
    feed(weights, k + 1);
  }
#pragma GCC unroll 8
  for (int m = 0; m < G; ++m)
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) _mm256_storeu_ps(y + m * ldy + p * kPanelRows, acc[m][p]);
}

// The panel tiles as a policy for the drivers: a tile is kPanelTile outputs (4 panels), walked P panels at a time
// by passes of up to 4 rows of x: 4 x 2 accumulators, the 2 weight vectors and a broadcast value fit AVX2's 16
// registers (8 rows in one pass, 8 x 1, left each accumulator 2 dependent FMAs per pair of inputs, 8 cycles of
// latency against 8 of issue: no slack).
struct PanelTiles {
  static constexpr int kGroup = 4;
  static constexpr int kRows = kPanelTile;
  template <int G, int R>
  static void run(const StridedRows& x, const uint16_t* w, float* y, int64_t ldy) {
    if constexpr (R == kRows) {
      constexpr int P = G <= 2 ? 4 : 2;
      for (int p = 0; p < kRows / kPanelRows; p += P)
        panels<G, P>(x, w + p * kPanelRows * x.K, y + p * kPanelRows, ldy);
    } else {
      __builtin_unreachable();  // panels hold whole tiles (linear_many checks N % kPanelTile == 0): no row tail
    }
  }
};

// The AVX2 tiles as a policy for the drivers below: kGroup rows of x per pass over kRows weight rows.
struct Avx2Tiles {
  static constexpr int kGroup = kMaxGroup;
  static constexpr int kRows = kTileRows;
  template <int G, int R, typename X, typename W>
  static void run(const X& x, const W* w, float* y, int64_t ldy) { tile<G, R>(x, w, y, ldy); }
};

// ---- AVX-512 with AVX512-BF16 and AVX512-VNNI (Zen 4 and later, Cooper Lake / Sapphire Rapids and later):
// the same weight streaming, no widening of the weights: `vdpbf16ps` multiplies 32 bfloat16 pairs into float32
// sums (the products are exact, as in the AVX2 path), `vpdpwssd` 32 int8 weights made int16 by x's int16
// values into int32 sums (x quantized as the AVX2 path does). Rows are a multiple of 64 long (every Janus layer's are):
// no masked loads, with which GCC 12 stores every accumulator on every step. With 32 registers a pass
// feeds each weight vector to 4 rows of x. At 8 bfloat16 rows (four images with guidance) the arithmetic bounds
// it, not the memory: a Zen 4 core issues a 512-bit vdpbf16ps about every second cycle, and two cores compute
// ~24-26 GB/s of weights held in cache (bench/linear_kernels.py --resident), which the tiles, prefetching the
// next tile while they compute, nearly stream (bench/RESULTS.md). Compiled for these extensions here only; called
// only where the CPU reports them (`wide_supported`), and chosen by measurement against the others.
#if defined(__GNUC__) && (__GNUC__ >= 11 || (defined(__clang__) && __clang_major__ >= 11))
#define JANUS_AVX512 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")

constexpr int64_t kLanes512 = 32;  // bfloat16 or int16 elements per register

template <int G, int R, bool RolledPairs>
inline void tile512(const Bf16Rows& x, const uint16_t* w, float* y, int64_t ldy) {
  const int64_t K = x.K;
  __m512 acc[G][R];
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += kLanes512) {
    __m512bh xv[G];
    for (int m = 0; m < G; ++m) xv[m] = (__m512bh)_mm512_loadu_si512(x.data + m * K + k);
    const auto weight_row = [&](int r) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + r * K + k);
      _mm_prefetch(reinterpret_cast<const char*>(w + (R + r) * K + k), _MM_HINT_T1);
      for (int m = 0; m < G; ++m) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], xv[m], wv);
    };
    if constexpr (G == 2 && RolledPairs) {
      // Two rows of x (a decode step with guidance), where this machine measured it the faster form
      // (set_two_row_loop): the weight rows one after another in a loop kept rolled, their sums passing through
      // memory. Unrolled, every sum in a register, the tile issued the four rows' loads together and streamed
      // weights 10-27% slower on the Zen 4 of bench/RESULTS.md (5632 -> 2048: 33.4 against 42.3 GB/s where the
      // memory read ~50 GB/s, 29.6 against 33.6 at ~34); on a Zen 5 the unrolled form streamed 1.20-1.28x as
      // fast (two threads, 10 distinct weights of each MLP shape). The same sums in the same order either way.
      // With one row it makes no difference; with more the arithmetic binds and the registers win (8 rows: 36
      // against 21 GB/s on the Zen 4); the int8 tile, rolled the same way, streamed a third slower.
#pragma GCC unroll 1
      for (int r = 0; r < R; ++r) weight_row(r);
    } else {
      for (int r = 0; r < R; ++r) weight_row(r);
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = _mm512_reduce_add_ps(acc[m][r]);
}

// int8 weights against x's int16 values: `vpdpwssd` sums 32 int16 products in pairs into 16 int32 lanes, the
// weights made int16 in order by `vpmovsxbw`, 32 at a time; x as quantize_rows made it. Each scale block's sum
// is exact (at most 512 products of 32767 * 127: below 2^31) and added up as the AVX2 and NEON tiles add theirs
// (block_value: rounded to float32 once, scaled, summed in block order), so an int8 model gives the same bits
// through either x86 build, and with its lanes summed four accumulators at a time (lane_sums) that costs
// nothing measurable (a Zen 4, 1-8 rows: 0.97-1.02x). It replaced a tile that split x into bytes for
// `vpdpbusd` (two instructions per row of x and weight vector, a correction per block; GCC 12 spilled its
// accumulators at 2 rows): on a Zen 4 four images' steps 1.4x as fast, one image's 0.86-0.94x
// (bench/RESULTS.md).
// vpdpwssd through asm: GCC 12's intrinsic copies every accumulator twice per step (as it did vpdpbusd's).
inline __m512i dpwssd(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "vm"(b));
  return acc;
}

inline __m512i widen32(const int8_t* w) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
}

// The sums of a's, b's, c's and d's 16 lanes, as 4 lanes (integers: any order of the adds is exact), in ~13
// instructions where four separate reductions take ~32.
inline __m128i lane_sums(__m512i a, __m512i b, __m512i c, __m512i d) {
  const auto halves = [](__m512i p, __m512i q) {  // [p's 256-bit halves added, q's]
    return _mm512_add_epi32(_mm512_shuffle_i64x2(p, q, _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_i64x2(p, q, _MM_SHUFFLE(3, 2, 3, 2)));
  };
  const __m512i ab = halves(a, b), cd = halves(c, d);
  __m512i s = _mm512_add_epi32(_mm512_shuffle_i64x2(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_i64x2(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));  // 4 lanes each
  s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_BADC));
  s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_CDAB));
  const __m512i firsts = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castsi512_si128(_mm512_permutexvar_epi32(firsts, s));
}

template <int G, int R>
inline void tile512(const Int16Rows& x, const int8_t* w, float* y, int64_t ldy) {
  static_assert(R <= 4, "lane_sums reduces 4 accumulators at a time");
  const int64_t K = x.K;
  float total[G][R] = {};
  for (int64_t b = 0; b < x.blocks; ++b) {
    __m512i acc[G][R];
    for (int m = 0; m < G; ++m)
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_si512();
    const int64_t end = std::min(K, (b + 1) * kScaleBlock);
    for (int64_t k = b * kScaleBlock; k < end; k += 2 * kLanes512) {  // a packed chunk of 64 per row
      __m512i first[G], second[G];
      for (int m = 0; m < G; ++m) {
        first[m] = _mm512_loadu_si512(x.data + m * K + k);
        second[m] = _mm512_loadu_si512(x.data + m * K + k + kLanes512);
      }
      for (int r = 0; r < R; ++r) {
        const int8_t* at = packed_at<R>(w, r, k);
        _mm_prefetch(reinterpret_cast<const char*>(packed_at<R>(w + R * K, r, k)), _MM_HINT_T1);
        const __m512i low = widen32(at), high = widen32(at + kLanes512);
        for (int m = 0; m < G; ++m) acc[m][r] = dpwssd(dpwssd(acc[m][r], first[m], low), second[m], high);
      }
    }
    for (int m = 0; m < G; ++m) {
      const auto lanes = [&](int r) { return r < R ? acc[m][r] : _mm512_setzero_si512(); };
      alignas(16) float value[4];  // block_value's float32(sum) * scale, four at a time
      _mm_store_ps(value, _mm_mul_ps(_mm_cvtepi32_ps(lane_sums(lanes(0), lanes(1), lanes(2), lanes(3))),
                                     _mm_set1_ps(x.scale[m * x.blocks + b])));
      for (int r = 0; r < R; ++r) total[m][r] += value[r];
    }
  }
  for (int m = 0; m < G; ++m)
    for (int r = 0; r < R; ++r) y[m * ldy + r] = total[m][r];
}

// The tiles as policies for the drivers, each filling at most 22 of the 32 registers: bfloat16, 4 x 4
// accumulators, 4 rows of x and a weight vector; int8, 2 x 4 accumulators and as many totals, 2 x 2 vectors of
// x and two of weights.
template <bool RolledPairs>
struct Bf16Tiles {
  static constexpr int kGroup = 4;
  static constexpr int kRows = kTileRows;
  template <int G, int R>
  static void run(const Bf16Rows& x, const uint16_t* w, float* y, int64_t ldy) {
    tile512<G, R, RolledPairs>(x, w, y, ldy);
  }
};
struct Int8Tiles {
  static constexpr int kGroup = 2;
  static constexpr int kRows = kTileRows;  // int8 weights are packed by kTileRows rows
  template <int G, int R>
  static void run(const Int16Rows& x, const int8_t* w, float* y, int64_t ldy) { tile512<G, R>(x, w, y, ldy); }
};

#pragma GCC pop_options
#endif

// Where the AVX2 tiles widen bfloat16 weights by interleaving (widen(const uint16_t*)), x's block of 16 goes in
// the same order: x0-3, x8-11, x4-7, x12-15.
constexpr auto interleaved = [](int64_t j) { return (j & 3) | ((j & 4) << 1) | ((j & 8) >> 1); };

}  // namespace

// Whether this CPU (and its OS, which must save the 512-bit registers) runs the AVX-512 tiles.
bool wide_supported() {
#ifdef JANUS_AVX512
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

// `wide`: the AVX-512 tiles for bfloat16 x against bfloat16 weights and for int8 weights (the AVX2 ones for the
// rest).
void stream_weights(const at::Tensor& x, const std::vector<at::Tensor>& weights, bool wide,
                    const std::vector<float*>& ys) {
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(!wide || K % 64 == 0, "the AVX-512 kernels need K % 64 == 0");
  TORCH_CHECK(!wide || weights.front().dim() == 2, "the AVX-512 tiles take [N, K] rows, not panels");
  const at::ScalarType kind = weights.front().scalar_type();
  const TorchThreads threads;
  if (wide && kind == at::kBFloat16 && x.scalar_type() == at::kBFloat16) {
#ifdef JANUS_AVX512
    const Bf16Rows rows{reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()), K};
    if (two_row_loop_rolled()) {
      matmul<Bf16Tiles<true>>(rows, M, weights_as<uint16_t>(weights, ys), threads);
    } else {
      matmul<Bf16Tiles<false>>(rows, M, weights_as<uint16_t>(weights, ys), threads);
    }
#endif
    return;
  }
  if (kind == at::kChar) {
    std::vector<int16_t> q;
    std::vector<float> q_scale;
    const Int16Rows quantized =
        x.scalar_type() == at::kFloat ? quantize_rows<Avx2Lanes>(x.data_ptr<float>(), M, K, q, q_scale)
                                      : quantize_rows<Avx2Lanes>(x.data_ptr<at::BFloat16>(), M, K, q, q_scale);
#ifdef JANUS_AVX512
    if (wide) {
      matmul<Int8Tiles>(quantized, M, weights_as<int8_t>(weights, ys), threads);
      return;
    }
#endif
    std::vector<int16_t> apart;
    matmul<Avx2Tiles>(pairs_apart(quantized, M, apart), M, weights_as<int8_t>(weights, ys), threads);
    return;
  }
  const auto in_order = [](int64_t j) { return j; };
  if (weights.front().dim() == 3) {  // bfloat16 panels: x in float32, in its own order, rows K + 16 apart
    const int64_t stride = K + 16;
    const std::vector<float> xf = x.scalar_type() == at::kFloat
                                      ? float_rows(x.data_ptr<float>(), M, K, in_order, stride)
                                      : float_rows(x.data_ptr<at::BFloat16>(), M, K, in_order, stride);
    matmul<PanelTiles>(StridedRows{xf.data(), K, stride}, M, weights_as<uint16_t>(weights, ys), threads);
    return;
  }
  const bool bf16 = kind == at::kBFloat16;
  const auto rows_of = [&](const auto* data) {
    return bf16 ? float_rows(data, M, K, interleaved, K) : float_rows(data, M, K, in_order, K);
  };
  const std::vector<float> xf =
      x.scalar_type() == at::kFloat ? rows_of(x.data_ptr<float>()) : rows_of(x.data_ptr<at::BFloat16>());
  const FloatRows rows{xf.data(), K};
  switch (kind) {
    case at::kFloat: matmul<Avx2Tiles>(rows, M, weights_as<float>(weights, ys), threads); break;
    case at::kBFloat16: matmul<Avx2Tiles>(rows, M, weights_as<uint16_t>(weights, ys), threads); break;
    default: TORCH_CHECK(false, "unsupported weight dtype ", kind);
  }
}

}  // namespace janus_kernels
