// Skinny GEMM / GEMV for decode on AVX512 CPUs: y[M, N] = x[M, K] @ W[N, K]^T (+ bias).
//
// Weights are repacked once (vibekit/ops/linear.py does the packing in torch) into groups of
// 64 output channels, so one k step of a group is 4 zmm registers read from one stream:
//   fp32: [N/64][K][64]            float
//   bf16: [N/64][K/2][64][2]       bfloat16 pairs for vdpbf16ps (K padded to even with zeros)
//   int8: [N/64][K][64]            int8, per-output-channel fp32 scales [N/64 * 64]
//   w8a8: [N/64][K/4][64][4]       int8 quads for vpdpbusd (K padded to a multiple of 4 with
//                                  zeros), per-output-channel fp32 scales, and comp[n] =
//                                  128 * sum_k W[n, k] (int32); activations are quantized per
//                                  row at run time (packed_linear_w8a8 below)
//
// Built with -ffp-contract=off: only the explicit fmadd intrinsics fuse, so a tile of any height
// rounds the same way.
// NOTE (batch invariance): every output element is one fp32 accumulator that starts at 0 and
// takes k = 0, 1, ..., K-1 in order (bf16: pairs (0,1), (2,3), ... by vdpbf16ps), then the
// scale (int8) and the bias. Threads split output groups only and row tiles only choose how
// many rows share a weight load, so a row's result does not depend on M or the thread count.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include "avx2_shim.h"  // AVX2 CPUs: the intrinsics below on 256-bit halves (empty on AVX512)
#include "avx512_shim.h"  // AVX512 CPUs without AVX512_BF16 / VNNI: those instructions emulated
#include <cstdint>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kGroup = 64;  // output channels per packed group (4 x 16 fp32 lanes)
#ifdef __AVX512F__
constexpr int kMaxRows = 6;     // rows per register tile: 6 x 4 accumulators + 4 weights
#else
constexpr int kMaxRows = 2;     // AVX2: 16 ymm registers hold 8 accumulators per row
#endif

enum Kind { kF32 = 0, kBF16 = 1, kI8 = 2 };

// Software prefetch of the weight stream, kPrefetchBytes ahead of the loads. A group's weights
// are one sequential stream, but with the hardware prefetchers alone the bf16 and int8 loops
// (more instructions per byte than float32's, so fewer loads in flight) read 55-85% of the
// bandwidth on an Ice Lake-class VM; 2 KB ahead brought both to it (2-8 KB swept:
// benchmarks/RESULTS.md; the AVX2 build prefetches the same, not measured on an AVX2 CPU).
// A prefetch never faults, so running past the end is harmless.
constexpr int64_t kPrefetchBytes = 2048;
template <int kLines>
inline void prefetch_ahead(const void* p) {
  const char* c = static_cast<const char*>(p) + kPrefetchBytes;
  for (int l = 0; l < kLines; ++l) _mm_prefetch(c + 64 * l, _MM_HINT_T0);
}

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename XT>
inline float load_x(const XT* p);
template <>
inline float load_x<float>(const float* p) { return *p; }
template <>
inline float load_x<uint16_t>(const uint16_t* p) { return bf16_to_f32(*p); }

// acc[i][j] += sum_k x[i, k] * W[group, k, 16 j .. 16 j + 15], k in order.
template <typename XT, int MR>
inline void tile_f32(const XT* x, int64_t ldx, int64_t K, const float* w, __m512 (&acc)[MR][4]) {
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = w + k * kGroup;
    prefetch_ahead<4>(wk);
    __m512 w0 = _mm512_loadu_ps(wk), w1 = _mm512_loadu_ps(wk + 16);
    __m512 w2 = _mm512_loadu_ps(wk + 32), w3 = _mm512_loadu_ps(wk + 48);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      __m512 xb = _mm512_set1_ps(load_x<XT>(x + i * ldx + k));
      acc[i][0] = _mm512_fmadd_ps(w0, xb, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(w1, xb, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(w2, xb, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(w3, xb, acc[i][3]);
    }
  }
}

template <typename XT, int MR>
inline void tile_i8(const XT* x, int64_t ldx, int64_t K, const int8_t* w, __m512 (&acc)[MR][4]) {
  for (int64_t k = 0; k < K; ++k) {
    const int8_t* wk = w + k * kGroup;
    prefetch_ahead<1>(wk);
    __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)wk)));
    __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(wk + 16))));
    __m512 w2 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(wk + 32))));
    __m512 w3 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(wk + 48))));
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      __m512 xb = _mm512_set1_ps(load_x<XT>(x + i * ldx + k));
      acc[i][0] = _mm512_fmadd_ps(w0, xb, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(w1, xb, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(w2, xb, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(w3, xb, acc[i][3]);
    }
  }
}

// bf16 x bf16 -> fp32 with vdpbf16ps over k pairs; K may be odd (the packed weight is padded
// with a zero column, the missing x element is taken as 0).
template <int MR>
inline void tile_bf16(const uint16_t* x, int64_t ldx, int64_t K, const uint16_t* w,
                      __m512 (&acc)[MR][4]) {
  const int64_t pairs = K / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* wp = w + p * 2 * kGroup;
    prefetch_ahead<4>(wp);
    __m512bh w0 = (__m512bh)_mm512_loadu_si512(wp);
    __m512bh w1 = (__m512bh)_mm512_loadu_si512(wp + 32);
    __m512bh w2 = (__m512bh)_mm512_loadu_si512(wp + 64);
    __m512bh w3 = (__m512bh)_mm512_loadu_si512(wp + 96);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      int32_t bits;
      std::memcpy(&bits, x + i * ldx + 2 * p, 4);
      __m512bh xb = (__m512bh)_mm512_set1_epi32(bits);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], w0, xb);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], w1, xb);
      acc[i][2] = _mm512_dpbf16_ps(acc[i][2], w2, xb);
      acc[i][3] = _mm512_dpbf16_ps(acc[i][3], w3, xb);
    }
  }
  if (K % 2) {
    const uint16_t* wp = w + pairs * 2 * kGroup;
    __m512bh w0 = (__m512bh)_mm512_loadu_si512(wp);
    __m512bh w1 = (__m512bh)_mm512_loadu_si512(wp + 32);
    __m512bh w2 = (__m512bh)_mm512_loadu_si512(wp + 64);
    __m512bh w3 = (__m512bh)_mm512_loadu_si512(wp + 96);
    for (int i = 0; i < MR; ++i) {
      int32_t bits = x[i * ldx + K - 1];  // (x[K-1], 0) as a bf16 pair
      __m512bh xb = (__m512bh)_mm512_set1_epi32(bits);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], w0, xb);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], w1, xb);
      acc[i][2] = _mm512_dpbf16_ps(acc[i][2], w2, xb);
      acc[i][3] = _mm512_dpbf16_ps(acc[i][3], w3, xb);
    }
  }
}

template <typename YT>
inline void store16(YT* y, __m512 v, __mmask16 mask);
template <>
inline void store16<float>(float* y, __m512 v, __mmask16 mask) { _mm512_mask_storeu_ps(y, mask, v); }
template <>
inline void store16<uint16_t>(uint16_t* y, __m512 v, __mmask16 mask) {
  __m256i h = (__m256i)_mm512_cvtneps_pbh(v);  // round to nearest even, like torch
  _mm256_mask_storeu_epi16(y, mask, h);
}

template <typename XT, int MR>
void run_tile(int kind, const XT* x, int64_t ldx, int64_t K, int64_t N, const void* wg,
              const float* scale, const float* bias, XT* y, int64_t ldy, int64_t n0) {
  __m512 acc[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  if (kind == kF32) {
    tile_f32<XT, MR>(x, ldx, K, static_cast<const float*>(wg), acc);
  } else if (kind == kI8) {
    tile_i8<XT, MR>(x, ldx, K, static_cast<const int8_t*>(wg), acc);
  } else {
    if constexpr (std::is_same_v<XT, uint16_t>) {
      tile_bf16<MR>(x, ldx, K, static_cast<const uint16_t*>(wg), acc);
    }
  }
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + 16 * j;
    if (n >= N) break;
    const int64_t valid = std::min<int64_t>(16, N - n);
    const __mmask16 mask = valid == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << valid) - 1);
    __m512 s = scale ? _mm512_loadu_ps(scale + n) : _mm512_set1_ps(1.0f);
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n) : _mm512_setzero_ps();
    for (int i = 0; i < MR; ++i) {
      __m512 v = acc[i][j];
      if (scale) v = _mm512_mul_ps(v, s);
      if (bias) v = _mm512_add_ps(v, b);
      store16<XT>(y + i * ldy + n, v, mask);
    }
  }
}

template <typename XT>
void run(int kind, const XT* x, int64_t M, int64_t K, int64_t N, const uint8_t* w,
         int64_t group_bytes, const float* scale, const float* bias, XT* y) {
  const int64_t groups = (N + kGroup - 1) / kGroup;
  // Small grain: a decode matrix has only 9..768 groups and two threads must both get work.
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const void* wg = w + g * group_bytes;
      const int64_t n0 = g * kGroup;
      int64_t m = 0;
      for (; m + kMaxRows <= M; m += kMaxRows)
        run_tile<XT, kMaxRows>(kind, x + m * K, K, K, N, wg, scale, bias, y + m * N, N, n0);
      const XT* xm = x + m * K;
      XT* ym = y + m * N;
      switch (M - m) {
        case 1: run_tile<XT, 1>(kind, xm, K, K, N, wg, scale, bias, ym, N, n0); break;
        case 2: run_tile<XT, 2>(kind, xm, K, K, N, wg, scale, bias, ym, N, n0); break;
        case 3: run_tile<XT, 3>(kind, xm, K, K, N, wg, scale, bias, ym, N, n0); break;
        case 4: run_tile<XT, 4>(kind, xm, K, K, N, wg, scale, bias, ym, N, n0); break;
        case 5: run_tile<XT, 5>(kind, xm, K, K, N, wg, scale, bias, ym, N, n0); break;
        default: break;
      }
    }
  });
}

// ---- w8a8 (the Q8_0-like path: int8 weights x int8 activations, VNNI) ----------------------
// x row i is quantized symmetrically: s_i = max_k |x[i, k]| / 127 (1 for an all-zero row),
// q[i, k] = nearbyint(x[i, k] / s_i) in [-127, 127] (round half to even), stored as q + 128
// (unsigned, for vpdpbusd). Each output is the exact int32 sum_k (q + 128) * W minus comp[n]
// (= sum_k q * W), converted to float and scaled by (s_i * scale[n]), then + bias. Integer sums
// are exact in any order, and the rest is per element: a row's result depends on that row only.

template <typename XT>
void quantize_rows(const XT* x, int64_t M, int64_t K, int64_t K4, uint8_t* xq, float* sx) {
  at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const XT* xr = x + m * K;
      float amax = 0.0f;
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(load_x<XT>(xr + k)));
      const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
      sx[m] = s;
      uint8_t* q = xq + m * K4 * 4;
      for (int64_t k = 0; k < K; ++k) {
        float v = std::nearbyint(load_x<XT>(xr + k) / s);
        v = std::min(127.0f, std::max(-127.0f, v));
        q[k] = static_cast<uint8_t>(static_cast<int>(v) + 128);
      }
      for (int64_t k = K; k < K4 * 4; ++k) q[k] = 128;  // weights are 0 there
    }
  });
}

template <typename XT, int MR>
void run_tile_w8a8(const uint8_t* xq, int64_t ldq, const float* sx, int64_t K4, int64_t N,
                   const int8_t* wg, const float* scale, const int32_t* comp, const float* bias,
                   XT* y, int64_t ldy, int64_t n0) {
  __m512i acc[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_si512();
  for (int64_t p = 0; p < K4; ++p) {
    const int8_t* wp = wg + p * 4 * kGroup;
    prefetch_ahead<4>(wp);
    __m512i w0 = _mm512_loadu_si512(wp), w1 = _mm512_loadu_si512(wp + 64);
    __m512i w2 = _mm512_loadu_si512(wp + 128), w3 = _mm512_loadu_si512(wp + 192);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      int32_t bits;
      std::memcpy(&bits, xq + i * ldq + 4 * p, 4);
      __m512i xb = _mm512_set1_epi32(bits);
      acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], xb, w0);
      acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], xb, w1);
      acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], xb, w2);
      acc[i][3] = _mm512_dpbusd_epi32(acc[i][3], xb, w3);
    }
  }
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + 16 * j;
    if (n >= N) break;
    const int64_t valid = std::min<int64_t>(16, N - n);
    const __mmask16 mask = valid == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << valid) - 1);
    __m512 s = _mm512_loadu_ps(scale + n);
    __m512i c = _mm512_loadu_si512(comp + n);
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n) : _mm512_setzero_ps();
    for (int i = 0; i < MR; ++i) {
      __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][j], c));
      v = _mm512_mul_ps(v, _mm512_mul_ps(_mm512_set1_ps(sx[i]), s));
      if (bias) v = _mm512_add_ps(v, b);
      store16<XT>(y + i * ldy + n, v, mask);
    }
  }
}

template <typename XT>
void run_w8a8(const XT* x, int64_t M, int64_t K, int64_t N, const int8_t* w, const float* scale,
              const int32_t* comp, const float* bias, XT* y) {
  const int64_t K4 = (K + 3) / 4;
  std::vector<uint8_t> xq(static_cast<size_t>(M * K4 * 4));
  std::vector<float> sx(static_cast<size_t>(M));
  quantize_rows<XT>(x, M, K, K4, xq.data(), sx.data());
  const int64_t groups = (N + kGroup - 1) / kGroup;
  const int64_t ldq = K4 * 4;
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int8_t* wg = w + g * K4 * 4 * kGroup;
      const int64_t n0 = g * kGroup;
      int64_t m = 0;
      for (; m + kMaxRows <= M; m += kMaxRows)
        run_tile_w8a8<XT, kMaxRows>(xq.data() + m * ldq, ldq, sx.data() + m, K4, N, wg, scale,
                                    comp, bias, y + m * N, N, n0);
      const uint8_t* qm = xq.data() + m * ldq;
      const float* sm = sx.data() + m;
      XT* ym = y + m * N;
      switch (M - m) {
        case 1: run_tile_w8a8<XT, 1>(qm, ldq, sm, K4, N, wg, scale, comp, bias, ym, N, n0); break;
        case 2: run_tile_w8a8<XT, 2>(qm, ldq, sm, K4, N, wg, scale, comp, bias, ym, N, n0); break;
        case 3: run_tile_w8a8<XT, 3>(qm, ldq, sm, K4, N, wg, scale, comp, bias, ym, N, n0); break;
        case 4: run_tile_w8a8<XT, 4>(qm, ldq, sm, K4, N, wg, scale, comp, bias, ym, N, n0); break;
        case 5: run_tile_w8a8<XT, 5>(qm, ldq, sm, K4, N, wg, scale, comp, bias, ym, N, n0); break;
        default: break;
      }
    }
  });
}

}  // namespace

// x [M, K] (float32 or bfloat16, contiguous), packed weight (see the layout above),
// kind 0 fp32 / 1 bf16 / 2 int8, scale [N/64*64] float32 or empty, bias [N] float32 or empty.
// Returns y [M, N] in x's dtype. Shapes and dtypes are checked by the Python launcher too.
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor packed, int64_t kind, int64_t N,
                            torch::Tensor scale, torch::Tensor bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(), "x must be [M, K] contiguous on CPU");
  TORCH_CHECK(packed.is_contiguous() && packed.dim() >= 3, "packed weight must be contiguous");
  const int64_t M = x.size(0), K = x.size(1);
  const int64_t groups = (N + kGroup - 1) / kGroup;
  TORCH_CHECK(packed.size(0) == groups, "packed weight has ", packed.size(0), " groups; N=", N,
              " needs ", groups);
  const int64_t group_bytes = packed.stride(0) * packed.element_size();
  const float* sp = nullptr;
  const float* bp = nullptr;
  if (scale.numel()) {
    TORCH_CHECK(scale.scalar_type() == torch::kFloat && scale.numel() == groups * kGroup, "bad scale");
    sp = scale.data_ptr<float>();
  }
  if (bias.numel()) {
    TORCH_CHECK(bias.scalar_type() == torch::kFloat && bias.numel() == N, "bad bias");
    bp = bias.data_ptr<float>();
  }
  if (kind == kF32) {
    TORCH_CHECK(packed.scalar_type() == torch::kFloat && packed.size(1) == K, "fp32 packed weight mismatch");
    TORCH_CHECK(x.scalar_type() == torch::kFloat, "fp32 weights need float32 x");
  } else if (kind == kBF16) {
    TORCH_CHECK(packed.scalar_type() == torch::kBFloat16 && packed.size(1) == (K + 1) / 2,
                "bf16 packed weight mismatch");
    TORCH_CHECK(x.scalar_type() == torch::kBFloat16, "bf16 weights need bfloat16 x");
  } else if (kind == kI8) {
    TORCH_CHECK(packed.scalar_type() == torch::kChar && packed.size(1) == K && sp, "int8 packed weight mismatch");
  } else {
    TORCH_CHECK(false, "unknown kind ", kind);
  }
  auto y = torch::empty({M, N}, x.options());
  if (M == 0) return y;
  const uint8_t* wp = static_cast<const uint8_t*>(packed.data_ptr());
  if (x.scalar_type() == torch::kFloat) {
    TORCH_CHECK(kind != kBF16, "fp32 x with bf16 weights");
    run<float>(kind, x.data_ptr<float>(), M, K, N, wp, group_bytes, sp, bp, y.data_ptr<float>());
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kBFloat16, "x must be float32 or bfloat16");
    run<uint16_t>(kind, reinterpret_cast<const uint16_t*>(x.data_ptr()), M, K, N, wp, group_bytes,
                  sp, bp, reinterpret_cast<uint16_t*>(y.data_ptr()));
  }
  return y;
}

// x [M, K] float32 or bfloat16; packed int8 [N/64, K/4, 64, 4]; scale [N/64*64] float32;
// comp [N/64*64] int32; bias [N] float32 or empty. Returns y [M, N] in x's dtype.
torch::Tensor packed_linear_w8a8(torch::Tensor x, torch::Tensor packed, int64_t N,
                                 torch::Tensor scale, torch::Tensor comp, torch::Tensor bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(), "x must be [M, K] contiguous on CPU");
  const int64_t M = x.size(0), K = x.size(1);
  const int64_t groups = (N + kGroup - 1) / kGroup, K4 = (K + 3) / 4;
  TORCH_CHECK(K <= 32768, "w8a8: K=", K, " would overflow the int32 sums (at most 32768)");
  TORCH_CHECK(packed.is_contiguous() && packed.scalar_type() == torch::kChar && packed.dim() == 4 &&
              packed.size(0) == groups && packed.size(1) == K4 && packed.size(2) == kGroup &&
              packed.size(3) == 4, "w8a8 packed weight mismatch");
  TORCH_CHECK(scale.scalar_type() == torch::kFloat && scale.numel() == groups * kGroup, "bad scale");
  TORCH_CHECK(comp.scalar_type() == torch::kInt && comp.numel() == groups * kGroup, "bad comp");
  const float* bp = nullptr;
  if (bias.numel()) {
    TORCH_CHECK(bias.scalar_type() == torch::kFloat && bias.numel() == N, "bad bias");
    bp = bias.data_ptr<float>();
  }
  auto y = torch::empty({M, N}, x.options());
  if (M == 0) return y;
  const int8_t* wp = packed.data_ptr<int8_t>();
  if (x.scalar_type() == torch::kFloat) {
    run_w8a8<float>(x.data_ptr<float>(), M, K, N, wp, scale.data_ptr<float>(),
                    comp.data_ptr<int32_t>(), bp, y.data_ptr<float>());
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kBFloat16, "x must be float32 or bfloat16");
    run_w8a8<uint16_t>(reinterpret_cast<const uint16_t*>(x.data_ptr()), M, K, N, wp,
                       scale.data_ptr<float>(), comp.data_ptr<int32_t>(), bp,
                       reinterpret_cast<uint16_t*>(y.data_ptr()));
  }
  return y;
}

#ifndef VIBEKIT_NO_MODULE  // model_cpu.cpp includes this file for its functions
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("packed_linear", &packed_linear, "y = x @ W^T (+ bias) on a packed weight");
  m.def("packed_linear_w8a8", &packed_linear_w8a8,
        "y = x @ W^T (+ bias) with int8 weights and per-row int8 activations (VNNI)");
}
#endif
