// Attention of one query position over a KV cache (a decode step), in float32, written once over the
// architecture's float32 lanes (lanes.h: AVX2 on x86, NEON on ARM64).
#include "common.h"
#include "lanes.h"

namespace janus_kernels {
namespace {

// One query row against L keys and values (rows of D, D % 8 == 0, `row` elements apart): softmax(q k^T *
// scale) v in float32, written to out[D]. `scores` has room for L floats.
template <typename T>
void attend_one(const float* q, const T* k, const T* v, int64_t L, int64_t D, int64_t row, float scale,
                float* scores, float* out) {
  constexpr int64_t W = Lanes::kWidth;
  float top = -INFINITY;
  for (int64_t l = 0; l < L; ++l) {
    auto acc = Lanes::zero();
    for (int64_t d = 0; d < D; d += W) acc = Lanes::fma(Lanes::load(q + d), Lanes::widen(k + l * row + d), acc);
    scores[l] = Lanes::sum(acc) * scale;
    top = std::max(top, scores[l]);
  }
  float total = 0.f;
  for (int64_t l = 0; l < L; ++l) total += (scores[l] = std::exp(scores[l] - top));
  for (int64_t d = 0; d < D; ++d) out[d] = 0.f;
  for (int64_t l = 0; l < L; ++l) {
    const auto p = Lanes::splat(scores[l] / total);
    for (int64_t d = 0; d < D; d += W) Lanes::store(out + d, Lanes::fma(p, Lanes::widen(v + l * row + d), Lanes::load(out + d)));
  }
}

}  // namespace

// One decode step of attention: q [B, H, 1, D]; k, v [B, Hkv, L, D] with unit stride along D (views of a
// cache are fine); H a multiple of Hkv (grouped-query heads share their key/value head). Returns
// softmax(q k^T * scale) v as [B, H, 1, D] in q's dtype.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale) {
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && k.dim() == 4 && v.sizes() == k.sizes(), "shapes do not match");
  TORCH_CHECK(k.scalar_type() == v.scalar_type() && k.stride(3) == 1 && k.strides() == v.strides(),
              "keys and values must be laid out alike, with unit stride along D");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1), L = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(3) == D && D % 8 == 0 && H % Hkv == 0, "shapes do not match");
  const at::Tensor qf = q.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({B, H, 1, D}, qf.options());
  const float* qp = qf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = H / Hkv, sb = k.stride(0), sh = k.stride(1), row = k.stride(2);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(L);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, kv = (i % H) / group, offset = b * sb + kv * sh;
      if (k.scalar_type() == at::kBFloat16) {
        const auto* kp = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>()) + offset;
        const auto* vp = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>()) + offset;
        attend_one(qp + i * D, kp, vp, L, D, row, static_cast<float>(scale), scores.data(), op + i * D);
      } else {
        attend_one(qp + i * D, k.data_ptr<float>() + offset, v.data_ptr<float>() + offset, L, D, row,
                   static_cast<float>(scale), scores.data(), op + i * D);
      }
    }
  });
  return out.to(q.scalar_type());
}

}  // namespace janus_kernels
