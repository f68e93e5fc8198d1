"""Vectorized torch paged attention: the CPU fast path, built on `scaled_dot_product_attention`.

Decode (one query per sequence) is a batched SDPA over K/V gathered token by token through the
page table into a padded [B, Hk, L, D] (a chunk of sequences at a time, to bound the buffer); the
g = Hq / Hk query heads that share a KV head are laid out as SDPA's query-length dim, so GQA needs
no copy of K/V. Prefill / append runs one SDPA per
sequence (causal, with the cached prefix visible) and batches its single-token sequences as decode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# NOTE: enable_gqa arrived in torch 2.5; before that K/V heads are repeated.
_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)
# Decode gathers K/V for this many bytes of sequences at a time (see _decode).
_GATHER_BYTES = 16 << 20


def paged_attention_torch(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    qo_indptr: torch.Tensor, page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
    max_q_len: int | None = None, max_kv_len: int | None = None,
) -> torch.Tensor:
    """Paged causal attention over a ragged batch; the contract is `paged_attention_ref`'s.

    q: [T, Hq, D]; k_cache, v_cache: [num_pages, page_size, Hk, D]; qo_indptr: [B+1];
    page_table: [B, P]; kv_lens: [B]. Returns [T, Hq, D] in q.dtype. With max_q_len == 1 and
    T == B (a pure decode batch) and max_kv_len given, it reads nothing back to the host.
    """
    num_tokens, num_seqs = q.shape[0], kv_lens.shape[0]
    if max_q_len == 1 and num_tokens == num_seqs:
        return _decode(q, k_cache, v_cache, page_table, kv_lens, scale, max_kv_len)
    return _ragged(q, k_cache, v_cache, qo_indptr, page_table, kv_lens, scale)


def _decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float, max_kv_len: int | None,
) -> torch.Tensor:
    """One query per sequence: q [B, Hq, D] -> [B, Hq, D]."""
    num_seqs, num_qo_heads, head_dim = q.shape
    num_pages, page_size, num_kv_heads, _ = k_cache.shape
    group = num_qo_heads // num_kv_heads
    max_len = page_table.shape[1] * page_size
    kv_len_bound = int(kv_lens.max()) if max_kv_len is None else max_kv_len
    kv_len_bound = max(1, min(kv_len_bound, max_len))

    # NOTE: positions past kv_len read the sequence's last valid slot, never padding pages or
    # unwritten slots, so garbage (even NaN) in the pool cannot leak through 0 * NaN.
    pos = torch.arange(kv_len_bound, device=q.device)  # [L]
    lens = kv_lens.to(device=q.device, dtype=torch.int64)
    valid = pos.unsqueeze(0) < lens.unsqueeze(1)  # [B, L]
    pos = torch.minimum(pos.unsqueeze(0), (lens - 1).clamp_min(0).unsqueeze(1))  # [B, L]
    if page_size == 1:
        slots = page_table.gather(1, pos).long()
    else:
        slots = page_table.gather(1, pos // page_size).long() * page_size + pos % page_size
    qg = q.reshape(num_seqs, num_kv_heads, group, head_dim)  # [B, Hk, g, D]
    mask = valid[:, None, None, :]  # [B, 1, 1, L]

    # NOTE: K and V of a chunk of sequences share one buffer of at most _GATHER_BYTES. Larger
    # or separate buffers are mmapped or trimmed by glibc, handed back to the OS after each call
    # and faulted in again by the next: thousands of page faults, most of the decode time.
    bytes_per_seq = 2 * kv_len_bound * num_kv_heads * head_dim * k_cache.element_size()
    num_chunks = -(-num_seqs // max(1, _GATHER_BYTES // bytes_per_seq))
    chunk = -(-num_seqs // num_chunks)  # equal chunks reuse one freed buffer
    flat = (num_pages * page_size, num_kv_heads, head_dim)
    k_flat, v_flat = k_cache.view(flat), v_cache.view(flat)
    out = q.new_empty(num_seqs, num_kv_heads, group, head_dim)
    for s in range(0, num_seqs, chunk):
        e = min(s + chunk, num_seqs)
        idx = slots[s:e].reshape(-1)  # [b*L]
        kv = k_cache.new_empty((2, idx.shape[0], num_kv_heads, head_dim))
        torch.index_select(k_flat, 0, idx, out=kv[0])
        torch.index_select(v_flat, 0, idx, out=kv[1])
        kv = kv.view(2, e - s, kv_len_bound, num_kv_heads, head_dim).transpose(2, 3)
        k, v = kv.to(q.dtype).unbind(0)  # [b, Hk, L, D]
        out[s:e] = F.scaled_dot_product_attention(qg[s:e], k, v, attn_mask=mask[s:e],
                                                  scale=scale)  # [b, Hk, g, D]
    return out.view(num_seqs, num_qo_heads, head_dim)


def _ragged(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    qo_indptr: torch.Tensor, page_table: torch.Tensor, kv_lens: torch.Tensor, scale: float,
) -> torch.Tensor:
    """Mixed prefill / append / decode: single-token sequences batched, the rest one by one."""
    out = torch.empty_like(q)
    starts = qo_indptr.tolist()
    lens = kv_lens.tolist()
    singles = [b for b in range(len(lens)) if starts[b + 1] - starts[b] == 1]
    if len(singles) > 1:
        rows = torch.tensor([starts[b] for b in singles], device=q.device)
        seqs = torch.tensor(singles, device=q.device)
        out[rows] = _decode(
            q[rows], k_cache, v_cache, page_table[seqs], kv_lens[seqs], scale,
            max(lens[b] for b in singles),
        )
        batched = set(singles)
    else:
        batched = set()
    for b in range(len(lens)):
        q0, q1 = starts[b], starts[b + 1]
        if q1 == q0 or b in batched:
            continue
        out[q0:q1] = _prefill_one(q[q0:q1], k_cache, v_cache, page_table[b], lens[b], scale)
    return out


def _prefill_one(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    pages: torch.Tensor, kv_len: int, scale: float,
) -> torch.Tensor:
    """One sequence's q [Q, Hq, D] against its first kv_len cached tokens -> [Q, Hq, D]."""
    q_len, num_qo_heads, head_dim = q.shape
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    num_pages = (kv_len + page_size - 1) // page_size
    pages = pages[:num_pages].long()
    k = k_cache.index_select(0, pages).flatten(0, 1)[:kv_len].to(q.dtype)  # [L, Hk, D]
    v = v_cache.index_select(0, pages).flatten(0, 1)[:kv_len].to(q.dtype)
    if num_kv_heads != num_qo_heads and not _SDPA_HAS_GQA:
        k = k.repeat_interleave(num_qo_heads // num_kv_heads, dim=1)  # [L, Hq, D]
        v = v.repeat_interleave(num_qo_heads // num_kv_heads, dim=1)
    gqa = {"enable_gqa": True} if _SDPA_HAS_GQA and num_kv_heads != num_qo_heads else {}
    qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # [1, H, len, D]
    if q_len == kv_len:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, **gqa)
    else:
        # Query i sits at position kv_len - q_len + i: SDPA's is_causal aligns top-left instead.
        q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device).unsqueeze(1)
        mask = torch.arange(kv_len, device=q.device).unsqueeze(0) <= q_pos  # [Q, L]
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale, **gqa)
    return out.squeeze(0).transpose(0, 1)  # [Q, Hq, D]
