// The weight-streaming matmul for few rows (decode steps), y = x @ w.T, as every architecture runs it: the row
// formats, the int8 weights' packing and the drivers that walk weight tiles and groups of x's rows. Each
// architecture brings its tiles (linear_x86.cpp, neon.h) as a policy: kGroup rows of x per pass over kRows weight
// rows, `run<G, R>(x, w, y, ldy)`. Free of torch, so that a test can run an architecture's tiles alone (the
// ARM64 ones under emulation on an x86 machine: tests/plugins/test_neon_tiles.py).
//
// Each output row is a dot product of x with one weight row; a tile walks R weight rows once, feeding each
// block of weights to a group of x's rows, so the weights are read from memory once per call whatever the
// number of rows (the rows of x stay in cache).
// Weight formats:
// - float32 and bfloat16, multiplied in float32 (or bfloat16 pairs into float32 sums, where the CPU has them);
// - int8 with one float32 scale per output feature, multiplied in integers: x is quantized to int16 with one
//   scale per row and block of kScaleBlock (relative error ~1e-5, far below bfloat16's), so that the weights
//   are never converted to float (conversions and FMAs compete for the same ports).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace janus_kernels {

constexpr int64_t kBlock = 16;        // weights per step; the in-features must be a multiple
constexpr int64_t kScaleBlock = 512;  // int16 x: one scale per this many features; int32 sums cannot overflow
                                      // below 4096 (16 * 2^31 / (2 * 127 * 32767))
constexpr int kTileRows = 4;          // weight rows walked together (every architecture's tiles)
constexpr int64_t kChunk = 64;        // int8 weights: bytes of a row stored together (see packed_at)
constexpr int64_t kPanelRows = 8;     // bfloat16 panels: output rows per panel (see below)
constexpr int64_t kPanelTile = 32;    // bfloat16 panels: output rows a tile walks; N must be a multiple

// int8 weights are packed (packed.py, pack_int8): each group of kTileRows rows is stored as chunks of kChunk
// bytes, chunk c of every row of the group before chunk c + 1, so that a tile reads one contiguous run (with
// rows read side by side, 2 KiB apart, a core streamed half as fast); rows past the last full group stay as
// they are (R = 1: the same address). The in-features must be a multiple of kChunk.
template <int R>
inline const int8_t* packed_at(const int8_t* w, int64_t r, int64_t k) {
  return w + (k / kChunk) * (R * kChunk) + r * kChunk + k % kChunk;
}

// bfloat16 weights may instead be stored as panels (packed.py, pack_panels; x86 AVX2 only): each kPanelRows output
// rows as [K / 2][kPanelRows][2], the two weights of a pair of inputs side by side, so that one 256-bit load is
// 8 outputs' weights for inputs k and k + 1, made float32 by a shift (k) and a mask (k + 1) against x[k] and
// x[k + 1] broadcast: no shuffle, no horizontal sum, and each of 8 outputs' sums in its own lane. Row n of a panel
// layout is not at n * K: a tile starts at its first row * K all the same (kPanelRows rows take kPanelRows * K).

// Rows of x in float32 (for float32 and bfloat16 weights).
struct FloatRows {
  const float* data;
  int64_t K;
  FloatRows from(int64_t m) const { return {data + m * K, K}; }
};

// Rows of x in bfloat16 bits (for bfloat16 weights, in the tiles that multiply bfloat16 pairs).
struct Bf16Rows {
  const uint16_t* data;
  int64_t K;
  Bf16Rows from(int64_t m) const { return {data + m * K, K}; }
};

// Rows of x in int16, row m block b scaled by scale[m * blocks + b] (for int8 weights).
struct Int16Rows {
  const int16_t* data;
  const float* scale;
  int64_t K, blocks;
  Int16Rows from(int64_t m) const { return {data + m * K, scale + m * blocks, K, blocks}; }
};

// The `left` (< G) rows of x that remain after the full passes, as one smaller tile.
template <typename Tiles, int R, int G, typename X, typename W>
void remaining_rows(const X& x, int64_t left, const W* w, float* y, int64_t N) {
  if constexpr (G > 0) {
    if (left == G) {
      Tiles::template run<G, R>(x, w, y, N);
    } else {
      remaining_rows<Tiles, R, G - 1>(x, left, w, y, N);
    }
  }
}

// Every row of x against R consecutive weight rows, in passes of Tiles::kGroup rows of x; where the rows left
// for a last pass would be fewer than kGroup - 1, the last two passes share the rows evenly instead. After the
// first pass the weights come from cache, so a pass of one row costs nearly what a full one does: 4 rows through
// the AVX2 tiles (kGroup 3) as 3 + 1 streamed a 2048 x 5632 bfloat16 weight at 9.4 GB/s on one Zen 3 core, as
// 2 + 2 at 12.6, and 7 rows as 3 + 3 + 1 at 6.5 against 7.8 as 3 + 2 + 2 (on two cores, sharing the memory, less:
// 8-11% for that shape). Which pass a row is in does not change its outputs: each output has its own accumulators, summed in
// the same order in a tile of any size.
template <typename Tiles, int R, typename X, typename W>
void weight_rows(const X& x, int64_t M, const W* w, float* y, int64_t N) {
  constexpr int G = Tiles::kGroup;
  const bool even_last_two = M > G && M % G != 0 && M % G < G - 1;
  const int64_t full_end = even_last_two ? M - M % G - G : M - M % G;
  int64_t m = 0;
  for (; m < full_end; m += G) Tiles::template run<G, R>(x.from(m), w, y + m * N, N);
  if (even_last_two) {
    const int64_t first = (M - m + 1) / 2;
    remaining_rows<Tiles, R, G - 1>(x.from(m), first, w, y + m * N, N);
    m += first;
  }
  remaining_rows<Tiles, R, G - 1>(x.from(m), M - m, w, y + m * N, N);
}

// One weight of a call: its N rows (packed, for int8) and where its y [M, N] goes.
template <typename W>
struct Weight {
  const W* data;
  int64_t N;
  float* y;
};

// y [M, N] = x [M, K] @ w [N, K].T for each weight of `weights` (all K wide), their tiles in one loop split among
// threads: the projections of a layer that read the same rows (q, k and v; gate and up) are one call, with one
// preparation of x and one wait for the slowest thread instead of one each. `parallel(n, body)` runs
// body(begin, end) over [0, n) tiles, split among threads (at::parallel_for in the module, a plain loop in a
// test).
template <typename Tiles, typename X, typename W, typename Parallel>
void matmul(const X& x, int64_t M, const std::vector<Weight<W>>& weights, const Parallel& parallel) {
  constexpr int R = Tiles::kRows;
  std::vector<int64_t> first{0};  // the first tile of each weight, then the total
  for (const auto& w : weights) first.push_back(first.back() + w.N / R);
  parallel(first.back(), [&](int64_t begin, int64_t end) {
    size_t i = std::upper_bound(first.begin(), first.end(), begin) - first.begin() - 1;
    for (int64_t t = begin; t < end; ++t) {
      while (t >= first[i + 1]) ++i;
      const Weight<W>& w = weights[i];
      const int64_t row = (t - first[i]) * R;
      weight_rows<Tiles, R>(x, M, w.data + row * x.K, w.y + row, w.N);
    }
  });
  for (const auto& w : weights)
    for (int64_t n = w.N / R * R; n < w.N; ++n) weight_rows<Tiles, 1>(x, M, w.data + n * x.K, w.y + n, w.N);
}

// The same for one weight (how the NEON tiles' test harness, tests/plugins/native, drives them).
template <typename Tiles, typename X, typename W, typename Parallel>
void matmul(const X& x, int64_t M, const W* w, int64_t N, float* y, const Parallel& parallel) {
  matmul<Tiles>(x, M, std::vector<Weight<W>>{{w, N, y}}, parallel);
}

// x [M, K] (float32 or bfloat16) -> int16 with one scale per row and block of kScaleBlock: max |x| of a block
// maps to 32767, each value rounded to nearest even. Lanes::kWidth values at a time (Lanes: the architecture's
// float32 vector; its load, sub, max, mul, max_of and store_int16): one value at a time took ~10% of an int8
// call.
template <typename Lanes, typename T>
inline Int16Rows quantize_rows(const T* x, int64_t M, int64_t K, std::vector<int16_t>& q,
                               std::vector<float>& scale) {
  const int64_t blocks = (K + kScaleBlock - 1) / kScaleBlock;
  q.resize(M * K);
  scale.resize(M * blocks);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = m * K + b * kScaleBlock, end = m * K + std::min(K, (b + 1) * kScaleBlock);
      auto top = Lanes::zero();
      for (int64_t i = begin; i < end; i += Lanes::kWidth) {
        const auto v = Lanes::load(x + i);
        top = Lanes::max(top, Lanes::max(v, Lanes::sub(Lanes::zero(), v)));
      }
      const float most = Lanes::max_of(top), inverse = most > 0.f ? 32767.f / most : 0.f;
      for (int64_t i = begin; i < end; i += Lanes::kWidth)
        Lanes::store_int16(q.data() + i, Lanes::mul(Lanes::load(x + i), Lanes::splat(inverse)));
      scale[m * blocks + b] = most / 32767.f;
    }
  }
  return {q.data(), scale.data(), K, blocks};
}

// x [M, K] (float32 or bfloat16) as float32 rows for the tiles, `stride` apart (K: contiguous), each block of
// 16 in the order `order(j)` gives (the AVX2 tiles widen bfloat16 weights in another order than memory's).
template <typename T, typename Order>
std::vector<float> float_rows(const T* x, int64_t M, int64_t K, const Order& order, int64_t stride) {
  std::vector<float> out(M * stride);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < K; i += kBlock)
      for (int64_t j = 0; j < kBlock; ++j) out[m * stride + i + j] = static_cast<float>(x[m * K + i + order(j)]);
  return out;
}

// out[m, n] = y[m, n] * scale[n] + bias[n] in out's dtype T (scale, bias: float32, maybe null), Lanes::kWidth at
// a time (Lanes: the architecture's float32 vector, its load, mul, add and store in T's dtype), the rest one at
// a time: a step's ~170 calls store a million values, which one at a time took ~1.5 ms of a 1B step.
template <typename Lanes, typename T>
void scale_and_store(const float* y, const float* scale, const float* bias, int64_t M, int64_t N, T* out) {
  for (int64_t m = 0; m < M; ++m) {
    int64_t n = 0;
    for (; n + Lanes::kWidth <= N; n += Lanes::kWidth) {
      auto v = Lanes::load(y + m * N + n);
      if (scale) v = Lanes::mul(v, Lanes::load(scale + n));
      if (bias) v = Lanes::add(v, Lanes::load(bias + n));
      Lanes::store(out + m * N + n, v);
    }
    for (; n < N; ++n) {
      float v = y[m * N + n];
      if (scale) v *= scale[n];
      if (bias) v += bias[n];
      out[m * N + n] = static_cast<T>(v);
    }
  }
}

}  // namespace janus_kernels
