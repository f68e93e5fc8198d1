"""Paged attention: ragged prefill / append (causal over cached prefix + new tokens) and decode."""

from __future__ import annotations

import torch

from vibekit.ops.registry import register, resolve, set_auto_order


def _gather_kv(cache: torch.Tensor, pages: torch.Tensor, kv_len: int) -> torch.Tensor:
    """[num_pages, page_size, Hk, D] + page ids -> the first kv_len tokens [kv_len, Hk, D]."""
    page_size = cache.shape[1]
    num = (kv_len + page_size - 1) // page_size
    return cache[pages[:num].long()].flatten(0, 1)[:kv_len]


def paged_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    qo_indptr: torch.Tensor, page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
) -> torch.Tensor:
    """Reference implementation of paged causal attention over a ragged batch.

    q: [T, Hq, D] (the query tokens of all sequences, concatenated);
    k_cache, v_cache: [num_pages, page_size, Hk, D] (already holding this step's K/V);
    qo_indptr: [B+1]; page_table: [B, P]; kv_lens: [B] (KV length including the new tokens).
    Query i of sequence b is at position kv_lens[b] - q_len_b + i and attends to KV positions
    <= its own. Hq must be a multiple of Hk (GQA). Computed in float32. Returns [T, Hq, D].
    """
    out = torch.empty_like(q)
    hq, hk = q.shape[1], k_cache.shape[2]
    group = hq // hk
    for b in range(kv_lens.shape[0]):
        q0, q1 = int(qo_indptr[b]), int(qo_indptr[b + 1])
        q_len, kv_len = q1 - q0, int(kv_lens[b])
        if q_len == 0:
            continue
        k = _gather_kv(k_cache, page_table[b], kv_len).float()  # [L, Hk, D]
        v = _gather_kv(v_cache, page_table[b], kv_len).float()
        k = k.repeat_interleave(group, dim=1)  # [L, Hq, D]
        v = v.repeat_interleave(group, dim=1)
        qb = q[q0:q1].float()  # [Q, Hq, D]
        scores = torch.einsum("qhd,khd->hqk", qb, k) * scale  # [Hq, Q, L]
        q_pos = torch.arange(kv_len - q_len, kv_len).unsqueeze(1)
        k_pos = torch.arange(kv_len).unsqueeze(0)
        mask = (k_pos <= q_pos).to(scores.device)  # [Q, L]
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(dim=-1)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", probs, v).to(q.dtype)
    return out


def paged_decode_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
) -> torch.Tensor:
    """Reference implementation of paged decode attention: one query per sequence.

    q: [B, Hq, D]; k_cache, v_cache: [num_pages, page_size, Hk, D]; page_table: [B, P];
    kv_lens: [B]. The query attends to all kv_lens[b] cached tokens. Returns [B, Hq, D].
    """
    qo_indptr = torch.arange(q.shape[0] + 1, device=q.device, dtype=torch.int32)
    return paged_attention_ref(q, k_cache, v_cache, qo_indptr, page_table, kv_lens, scale)


def paged_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    qo_indptr: torch.Tensor, page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
    *, max_q_len: int | None = None, max_kv_len: int | None = None, backend: str = "auto",
) -> torch.Tensor:
    """Paged causal attention over a ragged batch (see `paged_attention_ref` for the contract).

    max_q_len / max_kv_len are host-side bounds that spare the fast backends a device sync.
    Backends: "ref" (the spec), "torch" (vectorized SDPA), "cpu" (an AVX512 / AVX2 C++ kernel over
    the pages, batch-invariant: vibekit.ops.attention_cpu), "triton" (a decode kernel for one-token
    batches, else the ragged append kernel).
    """
    return resolve("paged_attention", backend, q.device)(
        q, k_cache, v_cache, qo_indptr, page_table, kv_lens, scale, max_q_len, max_kv_len)


def _paged_attention_ref(q, k_cache, v_cache, qo_indptr, page_table, kv_lens, scale,
                         max_q_len, max_kv_len):
    return paged_attention_ref(q, k_cache, v_cache, qo_indptr, page_table, kv_lens, scale)


def _paged_attention_triton(q, k_cache, v_cache, qo_indptr, page_table, kv_lens, scale,
                            max_q_len, max_kv_len):
    from vibekit.ops.triton.attention import paged_attention_triton, paged_decode_attention_triton

    if max_q_len == 1 and q.shape[0] == kv_lens.shape[0]:
        return paged_decode_attention_triton(q, k_cache, v_cache, page_table, kv_lens, scale,
                                             max_kv_len=max_kv_len)
    return paged_attention_triton(q, k_cache, v_cache, qo_indptr, page_table, kv_lens, scale,
                                  max_q_len=max_q_len, max_kv_len=max_kv_len)


register("paged_attention", "ref", _paged_attention_ref)
register("paged_attention", "torch", "vibekit.ops.attention_torch:paged_attention_torch")
register("paged_attention", "triton", _paged_attention_triton)


def _cpu_kernel_available() -> bool:
    from vibekit.ops.attention_cpu import attention_kernel_available

    return attention_kernel_available()


register("paged_attention", "cpu", "vibekit.ops.attention_cpu:paged_attention_cpu",
         available=_cpu_kernel_available)
# NOTE: on CPU "auto" is the kernel where it builds (faster than the SDPA path at every measured
# shape, and batch-invariant), else the torch path.
set_auto_order("paged_attention", "cpu", ("cpu", "torch", "ref"))
