// Paged causal attention on AVX512 CPUs: one kernel for decode, verify blocks and ragged prefill,
// reading K/V straight from the pages (no gather).
//
// q [T, Hq, D] (float32, bfloat16 or float16, any token / head strides, unit dim stride),
// k_cache, v_cache [num_pages, page_size, Hk, D] (float32 or bfloat16, or float16 with a
// float16 q; contiguous),
// qo_indptr [B+1], page_table [B, P], kv_lens [B] (int32). Query i of sequence b sits at
// position kv_lens[b] - q_len_b + i and attends to KV positions 0..its own. Output [T, Hq, D]
// in q's dtype; every sum in float32.
//
// Built with -ffp-contract=off: only the explicit fmadd intrinsics fuse.
// NOTE (batch invariance): each (query token, qo head) is computed by one thread, alone, in one
// fixed order that depends only on its q vector and its absolute position p: the KV positions
// 0..p are split into chunks at absolute multiples of kChunk ([0, 32), [32, 64), ..., the last
// one cut at p), each chunk's scores are reduced to a chunk max and merged into the running
// (max, sum, acc) by the online softmax, chunk after chunk in order. Nothing depends on the
// number of sequences or query rows in the call, the thread count, the page size or where a
// prompt was split into prefill chunks, so the output of a row is bit-identical whether it is
// a decode row, one of k+1 verify rows, part of a prefill chunk or recomputed after preemption.
// The heads of a GQA group that share a KV head run in one thread over the same chunk of K / V,
// read (and converted to float32) once for all of them; each still runs alone the arithmetic
// above, and how a group is split among threads changes none of it.
#include <torch/extension.h>
#include <immintrin.h>
#include "avx2_shim.h"  // AVX2 CPUs: the intrinsics below on 256-bit halves (empty on AVX512)
#include "avx512_shim.h"  // AVX512 CPUs without AVX512_BF16 / VNNI: those instructions emulated
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace {

constexpr int kChunk = 32;   // KV positions per online-softmax chunk (2 x 16 lanes)
constexpr int kMaxVec = 16;  // head_dim <= 256

// exp(x) for x <= 0 (scores minus their running max), float32, ~2 ulp: 2^n * P(r) with
// r = x - n ln2 (Cephes' expf polynomial). Lanes below -103 give 0.
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

// 16 (or `mask` of them) elements at p as float32 lanes.
inline __m512 load16(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 load16(const uint16_t* p, __mmask16 mask) {
  __m256i h = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// float16 storage (a distinct type from bfloat16's uint16_t).
struct half_t {
  uint16_t bits;
};
inline __m512 load16(const half_t* p, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
}

inline void store16(float* p, __m512 v, __mmask16 mask) { _mm512_mask_storeu_ps(p, mask, v); }
inline void store16(half_t* p, __m512 v, __mmask16 mask) {
  _mm256_mask_storeu_epi16(p, mask, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline void store16(uint16_t* p, __m512 v, __mmask16 mask) {
  __m256i h = (__m256i)_mm512_cvtneps_pbh(v);  // round to nearest even, like torch
  _mm256_mask_storeu_epi16(p, mask, h);
}

// out[j] = sum of the 16 lanes of d[j], j = 0..15, by one fixed tree of shuffles and adds.
inline __m512 reduce16(__m512 (&d)[16]) {
  __m512 r[8], t[4], u[2];
  for (int i = 0; i < 8; ++i)  // 128-bit blocks: [d2i: 2 | d2i+1: 2]
    r[i] = _mm512_add_ps(_mm512_shuffle_f32x4(d[2 * i], d[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(d[2 * i], d[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)  // blocks [d4i, d4i+1, d4i+2, d4i+3], 4 lanes each
    t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(r[2 * i], r[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(r[2 * i], r[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)  // block b: [d8i+b: 2, d8i+b+4: 2]
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // block b: [db, db+4, db+8, db+12]
  const __m512 v = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, v);
}

struct Problem {
  int64_t num_tokens, num_seqs, num_qo_heads, num_kv_heads, head_dim, page_size, max_pages;
  int64_t q_stride_t, q_stride_h;
  float scale;
  const int32_t* qo_indptr;
  const int32_t* page_table;
  const int32_t* kv_lens;
};

// Heads per item at most (a larger GQA group is split into several items).
constexpr int kMaxHeads = 8;

// One query token and `nh` qo heads h0.. that share KV head `kv_head`: for each,
// out[D] = softmax(scale * q . K[0..p]) @ V[0..p]. Each chunk of K / V is read from the pages
// once for all of them (converted to float32 once, into an L1 scratch, when the cache is 16-bit),
// then every head runs on it exactly the arithmetic it would run alone: the same chunks, the same
// per-element loads and FMAs in the same order. NV = ceil(head_dim / 16) lane vectors per head.
// kShared false (one head): K / V converted as they are loaded, no scratch (same values).
template <typename QT, typename KT, int NV, bool kShared>
void attend_heads(const Problem& pb, const QT* q_t, const KT* k_cache, const KT* v_cache,
                  QT* out_t, int64_t seq, int64_t pos, int64_t kv_head, int64_t h0, int nh) {
  const int64_t D = pb.head_dim;
  constexpr int nv = NV;
  // K / V read straight from the cache (one head, or float32 KV); else via the float32 scratch
  constexpr bool kDirect = !kShared || std::is_same_v<KT, float>;
  const __mmask16 tail =
      (D % 16) ? (__mmask16)((1u << (D % 16)) - 1) : (__mmask16)0xFFFF;
  auto lane_mask = [&](int i) { return i == nv - 1 ? tail : (__mmask16)0xFFFF; };

  if constexpr (!kShared) nh = 1;  // a compile-time count: the state stays in registers
  __m512 acc[kMaxHeads][NV];
  float m[kMaxHeads], l[kMaxHeads];
  for (int g = 0; g < nh; ++g) {
    for (int i = 0; i < nv; ++i) acc[g][i] = _mm512_setzero_ps();
    m[g] = -std::numeric_limits<float>::infinity();
    l[g] = 0.0f;
  }
  const int32_t* pages = pb.page_table + seq * pb.max_pages;
  const int64_t row = pb.num_kv_heads * D;  // elements between consecutive KV slots
  const int64_t num_keys = pos + 1;
  const __m512 scale = _mm512_set1_ps(pb.scale);
  alignas(64) float s[kChunk];
  const KT* kp[kChunk];
  const KT* vp[kChunk];
  // 16-bit caches: the chunk's K and V as float32 (masked tail lanes 0, as a masked load gives)
  alignas(64) float kf[kDirect ? 1 : kChunk][NV * 16];
  alignas(64) float vf[kDirect ? 1 : kChunk][NV * 16];
  auto key = [&](int j, int i) {
    if constexpr (kDirect) return load16(kp[j] + 16 * i, lane_mask(i));
    else return _mm512_load_ps(kf[j] + 16 * i);
  };
  auto value = [&](int j, int i) {
    if constexpr (kDirect) return load16(vp[j] + 16 * i, lane_mask(i));
    else return _mm512_load_ps(vf[j] + 16 * i);
  };

  for (int64_t c0 = 0; c0 < num_keys; c0 += kChunk) {
    const int n = static_cast<int>(std::min<int64_t>(kChunk, num_keys - c0));
    int64_t page = c0 / pb.page_size, off = c0 % pb.page_size;  // walked, not divided
    for (int j = 0; j < n; ++j) {
      const int64_t slot = static_cast<int64_t>(pages[page]) * pb.page_size + off;
      kp[j] = k_cache + slot * row + kv_head * D;
      vp[j] = v_cache + slot * row + kv_head * D;
      if (++off == pb.page_size) off = 0, ++page;
    }
    // The next chunk's rows into L1 while this one is computed, from every page of it that
    // does not follow the one before it in memory: a page anywhere else in the pool is a jump
    // the hardware prefetcher does not see coming (a pool that has served many requests).
    const int64_t c1 = c0 + kChunk;
    if (c1 < num_keys) {
      const int nn = static_cast<int>(std::min<int64_t>(kChunk, num_keys - c1));
      const int64_t row_bytes = D * static_cast<int64_t>(sizeof(KT));
      int64_t pg = page, of = off;
      bool jump = pg == 0 || pages[pg] != pages[pg - 1] + 1;
      for (int j = 0; j < nn; ++j) {
        if (jump) {
          const int64_t slot = static_cast<int64_t>(pages[pg]) * pb.page_size + of;
          const char* kr = reinterpret_cast<const char*>(k_cache + slot * row + kv_head * D);
          const char* vr = reinterpret_cast<const char*>(v_cache + slot * row + kv_head * D);
          for (int64_t b = 0; b < row_bytes; b += 64) {
            _mm_prefetch(kr + b, _MM_HINT_T0);
            _mm_prefetch(vr + b, _MM_HINT_T0);
          }
        }
        if (++of == pb.page_size) {
          of = 0, ++pg;
          jump = j + 1 < nn && pages[pg] != pages[pg - 1] + 1;
        }
      }
    }
    if constexpr (!kDirect) {
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < nv; ++i) {
          _mm512_store_ps(kf[j] + 16 * i, load16(kp[j] + 16 * i, lane_mask(i)));
          _mm512_store_ps(vf[j] + 16 * i, load16(vp[j] + 16 * i, lane_mask(i)));
        }
    }
    const __mmask16 m0 = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? (__mmask16)0xFFFF
                         : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : (__mmask16)0;
    const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int g = 0; g < nh; ++g) {
      const QT* q = q_t + (h0 + g) * pb.q_stride_h;
      __m512 qv[NV];
      for (int i = 0; i < nv; ++i) qv[i] = load16(q + 16 * i, lane_mask(i));
      // Scores: per key one fp32 lane vector (d in order), 16 keys reduced together by a fixed
      // transpose-add tree; a key's sum depends only on its own lanes.
      for (int h = 0; h < 2; ++h) {
        const int j0 = 16 * h, nk = std::max(0, std::min(16, n - j0));
        if (nk == 0) {
          _mm512_store_ps(s + j0, _mm512_setzero_ps());
          continue;
        }
        __m512 d[16];
        for (int j = 0; j < 16; ++j) {
          if (j >= nk) {
            d[j] = _mm512_setzero_ps();
            continue;
          }
          __m512 a = _mm512_mul_ps(qv[0], key(j0 + j, 0));
          for (int i = 1; i < nv; ++i) a = _mm512_fmadd_ps(qv[i], key(j0 + j, i), a);
          d[j] = a;
        }
        _mm512_store_ps(s + j0, reduce16(d));
      }
      const __m512 s0 = _mm512_mask_mul_ps(ninf, m0, _mm512_load_ps(s), scale);
      const __m512 s1 = _mm512_mask_mul_ps(ninf, m1, _mm512_load_ps(s + 16), scale);
      const float m_chunk = _mm512_reduce_max_ps(_mm512_max_ps(s0, s1));
      const float m_new = std::max(m[g], m_chunk);
      const __m512 mn = _mm512_set1_ps(m_new);
      const __m512 p0 = _mm512_maskz_mov_ps(m0, exp512(_mm512_sub_ps(s0, mn)));
      const __m512 p1 = _mm512_maskz_mov_ps(m1, exp512(_mm512_sub_ps(s1, mn)));
      const float p_sum = _mm512_reduce_add_ps(_mm512_add_ps(p0, p1));
      if (c0 == 0) {
        l[g] = p_sum;
      } else {
        // alpha = exp(m - m_new) rescales what the earlier chunks summed.
        const float alpha = _mm512_cvtss_f32(exp512(_mm512_set1_ps(m[g] - m_new)));
        const __m512 a = _mm512_set1_ps(alpha);
        for (int i = 0; i < nv; ++i) acc[g][i] = _mm512_mul_ps(acc[g][i], a);
        l[g] = l[g] * alpha + p_sum;
      }
      m[g] = m_new;
      _mm512_store_ps(s, p0);
      _mm512_store_ps(s + 16, p1);
      // The chunk's p @ V in two accumulators (even and odd keys: twice the FMA chains), then
      // added into the running sum.
      __m512 ev[NV], od[NV];
      for (int i = 0; i < nv; ++i) ev[i] = od[i] = _mm512_setzero_ps();
      int j = 0;
      for (; j + 1 < n; j += 2) {
        const __m512 pe = _mm512_set1_ps(s[j]), po = _mm512_set1_ps(s[j + 1]);
        for (int i = 0; i < nv; ++i) {
          ev[i] = _mm512_fmadd_ps(pe, value(j, i), ev[i]);
          od[i] = _mm512_fmadd_ps(po, value(j + 1, i), od[i]);
        }
      }
      if (j < n) {
        const __m512 pe = _mm512_set1_ps(s[j]);
        for (int i = 0; i < nv; ++i) ev[i] = _mm512_fmadd_ps(pe, value(j, i), ev[i]);
      }
      for (int i = 0; i < nv; ++i) acc[g][i] = _mm512_add_ps(acc[g][i], _mm512_add_ps(ev[i], od[i]));
    }
  }
  for (int g = 0; g < nh; ++g) {
    const __m512 inv = _mm512_set1_ps(1.0f / l[g]);
    QT* out = out_t + (h0 + g) * D;
    for (int i = 0; i < nv; ++i) store16(out + 16 * i, _mm512_mul_ps(acc[g][i], inv), lane_mask(i));
  }
}

// Work items (query token, KV head, a share of that KV head's GQA group), fastest last;
// dynamic: later prefill tokens see more KV. A share is the whole group (split in pieces of at
// most kMaxHeads), or one head when there are too few (token, KV head) slots to keep every
// thread busy. Which share a head is in changes nothing in its arithmetic.
template <typename QT, typename KT, int NV>
void run_nv(const Problem& pb, const QT* q, const KT* k_cache, const KT* v_cache, QT* out) {
  const int64_t group = pb.num_qo_heads / pb.num_kv_heads;
  const int64_t D = pb.head_dim;
  const int64_t slots = pb.num_tokens * pb.num_kv_heads;
  // Too few slots for the threads (batch 1 on 2 threads): one head per item, as balanced as it
  // gets (3 items of 3 heads on 2 threads left one idle a third of the time: 0.7-0.84x).
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t parts = slots < 2 * threads ? group : (group + kMaxHeads - 1) / kMaxHeads;
  const int64_t items = slots * parts;
#pragma omp parallel for schedule(dynamic, 1) if (items > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t t = item / (pb.num_kv_heads * parts);
    const int64_t r = item % (pb.num_kv_heads * parts);
    const int64_t kvh = r / parts, part = r % parts;
    const int64_t g0 = group * part / parts, g1 = group * (part + 1) / parts;  // parts <= group
    const int32_t* it = std::upper_bound(pb.qo_indptr, pb.qo_indptr + pb.num_seqs + 1,
                                         static_cast<int32_t>(t));
    const int64_t seq = (it - pb.qo_indptr) - 1;
    const int64_t q_len = pb.qo_indptr[seq + 1] - pb.qo_indptr[seq];
    const int64_t pos = pb.kv_lens[seq] - q_len + (t - pb.qo_indptr[seq]);
    const int nh = static_cast<int>(g1 - g0);
    if (nh == 1)
      attend_heads<QT, KT, NV, false>(pb, q + t * pb.q_stride_t, k_cache, v_cache,
                                      out + t * pb.num_qo_heads * D, seq, pos, kvh,
                                      kvh * group + g0, 1);
    else
      attend_heads<QT, KT, NV, true>(pb, q + t * pb.q_stride_t, k_cache, v_cache,
                                     out + t * pb.num_qo_heads * D, seq, pos, kvh,
                                     kvh * group + g0, nh);
  }
}

template <typename QT, typename KT>
void run(const Problem& pb, const QT* q, const KT* k_cache, const KT* v_cache, QT* out) {
  switch ((pb.head_dim + 15) / 16) {
#define VIBEKIT_NV(n) \
  case n: return run_nv<QT, KT, n>(pb, q, k_cache, v_cache, out);
    VIBEKIT_NV(1) VIBEKIT_NV(2) VIBEKIT_NV(3) VIBEKIT_NV(4) VIBEKIT_NV(5) VIBEKIT_NV(6)
    VIBEKIT_NV(7) VIBEKIT_NV(8) VIBEKIT_NV(9) VIBEKIT_NV(10) VIBEKIT_NV(11) VIBEKIT_NV(12)
    VIBEKIT_NV(13) VIBEKIT_NV(14) VIBEKIT_NV(15) VIBEKIT_NV(16)
#undef VIBEKIT_NV
  }
  TORCH_CHECK(false, "head_dim ", pb.head_dim, " is not in 1..", 16 * kMaxVec);
}

}  // namespace

torch::Tensor paged_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                              torch::Tensor qo_indptr, torch::Tensor page_table,
                              torch::Tensor kv_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.device().is_cpu() && q.stride(2) == 1,
              "q must be [T, Hq, D] on CPU with a unit last stride");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() &&
                  k_cache.scalar_type() == v_cache.scalar_type(),
              "k_cache and v_cache must be contiguous [num_pages, page_size, Hk, D] alike");
  for (const auto* t : {&qo_indptr, &page_table, &kv_lens})
    TORCH_CHECK(t->scalar_type() == torch::kInt && t->is_contiguous(), "indices must be int32");
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t num_pages = k_cache.size(0), page_size = k_cache.size(1), Hk = k_cache.size(2);
  const int64_t B = kv_lens.size(0);
  TORCH_CHECK(k_cache.size(3) == D, "head_dim of q (", D, ") and the cache (", k_cache.size(3),
              ") differ");
  TORCH_CHECK(D >= 1 && D <= 16 * kMaxVec, "head_dim ", D, " is not in 1..", 16 * kMaxVec);
  TORCH_CHECK(Hk >= 1 && Hq % Hk == 0, "num_qo_heads ", Hq, " is not a multiple of num_kv_heads ",
              Hk);
  TORCH_CHECK(qo_indptr.numel() == B + 1 && page_table.dim() == 2 && page_table.size(0) == B,
              "qo_indptr must be [B+1] and page_table [B, P] for B = ", B);
  const int32_t* qo = qo_indptr.data_ptr<int32_t>();
  const int32_t* pt = page_table.data_ptr<int32_t>();
  const int32_t* kl = kv_lens.data_ptr<int32_t>();
  const int64_t P = page_table.size(1);
  // Every read stays inside the pool: check the metadata once, before any thread runs.
  TORCH_CHECK(qo[0] == 0 && qo[B] == T, "qo_indptr must run from 0 to T = ", T);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q_len = qo[b + 1] - qo[b];
    TORCH_CHECK(q_len >= 0 && kl[b] >= q_len, "sequence ", b, ": ", q_len,
                " query tokens but kv_len ", kl[b]);
    const int64_t used = (kl[b] + page_size - 1) / page_size;
    TORCH_CHECK(used <= P, "sequence ", b, " needs ", used, " pages; page_table has ", P);
    for (int64_t i = 0; i < (q_len ? used : 0); ++i)
      TORCH_CHECK(pt[b * P + i] >= 0 && pt[b * P + i] < num_pages, "sequence ", b, " page ", i,
                  " is ", pt[b * P + i], "; the pool has ", num_pages);
  }
  auto out = torch::empty({T, Hq, D}, q.options());
  if (T == 0) return out;
  Problem pb{T, B, Hq, Hk, D, page_size, P, q.stride(0), q.stride(1), static_cast<float>(scale),
             qo, pt, kl};
  if (q.scalar_type() == torch::kHalf || k_cache.scalar_type() == torch::kHalf) {
    TORCH_CHECK(q.scalar_type() == k_cache.scalar_type(),
                "float16 q needs a float16 KV cache (and the reverse)");
    auto h = [](torch::Tensor& t) { return reinterpret_cast<half_t*>(t.data_ptr()); };
    run<half_t, half_t>(pb, h(q), h(k_cache), h(v_cache), h(out));
    return out;
  }
  const bool q_bf16 = q.scalar_type() == torch::kBFloat16;
  const bool kv_bf16 = k_cache.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(q_bf16 || q.scalar_type() == torch::kFloat, "q must be float32, bfloat16 or float16");
  TORCH_CHECK(kv_bf16 || k_cache.scalar_type() == torch::kFloat,
              "the KV cache must be float32, bfloat16 or float16");
  auto u16 = [](torch::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr()); };
  if (!q_bf16 && !kv_bf16)
    run<float, float>(pb, q.data_ptr<float>(), k_cache.data_ptr<float>(),
                      v_cache.data_ptr<float>(), out.data_ptr<float>());
  else if (!q_bf16)
    run<float, uint16_t>(pb, q.data_ptr<float>(), u16(k_cache), u16(v_cache),
                         out.data_ptr<float>());
  else if (!kv_bf16)
    run<uint16_t, float>(pb, u16(q), k_cache.data_ptr<float>(), v_cache.data_ptr<float>(),
                         u16(out));
  else
    run<uint16_t, uint16_t>(pb, u16(q), u16(k_cache), u16(v_cache), u16(out));
  return out;
}

#ifndef VIBEKIT_NO_MODULE  // model_cpu.cpp includes this file for its functions
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_attention", &paged_attention,
        "paged causal attention, batch-invariant (see the file's NOTE)");
}
#endif
