// The linear kernel's ARM64 tiles (plugins/janus_plugins/cpu_kernels/neon.h) through linear.h's drivers, alone,
// against sums in double: float32, bfloat16 (widened, and through BFDOT) and packed int8 weights (widened, and
// through SDOT, which must give the widening tile's outputs bit for bit), 1-9 rows of x (full groups and every
// remainder), weight rows in full tiles and a remainder, several scale blocks, int8 sums at their largest; x's
// quantization to int16 for the int8 tiles (exact ties included); and the stores' rounding to bfloat16. Compiled
// for ARM64 and run under emulation by test_neon_tiles.py; prints one line per failed case and "N passed, M
// failed" last.
#include <cstdio>
#include <cstring>
#include <random>

#include "neon.h"

namespace jk = janus_kernels;

namespace {

const auto serial = [](int64_t n, const auto& body) { body(0, n); };

uint16_t to_bf16(float v) {  // truncation: the reference reads the same bits back
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return static_cast<uint16_t>(bits >> 16);
}
uint16_t nearest_bf16(float v) {  // round to nearest, ties to even (torch's rounding), finite v
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t rest = bits & 0xFFFF, half = 0x8000, kept = bits >> 16;
  return static_cast<uint16_t>(kept + (rest > half || (rest == half && (kept & 1))));
}

// A bfloat16 as the stores see c10::BFloat16: 16 bits, made from a float by rounding (for the tail).
struct Bf16 {
  uint16_t bits;
  Bf16() = default;
  explicit Bf16(float v) : bits(nearest_bf16(v)) {}
};
float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// The layout of packed.py's pack_int8: rows in groups of kTileRows, chunk by chunk; the last rows as they are.
std::vector<int8_t> pack(const std::vector<int8_t>& w, int64_t N, int64_t K) {
  std::vector<int8_t> out(w.size());
  const int64_t full = N / jk::kTileRows * jk::kTileRows;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t group = n / jk::kTileRows * jk::kTileRows, r = n % jk::kTileRows;
      int8_t* base = out.data() + group * K;
      const int64_t at = n < full ? jk::packed_at<jk::kTileRows>(base, r, k) - base : n * K + k - group * K;
      base[at] = w[n * K + k];
    }
  return out;
}

struct Tally {
  int passed = 0, failed = 0;
  void check(bool ok, const char* kind, int64_t M, int64_t N, int64_t K, double error, double bound) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAILED %s M=%lld N=%lld K=%lld: error %.3g > %.3g\n", kind, static_cast<long long>(M),
                  static_cast<long long>(N), static_cast<long long>(K), error, bound);
    }
  }
};

// The largest |y - exact| over the output, against `tolerance` times the largest sum of |products| of a row.
template <typename Exact>
void compare(Tally& tally, const char* kind, const std::vector<float>& y, int64_t M, int64_t N, int64_t K,
             double tolerance, const Exact& exact) {
  double worst = 0, scale = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const auto [value, magnitude] = exact(m, n);
      worst = std::max(worst, std::abs(y[m * N + n] - value));
      scale = std::max(scale, magnitude);
    }
  tally.check(worst <= tolerance * scale, kind, M, N, K, worst, tolerance * scale);
}

// quantize_rows' int16 x against one value at a time: max |x| of each block to 32767, rounded half to even.
void check_quantized(Tally& tally, const std::vector<float>& x, int64_t M, int64_t K, const std::vector<int16_t>& q,
                     const std::vector<float>& scale) {
  const int64_t blocks = (K + jk::kScaleBlock - 1) / jk::kScaleBlock;
  int64_t wrong = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = m * K + b * jk::kScaleBlock, end = m * K + std::min(K, (b + 1) * jk::kScaleBlock);
      float most = 0.f;
      for (int64_t i = begin; i < end; ++i) most = std::max(most, std::fabs(x[i]));
      const float inverse = most > 0.f ? 32767.f / most : 0.f;
      wrong += scale[m * blocks + b] != most / 32767.f;
      for (int64_t i = begin; i < end; ++i) wrong += q[i] != static_cast<int16_t>(std::nearbyint(x[i] * inverse));
    }
  tally.check(wrong == 0, "int16 x", M, 0, K, static_cast<double>(wrong), 0);
}

// The int8 tiles on quantized x and packed weights (`wq` unpacked) against sums in double, block by block (exact
// integer sums, one float rounding each): the widening tile, and the SDOT tile, which must match it exactly.
void check_int8(Tally& tally, const jk::Int16Rows& x, int64_t M, const std::vector<int8_t>& packed,
                const std::vector<int8_t>& wq, int64_t N) {
  const int64_t K = x.K;
  std::vector<float> y(M * N), y_dot(M * N);
  jk::matmul<jk::neon::Tiles>(x, M, packed.data(), N, y.data(), serial);
  compare(tally, "int8", y, M, N, K, 1e-6, [&](int64_t m, int64_t n) {
    double sum = 0, magnitude = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double term = static_cast<double>(x.data[m * K + k]) * wq[n * K + k] * x.scale[m * x.blocks + k / jk::kScaleBlock];
      sum += term;
      magnitude += std::abs(term);
    }
    return std::make_pair(sum, magnitude);
  });
  std::vector<int8_t> hi, lo;
  jk::matmul<jk::neon::Int8DotTiles>(jk::neon::split_bytes(x, M, hi, lo), M, packed.data(), N, y_dot.data(), serial);
  int64_t differ = 0;
  double worst = 0;
  for (int64_t i = 0; i < M * N; ++i) {
    differ += y_dot[i] != y[i];
    worst = std::max(worst, static_cast<double>(std::abs(y_dot[i] - y[i])));
  }
  tally.check(differ == 0, "int8 sdot", M, N, K, worst, 0);
}

}  // namespace

int main() {
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> byte(-127, 127);
  Tally tally;
  for (const int64_t K : {64, 576, 1536}) {
    for (const int64_t N : {4, 11}) {
      for (int64_t M = 1; M <= 9; ++M) {
        std::vector<float> x(M * K), wf(N * K);
        std::vector<uint16_t> wb(N * K);
        std::vector<int8_t> wq(N * K);
        for (auto& v : x) v = normal(rng);
        for (int64_t i = 0; i < N * K; ++i) {
          wf[i] = normal(rng);
          wb[i] = to_bf16(normal(rng));
          wq[i] = static_cast<int8_t>(byte(rng));
        }
        const jk::FloatRows rows{x.data(), K};
        std::vector<float> y(M * N);
        const auto dot = [&](auto weight) {
          return [&, weight](int64_t m, int64_t n) {
            double sum = 0, magnitude = 0;
            for (int64_t k = 0; k < K; ++k) {
              sum += static_cast<double>(x[m * K + k]) * weight(n * K + k);
              magnitude += std::abs(static_cast<double>(x[m * K + k]) * weight(n * K + k));
            }
            return std::make_pair(sum, magnitude);
          };
        };
        jk::matmul<jk::neon::Tiles>(rows, M, wf.data(), N, y.data(), serial);
        compare(tally, "float32", y, M, N, K, 1e-6, dot([&](int64_t i) { return static_cast<double>(wf[i]); }));
        jk::matmul<jk::neon::Tiles>(rows, M, wb.data(), N, y.data(), serial);
        compare(tally, "bfloat16", y, M, N, K, 1e-6, dot([&](int64_t i) { return static_cast<double>(from_bf16(wb[i])); }));

        // BFDOT: x rounded to bfloat16 as the module hands it; each bfdot rounds its sum to odd (Armv8.6), so the
        // bound is looser than the FMA tiles'.
        std::vector<uint16_t> xb(M * K);
        for (int64_t i = 0; i < M * K; ++i) xb[i] = nearest_bf16(x[i]);
        jk::matmul<jk::neon::Bf16DotTiles>(jk::Bf16Rows{xb.data(), K}, M, wb.data(), N, y.data(), serial);
        compare(tally, "bfloat16 bfdot", y, M, N, K, 1e-5, [&](int64_t m, int64_t n) {
          double sum = 0, magnitude = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double term = static_cast<double>(from_bf16(xb[m * K + k])) * from_bf16(wb[n * K + k]);
            sum += term;
            magnitude += std::abs(term);
          }
          return std::make_pair(sum, magnitude);
        });

        // int8: against the same int16 x in double, block by block (exact integer sums, one float rounding each).
        std::vector<int16_t> q;
        std::vector<float> q_scale;
        const jk::Int16Rows quantized = jk::quantize_rows<jk::neon::Lanes>(x.data(), M, K, q, q_scale);
        check_quantized(tally, x, M, K, q, q_scale);
        check_int8(tally, quantized, M, pack(wq, N, K), wq, N);
      }
    }
  }
  // int8 sums at their largest: every x at its block's maximum against weights of +-127 (a block's sum is
  // 512 * 32767 * 127, just below 2^31), of either sign.
  for (const int sign : {1, -1}) {
    const int64_t M = 3, N = 5, K = 3 * jk::kScaleBlock;
    std::vector<float> x(M * K, static_cast<float>(sign));
    std::vector<int8_t> wq(N * K, 127);
    for (int64_t k = 0; k < K; ++k) wq[K + k] = -127;  // the second row negative
    std::vector<int16_t> q;
    std::vector<float> q_scale;
    check_int8(tally, jk::quantize_rows<jk::neon::Lanes>(x.data(), M, K, q, q_scale), M, pack(wq, N, K), wq, N);
  }
  // x's quantization at exact ties: a block whose largest value is 32767 scales by exactly 1.
  std::vector<float> ties(64, 0.f);
  ties[0] = 32767.f;
  for (int64_t i = 1; i < 64; ++i) ties[i] = (i % 2 ? 1.f : -1.f) * (static_cast<float>(i / 2) + 0.5f);
  std::vector<int16_t> q;
  std::vector<float> q_scale;
  jk::quantize_rows<jk::neon::Lanes>(ties.data(), 1, 64, q, q_scale);
  check_quantized(tally, ties, 1, 64, q, q_scale);
  tally.check(q[1] == 0 && q[5] == 2 && q[7] == 4, "int16 ties to even", 1, 0, 64, 0, 0);  // 0.5, 2.5, 3.5

  // scale_and_store's bfloat16 stores: random values, exact ties (even and odd kept bits), a tail of 3.
  std::vector<float> values(4099);
  for (auto& v : values) v = normal(rng);
  for (uint32_t i = 0; i < 64; ++i) {
    const uint32_t tie = (0x3F800000u + (i << 16)) | 0x8000u;
    std::memcpy(&values[i], &tie, 4);
  }
  std::vector<Bf16> stored(values.size());
  jk::scale_and_store<jk::neon::Lanes>(values.data(), nullptr, nullptr, 1, static_cast<int64_t>(values.size()), stored.data());
  int64_t wrong = 0;
  for (size_t i = 0; i < values.size(); ++i) wrong += stored[i].bits != nearest_bf16(values[i]);
  tally.check(wrong == 0, "bfloat16 store", 1, static_cast<int64_t>(values.size()), 0, static_cast<double>(wrong), 0);

  std::printf("%d passed, %d failed\n", tally.passed, tally.failed);
  return tally.failed == 0 ? 0 : 1;
}
