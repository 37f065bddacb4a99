// Attention of many query positions at once (a prompt's prefill; SigLIP's and the VQ decoder's attention over
// a whole image) through AVX512-BF16: both products in `vdpbf16ps` (bfloat16 pairs into float32 sums), the
// softmax in float32. torch's CPU SDPA takes ~18-22 ms per 1B layer for a 631-position prompt on the Zen 4 of
// bench/RESULTS.md, a fifth of what two cores' vdpbf16ps can do, and barely less causal than not; this skips
// the keys a causal query does not see, 16 at a time. x86 with AVX512-BF16 only (`wide_supported`); on
// other CPUs the entry raises and nothing calls it. Whether it beats SDPA is measured per shape (attention/cpu.py).
//
// Per head the keys and values are repacked once into the pairs vdpbf16ps multiplies: keys by blocks of 16
// positions, lane i holding dimensions (2p, 2p + 1) of key 16j + i; values by pairs of positions, lane i holding
// dimension 16c + i of positions 2t and 2t + 1. Queries are then taken 32 at a time: their scores against every
// key they see (float32), a softmax per row (probabilities rounded to bfloat16, as SDPA rounds them), and the
// probabilities times the values, divided by each row's sum.
#include "common.h"
#include "lanes.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && \
    (__GNUC__ >= 11 || (defined(__clang__) && __clang_major__ >= 11))
#define JANUS_PROMPT_ATTENTION 1
#include <immintrin.h>

#include <cstring>
#endif

namespace janus_kernels {
#ifdef JANUS_PROMPT_ATTENTION
namespace {

constexpr int64_t kKeys = 16;         // key positions per score vector
constexpr int64_t kQueries = 32;      // query rows per task
constexpr int kRowTile = 4;           // query rows per register tile
constexpr int kVectorTile = 4;        // key blocks (scores) or 16-dimension chunks (values) per register tile
constexpr int64_t kDimMultiple = kKeys * kVectorTile;  // head sizes the tiles cover (64, 128, ...)
constexpr int64_t kMaxKeyStride = int64_t{1} << 26;     // 15 keys apart in bytes must fit the gather's int32

// e^(scale * (s - max)) of one row of n scores, rounded to bfloat16 into p, zeros after them up to `padded`;
// returns the sum of the float32 exponentials.
float softmax_row(const float* s, int64_t n, float scale, int64_t padded, uint16_t* p) {
  constexpr int64_t W = Lanes::kWidth;
  const int64_t whole = n - n % W;
  auto* rounded = reinterpret_cast<c10::BFloat16*>(p);
  Vec top = Lanes::splat(-INFINITY);
  for (int64_t l = 0; l < whole; l += W) top = Lanes::max(top, Lanes::load(s + l));
  float max = Lanes::max_of(top);
  for (int64_t l = whole; l < n; ++l) max = std::max(max, s[l]);
  Vec sums = Lanes::zero();
  for (int64_t l = 0; l < whole; l += W) {
    const Vec e = exp_lanes(Lanes::mul(Lanes::sub(Lanes::load(s + l), Lanes::splat(max)), Lanes::splat(scale)));
    Lanes::store(rounded + l, e);
    sums = Lanes::add(sums, e);
  }
  float total = Lanes::sum(sums);
  for (int64_t l = whole; l < n; ++l) {
    const float e = std::exp((s[l] - max) * scale);
    rounded[l] = c10::BFloat16(e);
    total += e;
  }
  std::fill(p + n, p + padded, uint16_t{0});
  return total;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

inline __m512bh pair_at(const uint16_t* p) {  // two bfloat16 values in every lane
  int32_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return (__m512bh)_mm512_set1_epi32(bits);
}

// One head's keys (L rows `row` apart) as kp[j][p][i] = (k[16j + i][2p], k[16j + i][2p + 1]), zeros past L.
void pack_keys(const uint16_t* k, int64_t row, int64_t L, int64_t D, uint16_t* kp) {
  const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(row * 2)));
  for (int64_t j = 0; j * kKeys < L; ++j) {
    const __mmask16 valid = static_cast<__mmask16>((1u << std::min<int64_t>(kKeys, L - j * kKeys)) - 1);
    const uint16_t* base = k + j * kKeys * row;
    for (int64_t p = 0; p < D / 2; ++p) {
      const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, lanes, base + 2 * p, 1);
      _mm512_storeu_si512(kp + (j * (D / 2) + p) * 2 * kKeys, v);
    }
  }
}

// One head's values as vp[t][c][i] = (v[2t][16c + i], v[2t + 1][16c + i]), zeros past L.
void pack_values(const uint16_t* v, int64_t row, int64_t L, int64_t D, uint16_t* vp) {
  for (int64_t t = 0; 2 * t < L; ++t) {
    const uint16_t* first = v + 2 * t * row;
    for (int64_t c = 0; c < D / kKeys; ++c) {
      const __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(first + c * kKeys)));
      const __m512i b = 2 * t + 1 < L ? _mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                            reinterpret_cast<const __m256i*>(first + row + c * kKeys)))
                                      : _mm512_setzero_si512();
      _mm512_storeu_si512(vp + (t * (D / kKeys) + c) * 2 * kKeys, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
    }
  }
}

// s[m][16n + i] = q[m] . k[16(j + n) + i] for M query rows (`qrow` apart) and N blocks of packed keys from j.
template <int M, int N>
void score_tile(const uint16_t* q, int64_t qrow, const uint16_t* kp, int64_t D, float* s, int64_t lds) {
  __m512 acc[M][N];
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) acc[m][n] = _mm512_setzero_ps();
  const int64_t block = D / 2 * 2 * kKeys;  // one packed block of keys
  for (int64_t p = 0; p < D / 2; ++p) {
    __m512bh keys[N];
    for (int n = 0; n < N; ++n) keys[n] = (__m512bh)_mm512_loadu_si512(kp + n * block + p * 2 * kKeys);
    for (int m = 0; m < M; ++m) {
      const __m512bh query = pair_at(q + m * qrow + 2 * p);
      for (int n = 0; n < N; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], query, keys[n]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) _mm512_storeu_ps(s + m * lds + n * kKeys, acc[m][n]);
}

// out[m][16(c + n) + i] = sum_t p[m][t] v[t][16(c + n) + i] / total[m], over `pairs` pairs of positions, for M
// rows of probabilities (`ldp` apart) and N chunks of 16 dimensions from c; written as bfloat16.
template <int M, int N>
void value_tile(const uint16_t* p, int64_t ldp, const uint16_t* vp, int64_t D, int64_t c, int64_t pairs,
                const float* total, uint16_t* out, int64_t ldo) {
  __m512 acc[M][N];
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) acc[m][n] = _mm512_setzero_ps();
  const int64_t chunks = D / kKeys;
  for (int64_t t = 0; t < pairs; ++t) {
    __m512bh values[N];
    for (int n = 0; n < N; ++n) values[n] = (__m512bh)_mm512_loadu_si512(vp + (t * chunks + c + n) * 2 * kKeys);
    for (int m = 0; m < M; ++m) {
      const __m512bh weights = pair_at(p + m * ldp + 2 * t);
      for (int n = 0; n < N; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], weights, values[n]);
    }
  }
  for (int m = 0; m < M; ++m) {
    const __m512 inverse = _mm512_set1_ps(1.f / total[m]);
    for (int n = 0; n < N; ++n) {
      const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_mul_ps(acc[m][n], inverse));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * ldo + (c + n) * kKeys), (__m256i)rounded);
    }
  }
}

// The tiles for the last rows or blocks of a pass, which may be fewer than kRowTile or kVectorTile.
template <template <int, int> class Tile, int M = kRowTile, int N = kVectorTile>
struct Dispatch {
  template <typename... Args>
  static void run(int m, int n, Args... args) {
    if constexpr (M > 1) {
      if (m < M) return Dispatch<Tile, M - 1, N>::run(m, n, args...);
    }
    if constexpr (N > 1) {
      if (n < N) return Dispatch<Tile, M, N - 1>::run(m, n, args...);
    }
    Tile<M, N>::run(args...);
  }
};
template <int M, int N>
struct ScoreTile {
  template <typename... Args>
  static void run(Args... args) { score_tile<M, N>(args...); }
};
template <int M, int N>
struct ValueTile {
  template <typename... Args>
  static void run(Args... args) { value_tile<M, N>(args...); }
};

#pragma GCC pop_options

}  // namespace
#endif

// q [B, H, T, D]; k, v [B, Hkv, L, D] (L >= T), all bfloat16 with unit stride along D and D % 64 == 0; H a
// multiple of Hkv. Returns softmax(q k^T * scale) v as [B, H, T, D] (a view of a [B, T, H, D] tensor, so that the
// heads' concatenation costs no copy); `causal`: query i sees keys 0..L - T + i.
at::Tensor prompt_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            bool causal) {
#ifdef JANUS_PROMPT_ATTENTION
  TORCH_CHECK(wide_supported(), "prompt_attention needs a CPU with AVX512-BF16");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && k.strides() == v.strides(),
              "shapes do not match");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
                  v.scalar_type() == at::kBFloat16, "bfloat16 q, k and v expected");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), L = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(3) == D && H % Hkv == 0 && L >= T && D % kDimMultiple == 0,
              "shapes do not match");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1, "q, k and v need unit stride along D");
  TORCH_CHECK(k.stride(2) < kMaxKeyStride, "keys too far apart for the gather's 32-bit offsets");
  TORCH_CHECK(scale > 0, "scale must be positive");
  const int64_t blocks = (L + kKeys - 1) / kKeys, padded = blocks * kKeys, group = H / Hkv;
  at::Tensor keys = at::empty({B * Hkv, padded * D}, q.options());
  at::Tensor values = at::empty({B * Hkv, padded * D}, q.options());
  auto* kp = reinterpret_cast<uint16_t*>(keys.data_ptr<at::BFloat16>());
  auto* vp = reinterpret_cast<uint16_t*>(values.data_ptr<at::BFloat16>());
  const auto* kd = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>());
  const auto* vd = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>());
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t offset = (i / Hkv) * k.stride(0) + (i % Hkv) * k.stride(1);
      pack_keys(kd + offset, k.stride(2), L, D, kp + i * padded * D);
      pack_values(vd + offset, k.stride(2), L, D, vp + i * padded * D);
    }
  });
  at::Tensor out = at::empty({B, T, H, D}, q.options());
  auto* od = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const auto* qd = reinterpret_cast<const uint16_t*>(q.data_ptr<at::BFloat16>());
  const int64_t tasks = (T + kQueries - 1) / kQueries, shift = causal ? L - T : 0;
  at::parallel_for(0, B * H * tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kQueries * padded), total(kQueries);
    std::vector<uint16_t> p(kQueries * padded);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (H * tasks), h = task / tasks % H, first = task % tasks * kQueries;
      const int64_t rows = std::min(kQueries, T - first), kv = b * Hkv + h / group;
      const uint16_t* qh = qd + b * q.stride(0) + h * q.stride(1) + first * q.stride(2);
      // keys seen by the rows [m, m + M) of this task: all, or up to the last row's position
      const auto seen = [&](int64_t m, int64_t M) { return causal ? std::min(L, shift + first + m + M) : L; };
      for (int64_t m = 0; m < rows; m += kRowTile) {
        const int M = static_cast<int>(std::min<int64_t>(kRowTile, rows - m));
        const int64_t needed = (seen(m, M) + kKeys - 1) / kKeys;
        for (int64_t j = 0; j < needed; j += kVectorTile) {
          const int N = static_cast<int>(std::min<int64_t>(kVectorTile, needed - j));
          Dispatch<ScoreTile>::run(M, N, qh + m * q.stride(2), q.stride(2), kp + (kv * padded + j * kKeys) * D, D,
                                   s.data() + m * padded + j * kKeys, padded);
        }
      }
      for (int64_t m = 0; m < rows; ++m) {
        const int64_t group_end = (seen(m - m % kRowTile, kRowTile) + kKeys - 1) / kKeys * kKeys;
        total[m] = softmax_row(s.data() + m * padded, seen(m, 1), static_cast<float>(scale), group_end,
                               p.data() + m * padded);
      }
      for (int64_t m = 0; m < rows; m += kRowTile) {
        const int M = static_cast<int>(std::min<int64_t>(kRowTile, rows - m));
        const int64_t pairs = (seen(m, M) + 1) / 2;
        for (int64_t c = 0; c < D / kKeys; c += kVectorTile)
          Dispatch<ValueTile>::run(M, kVectorTile, p.data() + m * padded, padded, vp + kv * padded * D, D, c, pairs,
                                   total.data() + m, od + ((b * T + first + m) * H + h) * D, H * D);
      }
    }
  });
  return out.transpose(1, 2);
#else
  TORCH_CHECK(false, "prompt_attention needs an x86 CPU with AVX512-BF16");
  return {};
#endif
}

}  // namespace janus_kernels
