// The two AVX512 extensions the kernels use, on AVX512 CPUs that lack them: AVX512_BF16
// (vdpbf16ps, vcvtneps2bf16: Intel's AVX512 servers before Cooper Lake / Sapphire Rapids, i.e.
// Skylake-SP, Cascade Lake, Ice Lake, lack it) and AVX512_VNNI (vpdpbusd: Skylake-SP lacks it). Each is emulated with AVX512F / AVX512BW instructions, per lane, giving
// the instruction's bits (exceptions below).
//
// Included after <immintrin.h> and avx2_shim.h by every kernel source. It is empty where the
// compiler targets the extension (-mavx512bf16 / -mavx512vnni) or does not target AVX512 at all
// (the AVX2 build: avx2_shim.h has its own forms), so those builds compile exactly what they
// compiled before this header existed. vibekit/ops/cpu_extension.py passes each extension's
// flag only where /proc/cpuinfo lists it.
//
// Exactness: dpbf16 is two roundings in the instruction's order (odd element, then even; a
// product of two bfloat16 is exact in float32, so each fmadd rounds once, as each += of the
// instruction does); the instruction treats denormal inputs as 0 and flushes denormal results,
// here they are kept. cvtneps_pbh rounds to nearest even with torch's NaN rule; the instruction
// flushes a denormal input to a signed 0, here it is rounded like torch does. dpbusd is exact
// integer arithmetic (4 u8 x s8 products per int32 lane; wraps on int32 overflow like the
// instruction).
#pragma once
#if defined(__AVX512F__)
#if !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__FMA__)
#error "the AVX512 build needs -mavx512f -mavx512bw -mavx512vl -mfma"
#endif
#include <immintrin.h>

namespace vk512x {

#define VK_INLINE static inline __attribute__((always_inline))

#if !defined(__AVX512BF16__)
// acc + a[2i+1] * b[2i+1], then + a[2i] * b[2i] (the instruction's order), float32 per lane i
VK_INLINE __m512 dpbf16_ps(__m512 acc, __m512bh a, __m512bh b) {
  const __m512i ai = (__m512i)a, bi = (__m512i)b;
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  acc = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(ai, hi)),
                        _mm512_castsi512_ps(_mm512_and_si512(bi, hi)), acc);
  return _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(ai, 16)),
                         _mm512_castsi512_ps(_mm512_slli_epi32(bi, 16)), acc);
}

// float32 -> bfloat16 (16 lanes -> 16 uint16), round to nearest even; NaN -> a quiet NaN
VK_INLINE __m256i cvtneps_pbh(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(
      _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, quiet));  // values < 2^16
}
#endif

#if !defined(__AVX512VNNI__)
// acc + sum_{q<4} u8(a.byte[4i+q]) * s8(b.byte[4i+q]) per int32 lane i (exact, as vpdpbusd)
VK_INLINE __m512i dpbusd_epi32(__m512i acc, __m512i a, __m512i b) {
  // even / odd bytes of each 16-bit word, widened: u8 zero-extended, s8 sign-extended
  const __m512i a_even = _mm512_and_si512(a, _mm512_set1_epi16(0x00FF));
  const __m512i a_odd = _mm512_srli_epi16(a, 8);
  const __m512i b_even = _mm512_srai_epi16(_mm512_slli_epi16(b, 8), 8);
  const __m512i b_odd = _mm512_srai_epi16(b, 8);
  // madd: per int32 lane, bytes (4i, 4i + 2), then (4i + 1, 4i + 3); products exact in int32
  acc = _mm512_add_epi32(acc, _mm512_madd_epi16(a_even, b_even));
  return _mm512_add_epi32(acc, _mm512_madd_epi16(a_odd, b_odd));
}
#endif

#undef VK_INLINE

}  // namespace vk512x

#if !defined(__AVX512BF16__)
#define _mm512_dpbf16_ps vk512x::dpbf16_ps
#define _mm512_cvtneps_pbh vk512x::cvtneps_pbh
#endif
#if !defined(__AVX512VNNI__)
#define _mm512_dpbusd_epi32 vk512x::dpbusd_epi32
#endif

#endif  // __AVX512F__
