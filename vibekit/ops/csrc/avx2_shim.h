// The AVX512 intrinsics the kernels in this folder use, on AVX2 + FMA + F16C CPUs (AMD Zen 1-3,
// Intel Haswell to Comet Lake, most cloud VMs of those): each 512-bit value is a pair of 256-bit
// registers, and each intrinsic is the same per-lane IEEE operation on both halves.
//
// Included after <immintrin.h> by every kernel source. Where the compiler targets AVX512
// (__AVX512F__ defined) this header is empty, so the AVX512 builds compile exactly the code
// they compiled before it existed. Elsewhere it maps the names below to vk512::, by macros.
//
// Exactness: float add / sub / mul / min / max / fmadd / fnmadd / rounding / conversions are
// IEEE per lane, so they give the AVX512 instruction's bits; the integer ones are exact; the
// reductions use the order of GCC's _mm512_reduce_*_ps; scalef (used on integer exponents
// in [-149, 127]) rounds once, like the instruction. Two differ from the instruction on denormals
// only: dpbf16 (the instruction treats denormal inputs as 0 and flushes denormal results;
// here they are kept, otherwise the same two roundings in the same order) and cvtneps_pbh (the
// instruction flushes a denormal input to a signed 0; here it is rounded like torch does).
// Masked loads read only the lanes the mask names (vmaskmov for 32-bit lanes, a scalar copy
// for a partial 16-bit mask), so the tail of a buffer is never read past its end.
#pragma once
#ifndef __AVX512F__
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "avx2_shim.h needs -mavx2 -mfma -mf16c (or the AVX512 flags)"
#endif
#include <immintrin.h>
#include <cstdint>
#include <cstring>

namespace vk512 {

struct ps {  // 16 float32 lanes: lo = lanes 0..7, hi = lanes 8..15
  __m256 lo, hi;
};
struct si {  // 512 bits of integers, same halves
  __m256i lo, hi;
};
struct bh {  // 32 bfloat16 (pairs per 32-bit lane)
  __m256i lo, hi;
  bh() = default;
  bh(si v) : lo(v.lo), hi(v.hi) {}  // the kernels cast a loaded si512 to bh
};
using mask16 = uint16_t;

#define VK_INLINE static inline __attribute__((always_inline))

// lane i of the result is all-ones where bit i of m is set (i = 0..7 of lo, 8..15 of hi)
VK_INLINE __m256i lanes_lo(mask16 m) {
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m & 0xFF), bits), bits);
}
VK_INLINE __m256i lanes_hi(mask16 m) { return lanes_lo(static_cast<mask16>(m >> 8)); }

VK_INLINE ps set1_ps(float v) { return {_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
VK_INLINE ps setzero_ps() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
VK_INLINE si setzero_si512() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
VK_INLINE si set1_epi32(int v) { return {_mm256_set1_epi32(v), _mm256_set1_epi32(v)}; }
VK_INLINE si setr_epi32(int a0, int a1, int a2, int a3, int a4, int a5, int a6, int a7, int a8,
                        int a9, int a10, int a11, int a12, int a13, int a14, int a15) {
  return {_mm256_setr_epi32(a0, a1, a2, a3, a4, a5, a6, a7),
          _mm256_setr_epi32(a8, a9, a10, a11, a12, a13, a14, a15)};
}

VK_INLINE ps add_ps(ps a, ps b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
VK_INLINE ps sub_ps(ps a, ps b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
VK_INLINE ps mul_ps(ps a, ps b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
VK_INLINE ps max_ps(ps a, ps b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
VK_INLINE ps min_ps(ps a, ps b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
VK_INLINE ps fmadd_ps(ps a, ps b, ps c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
VK_INLINE ps fnmadd_ps(ps a, ps b, ps c) {
  return {_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)};
}
VK_INLINE si sub_epi32(si a, si b) {
  return {_mm256_sub_epi32(a.lo, b.lo), _mm256_sub_epi32(a.hi, b.hi)};
}
template <int kShift>
VK_INLINE si slli_epi32(si a) {
  return {_mm256_slli_epi32(a.lo, kShift), _mm256_slli_epi32(a.hi, kShift)};
}
VK_INLINE ps castsi512_ps(si a) { return {_mm256_castsi256_ps(a.lo), _mm256_castsi256_ps(a.hi)}; }
VK_INLINE ps cvtepi32_ps(si a) { return {_mm256_cvtepi32_ps(a.lo), _mm256_cvtepi32_ps(a.hi)}; }
VK_INLINE float cvtss_f32(ps a) { return _mm256_cvtss_f32(a.lo); }

VK_INLINE ps loadu_ps(const void* p) {
  const float* f = static_cast<const float*>(p);
  return {_mm256_loadu_ps(f), _mm256_loadu_ps(f + 8)};
}
VK_INLINE ps load_ps(const void* p) { return loadu_ps(p); }
VK_INLINE void storeu_ps(void* p, ps v) {
  float* f = static_cast<float*>(p);
  _mm256_storeu_ps(f, v.lo);
  _mm256_storeu_ps(f + 8, v.hi);
}
VK_INLINE void store_ps(void* p, ps v) { storeu_ps(p, v); }
VK_INLINE si loadu_si512(const void* p) {
  const __m256i* q = static_cast<const __m256i*>(p);
  return {_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1)};
}
VK_INLINE ps maskz_loadu_ps(mask16 m, const void* p) {
  const float* f = static_cast<const float*>(p);
  if (m == 0xFFFF) return {_mm256_loadu_ps(f), _mm256_loadu_ps(f + 8)};
  return {_mm256_maskload_ps(f, lanes_lo(m)), _mm256_maskload_ps(f + 8, lanes_hi(m))};
}
VK_INLINE void mask_storeu_ps(void* p, mask16 m, ps v) {
  float* f = static_cast<float*>(p);
  if (m == 0xFFFF) {
    _mm256_storeu_ps(f, v.lo);
    _mm256_storeu_ps(f + 8, v.hi);
    return;
  }
  _mm256_maskstore_ps(f, lanes_lo(m), v.lo);
  _mm256_maskstore_ps(f + 8, lanes_hi(m), v.hi);
}
VK_INLINE ps maskz_mov_ps(mask16 m, ps v) {
  return {_mm256_and_ps(_mm256_castsi256_ps(lanes_lo(m)), v.lo),
          _mm256_and_ps(_mm256_castsi256_ps(lanes_hi(m)), v.hi)};
}
VK_INLINE ps mask_mul_ps(ps src, mask16 m, ps a, ps b) {
  return {_mm256_blendv_ps(src.lo, _mm256_mul_ps(a.lo, b.lo), _mm256_castsi256_ps(lanes_lo(m))),
          _mm256_blendv_ps(src.hi, _mm256_mul_ps(a.hi, b.hi), _mm256_castsi256_ps(lanes_hi(m)))};
}

// 16-bit lanes with a 16-bit mask (AVX512BW + VL on ymm): the lanes the mask names, others 0
VK_INLINE __m256i maskz_loadu_epi16(mask16 m, const void* p) {
  if (m == 0xFFFF) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
  alignas(32) uint16_t buf[16] = {0};
  const uint16_t* q = static_cast<const uint16_t*>(p);
  for (int i = 0; i < 16; ++i)
    if (m >> i & 1) buf[i] = q[i];
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
}
VK_INLINE void mask_storeu_epi16(void* p, mask16 m, __m256i v) {
  if (m == 0xFFFF) {
    _mm256_storeu_si256(static_cast<__m256i*>(p), v);
    return;
  }
  alignas(32) uint16_t buf[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(buf), v);
  uint16_t* q = static_cast<uint16_t*>(p);
  for (int i = 0; i < 16; ++i)
    if (m >> i & 1) q[i] = buf[i];
}

VK_INLINE si cvtepu16_epi32(__m256i h) {
  return {_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)),
          _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1))};
}
VK_INLINE si cvtepi8_epi32(__m128i b) {
  return {_mm256_cvtepi8_epi32(b), _mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))};
}
VK_INLINE ps cvtph_ps(__m256i h) {
  return {_mm256_cvtph_ps(_mm256_castsi256_si128(h)),
          _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1))};
}
template <int kRounding>
VK_INLINE __m256i cvtps_ph(ps v) {
  return _mm256_setr_m128i(_mm256_cvtps_ph(v.lo, kRounding), _mm256_cvtps_ph(v.hi, kRounding));
}

// float32 -> bfloat16, round to nearest even; NaN -> a quiet NaN (torch's rule)
VK_INLINE __m256i bf16_round(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(r, quiet, nan);
}
VK_INLINE __m256i cvtneps_pbh(ps v) {
  // two x 8 dwords holding 16-bit values -> 16 uint16 in lane order
  const __m256i packed = _mm256_packus_epi32(bf16_round(v.lo), bf16_round(v.hi));
  return _mm256_permute4x64_epi64(packed, 0xD8);
}

// acc + a[2i+1] * b[2i+1], then + a[2i] * b[2i] (the instruction's order), float32 per lane i
VK_INLINE __m256 dpbf16_half(__m256 acc, __m256i a, __m256i b) {
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(a, hi_mask)),
                        _mm256_castsi256_ps(_mm256_and_si256(b, hi_mask)), acc);
  return _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(a, 16)),
                         _mm256_castsi256_ps(_mm256_slli_epi32(b, 16)), acc);
}
VK_INLINE ps dpbf16_ps(ps acc, bh a, bh b) {
  return {dpbf16_half(acc.lo, a.lo, b.lo), dpbf16_half(acc.hi, a.hi, b.hi)};
}

// acc + sum_{q<4} u8(a.byte[4i+q]) * s8(b.byte[4i+q]) per int32 lane i (exact, as vpdpbusd)
VK_INLINE __m256i dpbusd_half(__m256i acc, __m256i a, __m256i b) {
  const __m256i p0 = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(a)),
                                       _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b)));
  const __m256i p1 = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(a, 1)),
                                       _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b, 1)));
  // hadd within 128-bit halves gives lanes [0 1 4 5 | 2 3 6 7]; put them in order
  const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(p0, p1), 0xD8);
  return _mm256_add_epi32(acc, s);
}
VK_INLINE si dpbusd_epi32(si acc, si a, si b) {
  return {dpbusd_half(acc.lo, a.lo, b.lo), dpbusd_half(acc.hi, a.hi, b.hi)};
}

// 128-bit block k of v (k = 0..3) in the 256-bit pair layout: permute2f128 selector
template <int kImm>
VK_INLINE ps shuffle_f32x4(ps a, ps b) {
  // result blocks 0, 1 from a (blocks imm[1:0], imm[3:2]); blocks 2, 3 from b (imm[5:4], imm[7:6])
  constexpr int a0 = kImm & 3, a1 = (kImm >> 2) & 3, b0 = (kImm >> 4) & 3, b1 = (kImm >> 6) & 3;
  return {_mm256_permute2f128_ps(a.lo, a.hi, a0 | (a1 << 4)),
          _mm256_permute2f128_ps(b.lo, b.hi, b0 | (b1 << 4))};
}
template <int kImm>
VK_INLINE ps shuffle_ps(ps a, ps b) {
  return {_mm256_shuffle_ps(a.lo, b.lo, kImm), _mm256_shuffle_ps(a.hi, b.hi, kImm)};
}
VK_INLINE ps permutexvar_ps(si idx, ps v) {
  const __m256i seven = _mm256_set1_epi32(7);
  const __m256i from_hi_lo = _mm256_cmpgt_epi32(idx.lo, seven);
  const __m256i from_hi_hi = _mm256_cmpgt_epi32(idx.hi, seven);
  const __m256i i_lo = _mm256_and_si256(idx.lo, seven), i_hi = _mm256_and_si256(idx.hi, seven);
  return {_mm256_blendv_ps(_mm256_permutevar8x32_ps(v.lo, i_lo),
                           _mm256_permutevar8x32_ps(v.hi, i_lo),
                           _mm256_castsi256_ps(from_hi_lo)),
          _mm256_blendv_ps(_mm256_permutevar8x32_ps(v.lo, i_hi),
                           _mm256_permutevar8x32_ps(v.hi, i_hi),
                           _mm256_castsi256_ps(from_hi_hi))};
}

// GCC's _mm512_reduce_{add,max}_ps order: halves, then 128-bit halves, then (2,3,0,1), then 0+1
VK_INLINE float reduce_add_ps(ps v) {
  const __m256 t3 = _mm256_add_ps(v.hi, v.lo);
  const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
  const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtss_f32(t8) + _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, 1));
}
VK_INLINE float reduce_max_ps(ps v) {
  const __m256 t3 = _mm256_max_ps(v.hi, v.lo);
  const __m128 t6 = _mm_max_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
  const __m128 t8 = _mm_max_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
  const float a = _mm_cvtss_f32(t8), b = _mm_cvtss_f32(_mm_shuffle_ps(t8, t8, 1));
  return a > b ? a : b;
}

template <int kImm>
VK_INLINE ps roundscale_ps(ps v) {  // the kernels use scale 0 (imm[7:4] = 0): plain rounding
  static_assert((kImm >> 4) == 0, "roundscale with a scale is not emulated");
  return {_mm256_round_ps(v.lo, kImm & 0xF), _mm256_round_ps(v.hi, kImm & 0xF)};
}
// a * 2^n for integer-valued n in [-149, 127], rounded once: a * 2^(n - m) is exact (n - m in
// [-23, 0] and |a| ~ 1), then * 2^m with m = max(n, -126) rounds into the denormals if it must
VK_INLINE __m256 scalef_half(__m256 a, __m256 n) {
  const __m256 m = _mm256_max_ps(n, _mm256_set1_ps(-126.0f));
  auto pow2 = [](__m256 e) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(e), _mm256_set1_epi32(127)), 23));
  };
  return _mm256_mul_ps(_mm256_mul_ps(a, pow2(_mm256_sub_ps(n, m))), pow2(m));
}
VK_INLINE ps scalef_ps(ps a, ps n) { return {scalef_half(a.lo, n.lo), scalef_half(a.hi, n.hi)}; }

#undef VK_INLINE
}  // namespace vk512

#define __m512 vk512::ps
#define __m512i vk512::si
#define __m512bh vk512::bh
#define __mmask16 vk512::mask16
#define _mm512_set1_ps vk512::set1_ps
#define _mm512_setzero_ps vk512::setzero_ps
#define _mm512_setzero_si512 vk512::setzero_si512
#define _mm512_set1_epi32 vk512::set1_epi32
#define _mm512_setr_epi32 vk512::setr_epi32
#define _mm512_add_ps vk512::add_ps
#define _mm512_sub_ps vk512::sub_ps
#define _mm512_mul_ps vk512::mul_ps
#define _mm512_max_ps vk512::max_ps
#define _mm512_min_ps vk512::min_ps
#define _mm512_fmadd_ps vk512::fmadd_ps
#define _mm512_fnmadd_ps vk512::fnmadd_ps
#define _mm512_sub_epi32 vk512::sub_epi32
#undef _mm512_slli_epi32
#define _mm512_slli_epi32(a, n) vk512::slli_epi32<(n)>(a)
#define _mm512_castsi512_ps vk512::castsi512_ps
#define _mm512_cvtepi32_ps vk512::cvtepi32_ps
#define _mm512_cvtss_f32 vk512::cvtss_f32
#define _mm512_loadu_ps vk512::loadu_ps
#define _mm512_load_ps vk512::load_ps
#define _mm512_storeu_ps vk512::storeu_ps
#define _mm512_store_ps vk512::store_ps
#define _mm512_loadu_si512 vk512::loadu_si512
#define _mm512_maskz_loadu_ps vk512::maskz_loadu_ps
#define _mm512_mask_storeu_ps vk512::mask_storeu_ps
#define _mm512_maskz_mov_ps vk512::maskz_mov_ps
#define _mm512_mask_mul_ps vk512::mask_mul_ps
#define _mm256_maskz_loadu_epi16 vk512::maskz_loadu_epi16
#define _mm256_mask_storeu_epi16 vk512::mask_storeu_epi16
#define _mm512_cvtepu16_epi32 vk512::cvtepu16_epi32
#define _mm512_cvtepi8_epi32 vk512::cvtepi8_epi32
#define _mm512_cvtph_ps vk512::cvtph_ps
#undef _mm512_cvtps_ph
#define _mm512_cvtps_ph(v, r) vk512::cvtps_ph<(r)>(v)
#define _mm512_cvtneps_pbh vk512::cvtneps_pbh
#define _mm512_dpbf16_ps vk512::dpbf16_ps
#define _mm512_dpbusd_epi32 vk512::dpbusd_epi32
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4(a, b, imm) vk512::shuffle_f32x4<(imm)>(a, b)
#undef _mm512_shuffle_ps
#define _mm512_shuffle_ps(a, b, imm) vk512::shuffle_ps<(imm)>(a, b)
#define _mm512_permutexvar_ps vk512::permutexvar_ps
#define _mm512_reduce_add_ps vk512::reduce_add_ps
#define _mm512_reduce_max_ps vk512::reduce_max_ps
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps(v, imm) vk512::roundscale_ps<(imm)>(v)
#define _mm512_scalef_ps vk512::scalef_ps
#endif  // !__AVX512F__
