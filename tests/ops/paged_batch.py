"""Builds ragged paged-attention batches for the ops tests (not a test module)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class PagedBatch:
    """A ragged batch laid out in a shuffled page pool, as the runtime hands it to attention."""

    q: torch.Tensor  # [T, Hq, D]
    k_cache: torch.Tensor  # [num_pages, page_size, Hk, D]
    v_cache: torch.Tensor
    qo_indptr: torch.Tensor  # [B+1] int32
    page_table: torch.Tensor  # [B, P] int32, padded with 0
    kv_lens: torch.Tensor  # [B] int32
    k_seqs: list[torch.Tensor]  # per sequence, the contiguous K [kv_len, Hk, D]
    v_seqs: list[torch.Tensor]
    max_q_len: int
    max_kv_len: int

    def args(self) -> tuple:
        return (self.q, self.k_cache, self.v_cache, self.qo_indptr, self.page_table, self.kv_lens)


def make_paged_batch(
    q_lens: list[int], prefix_lens: list[int], *, num_kv_heads: int, group: int, head_dim: int,
    page_size: int, dtype: torch.dtype = torch.float32, seed: int = 0, device: str = DEVICE,
) -> PagedBatch:
    """Sequence b has prefix_lens[b] cached tokens and q_lens[b] new ones (already appended).

    Page 0 is never handed out and is the page_table padding; it and every slot past a
    sequence's kv_len hold NaN, so a kernel that reads outside the contract fails loudly.
    """
    gen = torch.Generator().manual_seed(seed)
    kv_lens = [p + n for p, n in zip(prefix_lens, q_lens)]
    pages_per_seq = [-(-n // page_size) for n in kv_lens]
    max_pages = max(pages_per_seq) + 1  # one column of padding
    num_pages = sum(pages_per_seq) + 3
    shape = (num_pages, page_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    page_table = torch.zeros(len(q_lens), max_pages, dtype=torch.int32)
    free = (torch.randperm(num_pages - 1, generator=gen) + 1).tolist()
    k_seqs, v_seqs = [], []
    for b, (kv_len, n_pages) in enumerate(zip(kv_lens, pages_per_seq)):
        pages = [free.pop() for _ in range(n_pages)]
        page_table[b, :n_pages] = torch.tensor(pages, dtype=torch.int32)
        k = torch.randn(kv_len, num_kv_heads, head_dim, generator=gen).to(dtype)
        v = torch.randn(kv_len, num_kv_heads, head_dim, generator=gen).to(dtype)
        for i in range(kv_len):
            k_cache[pages[i // page_size], i % page_size] = k[i]
            v_cache[pages[i // page_size], i % page_size] = v[i]
        k_seqs.append(k.to(device))
        v_seqs.append(v.to(device))
    num_qo_heads = num_kv_heads * group
    q = torch.randn(sum(q_lens), num_qo_heads, head_dim, generator=gen).to(dtype)
    qo_indptr = torch.tensor([0, *q_lens], dtype=torch.int64).cumsum(0).to(torch.int32)
    return PagedBatch(
        q=q.to(device), k_cache=k_cache.to(device), v_cache=v_cache.to(device),
        qo_indptr=qo_indptr.to(device), page_table=page_table.to(device),
        kv_lens=torch.tensor(kv_lens, dtype=torch.int32, device=device),
        k_seqs=k_seqs, v_seqs=v_seqs, max_q_len=max(q_lens), max_kv_len=max(kv_lens),
    )


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """assert_close tolerances for a backend in `dtype` against the fp32 reference."""
    return {
        torch.float32: {"atol": 1e-5, "rtol": 1e-5},
        torch.float16: {"atol": 2e-3, "rtol": 2e-3},
        torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
    }[dtype]
