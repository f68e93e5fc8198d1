// Small per-token ops of a decode step on CPU: RoPE and KV append bit-identical to their torch
// references (vibekit/ops/rope.py apply_rope_ref, vibekit/ops/kv_append.py kv_append_ref): one
// call per layer instead of ten small torch ops with their index arithmetic and temporaries;
// RMSNorm and SiLU-and-mul with the math of their references (float32 inside, HF's order of
// casts) in one fixed summation order per row (not torch's bits: see rms_norm_rows).
// model_cpu.cpp includes this file (VIBEKIT_NO_MODULE) to run the same functions.
//
// Built with -ffp-contract=off so `a * b + c * d` rounds each product, as torch's separate
// mul / add kernels do. bfloat16 math follows torch's: every op computes in float and rounds
// its result to bfloat16 (round to nearest even).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
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
        // two branch-free halves (they vectorize): rotate_half(x)[i] is -x[i + D/2] for
        // i < D/2 and x[i - D/2] after
        if constexpr (BF16) {
          const uint16_t* x = static_cast<const uint16_t*>(xp) + off;
          uint16_t* o = static_cast<uint16_t*>(outp) + oo;
          for (int64_t i = 0; i < half; ++i) {
            const float a = round_bf16(bf16_to_f32(x[i]) * round_bf16(c[i]));
            const float b = round_bf16(-bf16_to_f32(x[i + half]) * round_bf16(s[i]));
            o[i] = f32_to_bf16(a + b);
          }
          for (int64_t i = half; i < D; ++i) {
            const float a = round_bf16(bf16_to_f32(x[i]) * round_bf16(c[i]));
            const float b = round_bf16(bf16_to_f32(x[i - half]) * round_bf16(s[i]));
            o[i] = f32_to_bf16(a + b);
          }
        } else {
          const float* x = static_cast<const float*>(xp) + off;
          float* o = static_cast<float*>(outp) + oo;
          for (int64_t i = 0; i < half; ++i) o[i] = x[i] * c[i] + -x[i + half] * s[i];
          for (int64_t i = half; i < D; ++i) o[i] = x[i] * c[i] + x[i - half] * s[i];
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

// y[r] = weight * bf16/f32(x[r] * rsqrt(mean(x[r]^2) + eps)), as rms_norm_ref computes it (float32
// inside, the normalized row cast to the input dtype before the scale). The sum of squares runs
// in 16 interleaved partial sums (lane j takes elements j, j + 16, ...) added by a fixed tree:
// one order per row whatever the number of rows or threads (batch invariance), vectorizable
// without reassociation.
template <bool BF16>
void rms_norm_rows(const void* xp, int64_t ldx, int64_t R, int64_t D, const void* wp, float eps,
                   void* outp) {
  at::parallel_for(0, R, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float acc[16] = {0.0f};
      int64_t i = 0;
      if constexpr (BF16) {
        const uint16_t* x = static_cast<const uint16_t*>(xp) + r * ldx;
        for (; i + 16 <= D; i += 16)
          for (int j = 0; j < 16; ++j) {
            const float v = bf16_to_f32(x[i + j]);
            acc[j] += v * v;
          }
        for (int j = 0; i + j < D; ++j) {
          const float v = bf16_to_f32(x[i + j]);
          acc[j] += v * v;
        }
      } else {
        const float* x = static_cast<const float*>(xp) + r * ldx;
        for (; i + 16 <= D; i += 16)
          for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * x[i + j];
        for (int j = 0; i + j < D; ++j) acc[j] += x[i + j] * x[i + j];
      }
      for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
      const float inv = 1.0f / std::sqrt(acc[0] / static_cast<float>(D) + eps);
      if constexpr (BF16) {
        const uint16_t* x = static_cast<const uint16_t*>(xp) + r * ldx;
        const uint16_t* w = static_cast<const uint16_t*>(wp);
        uint16_t* y = static_cast<uint16_t*>(outp) + r * D;
        for (int64_t k = 0; k < D; ++k)
          y[k] = f32_to_bf16(bf16_to_f32(w[k]) * round_bf16(bf16_to_f32(x[k]) * inv));
      } else {
        const float* x = static_cast<const float*>(xp) + r * ldx;
        const float* w = static_cast<const float*>(wp);
        float* y = static_cast<float*>(outp) + r * D;
        for (int64_t k = 0; k < D; ++k) y[k] = w[k] * (x[k] * inv);
      }
    }
  });
}

// exp(x) in float32 within ~1 ulp (Cephes' expf: x = n ln2 + r, a degree-7 polynomial in r,
// times 2^n), written as plain branch-free float / int operations so the compiler vectorizes the
// loops that call it, and so it gives the same bits scalar or vectorized, with or without
// AVX512 (the per-op kernel and the one-call forward must agree bit for bit). std::exp is a
// scalar libm call: ~20x slower here. Inputs are clamped to [-87.3, 88.7] (no infinities or
// subnormals; silu's g / (1 + exp(-g)) is then g or a float below 1e-36 at the ends).
inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : x;  // (a NaN stays NaN: its comparisons are false)
  x = x > 88.7f ? 88.7f : x;
  // n = round-to-nearest-even(x / ln2): adding and subtracting 1.5 * 2^23 rounds exactly
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = (p * (r * r) + r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 128)
  float scale;
  std::memcpy(&scale, &bits, 4);
  return e * scale;
}

// out[r, i] = silu(g) * u for the row [g | u] (2I values): silu(g) = g / (1 + exp(-g)) in float
// and, for bfloat16, rounded before the product (F.silu, then the mul, as silu_and_mul_ref).
template <bool BF16>
void silu_mul_rows(const void* xp, int64_t ldx, int64_t R, int64_t I, void* outp) {
  at::parallel_for(0, R, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if constexpr (BF16) {
        const uint16_t* g = static_cast<const uint16_t*>(xp) + r * ldx;
        const uint16_t* u = g + I;
        uint16_t* y = static_cast<uint16_t*>(outp) + r * I;
        for (int64_t k = 0; k < I; ++k) {
          const float gv = bf16_to_f32(g[k]);
          const float s = round_bf16(gv / (1.0f + exp_approx(-gv)));
          y[k] = f32_to_bf16(s * bf16_to_f32(u[k]));
        }
      } else {
        const float* g = static_cast<const float*>(xp) + r * ldx;
        const float* u = g + I;
        float* y = static_cast<float*>(outp) + r * I;
        for (int64_t k = 0; k < I; ++k) y[k] = (g[k] / (1.0f + exp_approx(-g[k]))) * u[k];
      }
    }
  });
}

}  // namespace

// x [R, D] (unit last stride, any row stride), weight [D] of x's dtype (float32 or bfloat16).
// Returns [R, D] contiguous in x's dtype.
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "rms_norm: x must be [R, D] with a unit last stride");
  TORCH_CHECK(weight.dim() == 1 && weight.is_contiguous() && weight.size(0) == x.size(1) &&
              weight.scalar_type() == x.scalar_type(), "rms_norm: weight must be [D] of x's dtype");
  const int64_t R = x.size(0), D = x.size(1);
  auto out = torch::empty({R, D}, x.options());
  if (R == 0) return out;
  if (x.scalar_type() == torch::kBFloat16) {
    rms_norm_rows<true>(x.data_ptr(), x.stride(0), R, D, weight.data_ptr(), static_cast<float>(eps),
                        out.data_ptr());
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kFloat, "rms_norm: x must be float32 or bfloat16");
    rms_norm_rows<false>(x.data_ptr(), x.stride(0), R, D, weight.data_ptr(), static_cast<float>(eps),
                         out.data_ptr());
  }
  return out;
}

// x [R, 2I] = [gate | up] (unit last stride, any row stride), float32 or bfloat16 -> [R, I].
torch::Tensor silu_and_mul(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1 && x.size(1) % 2 == 0,
              "silu_and_mul: x must be [R, 2I] with a unit last stride");
  const int64_t R = x.size(0), I = x.size(1) / 2;
  auto out = torch::empty({R, I}, x.options());
  if (R == 0) return out;
  if (x.scalar_type() == torch::kBFloat16) {
    silu_mul_rows<true>(x.data_ptr(), x.stride(0), R, I, out.data_ptr());
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kFloat, "silu_and_mul: x must be float32 or bfloat16");
    silu_mul_rows<false>(x.data_ptr(), x.stride(0), R, I, out.data_ptr());
  }
  return out;
}

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

#ifndef VIBEKIT_NO_MODULE
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("apply_rope", &apply_rope, "rotate-half RoPE of q and k (bit-identical to apply_rope_ref)");
  m.def("kv_append", &kv_append, "scatter k, v rows into their page slots");
  m.def("rms_norm", &rms_norm, "RMSNorm of rows (float32 inside, one summation order per row)");
  m.def("silu_and_mul", &silu_and_mul, "silu(gate) * up of [gate | up] rows");
}
#endif
