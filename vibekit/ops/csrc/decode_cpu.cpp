// Small per-token ops of a decode step on CPU, bit-identical to their torch references
// (vibekit/ops/rope.py apply_rope_ref, vibekit/ops/kv_append.py kv_append_ref): one call per
// layer instead of ten small torch ops with their index arithmetic and temporaries.
//
// Built with -ffp-contract=off so `a * b + c * d` rounds each product, as torch's separate
// mul / add kernels do. bfloat16 math follows torch's: every op computes in float and rounds
// its result to bfloat16 (round to nearest even).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstdint>
#include <cstring>

namespace {

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// out[t, h, :] = x * cos + rotate_half(x) * sin, rotate_half(x) = (-x[D/2:], x[:D/2]).
template <bool BF16>
void rope_rows(const void* xp, int64_t st, int64_t sh, int64_t T, int64_t H, int64_t D,
               const int64_t* pos, const float* cos, const float* sin, void* outp) {
  const int64_t half = D / 2;
  at::parallel_for(0, T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* c = cos + pos[t] * D;
      const float* s = sin + pos[t] * D;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t off = t * st + h * sh;
        const int64_t oo = (t * H + h) * D;
        for (int64_t i = 0; i < D; ++i) {
          const int64_t j = i < half ? i + half : i - half;
          if constexpr (BF16) {
            const uint16_t* x = static_cast<const uint16_t*>(xp) + off;
            const float xi = bf16_to_f32(x[i]);
            const float ri = i < half ? -bf16_to_f32(x[j]) : bf16_to_f32(x[j]);
            const float a = round_bf16(xi * round_bf16(c[i]));
            const float b = round_bf16(ri * round_bf16(s[i]));
            static_cast<uint16_t*>(outp)[oo + i] = f32_to_bf16(a + b);
          } else {
            const float* x = static_cast<const float*>(xp) + off;
            const float ri = i < half ? -x[j] : x[j];
            const float a = x[i] * c[i];
            const float b = ri * s[i];
            static_cast<float*>(outp)[oo + i] = a + b;
          }
        }
      }
    }
  });
}

torch::Tensor rope_one(const torch::Tensor& x, const torch::Tensor& pos, const torch::Tensor& cos,
                       const torch::Tensor& sin) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "x must be [T, H, D] with contiguous heads");
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2);
  TORCH_CHECK(D % 2 == 0 && cos.size(1) == D && sin.size(1) == D, "rope tables must be [N, D]");
  auto out = torch::empty({T, H, D}, x.options());
  if (T == 0) return out;
  if (x.scalar_type() == torch::kBFloat16) {
    rope_rows<true>(x.data_ptr(), x.stride(0), x.stride(1), T, H, D, pos.data_ptr<int64_t>(),
                    cos.data_ptr<float>(), sin.data_ptr<float>(), out.data_ptr());
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kFloat, "rope: x must be float32 or bfloat16");
    rope_rows<false>(x.data_ptr(), x.stride(0), x.stride(1), T, H, D, pos.data_ptr<int64_t>(),
                     cos.data_ptr<float>(), sin.data_ptr<float>(), out.data_ptr());
  }
  return out;
}

}  // namespace

// q [T, Hq, D], k [T, Hk, D] (heads contiguous; T and head strides free, e.g. views of a fused
// qkv output), positions [T] int64 in [0, N), cos / sin [N, D] float32 contiguous.
std::vector<torch::Tensor> apply_rope(torch::Tensor q, torch::Tensor k, torch::Tensor positions,
                                      torch::Tensor cos, torch::Tensor sin) {
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), "rope: q and k dtypes differ");
  TORCH_CHECK(positions.scalar_type() == torch::kLong && positions.is_contiguous() &&
              positions.numel() == q.size(0) && k.size(0) == q.size(0), "rope: bad positions");
  TORCH_CHECK(cos.scalar_type() == torch::kFloat && sin.scalar_type() == torch::kFloat &&
              cos.is_contiguous() && sin.is_contiguous(), "rope: tables must be float32");
  if (positions.numel()) {
    const int64_t* p = positions.data_ptr<int64_t>();
    int64_t lo = p[0], hi = p[0];
    for (int64_t i = 1; i < positions.numel(); ++i) { lo = std::min(lo, p[i]); hi = std::max(hi, p[i]); }
    TORCH_CHECK(lo >= 0 && hi < cos.size(0), "rope: positions outside the table");
  }
  return {rope_one(q, positions, cos, sin), rope_one(k, positions, cos, sin)};
}

// k, v [T, Hk, D] (heads contiguous), caches [P, S, Hk, D] contiguous of the same dtype,
// slot_mapping [T] int64 (page * S + offset; negative: skip).
void kv_append(torch::Tensor k, torch::Tensor v, torch::Tensor k_cache, torch::Tensor v_cache,
               torch::Tensor slot_mapping) {
  TORCH_CHECK(k.dim() == 3 && v.dim() == 3 && k.stride(2) == 1 && v.stride(2) == 1 &&
              k.stride(1) == k.size(2) && v.stride(1) == v.size(2),
              "kv_append: k, v must be [T, Hk, D] with contiguous [Hk, D] rows");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dim() == 4,
              "kv_append: caches must be contiguous [P, S, Hk, D]");
  TORCH_CHECK(k.scalar_type() == k_cache.scalar_type() && v.scalar_type() == v_cache.scalar_type(),
              "kv_append: cache dtype differs from k / v");
  TORCH_CHECK(slot_mapping.scalar_type() == torch::kLong && slot_mapping.is_contiguous(),
              "kv_append: slot_mapping must be int64");
  const int64_t T = k.size(0);
  const int64_t row = k.size(1) * k.size(2);
  TORCH_CHECK(k_cache.size(2) * k_cache.size(3) == row, "kv_append: head shape mismatch");
  const int64_t slots = k_cache.size(0) * k_cache.size(1);
  const int64_t bytes = row * k.element_size();
  const int64_t* sm = slot_mapping.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(sm[t] < slots, "kv_append: slot ", sm[t], " outside the cache (", slots, ")");
  auto* kc = static_cast<char*>(k_cache.data_ptr());
  auto* vc = static_cast<char*>(v_cache.data_ptr());
  const auto* kp = static_cast<const char*>(k.data_ptr());
  const auto* vp = static_cast<const char*>(v.data_ptr());
  const int64_t ks = k.stride(0) * k.element_size(), vs = v.stride(0) * v.element_size();
  at::parallel_for(0, T, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      if (sm[t] < 0) continue;
      std::memcpy(kc + sm[t] * bytes, kp + t * ks, bytes);
      std::memcpy(vc + sm[t] * bytes, vp + t * vs, bytes);
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("apply_rope", &apply_rope, "rotate-half RoPE of q and k (bit-identical to apply_rope_ref)");
  m.def("kv_append", &kv_append, "scatter k, v rows into their page slots");
}
