"""A hand-rolled paged KV pool and ForwardBatch builder for model tests (pages only; the real
scheduler and page allocator live in vibekit/runtime and vibekit/kvcache); batches come from
the one builder, ForwardBatch.build."""

from __future__ import annotations

import torch

from vibekit.core.forward_batch import ForwardBatch, SeqChunk
from vibekit.models import KVCacheSpec


class PagedKV:
    """Per-layer K/V pools plus, per sequence, its pages (handed out in a shuffled order so the
    page table really indirects) and its KV length."""

    def __init__(self, spec: KVCacheSpec, dtype: torch.dtype, num_pages: int = 64,
                 page_size: int = 4, seed: int = 0) -> None:
        shape = (num_pages, page_size, spec.num_kv_heads, spec.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
                          for _ in range(spec.num_layers)]
        self.page_size = page_size
        gen = torch.Generator().manual_seed(seed)
        self.free_pages = torch.randperm(num_pages, generator=gen).tolist()
        self.pages: dict[int, list[int]] = {}
        self.kv_len: dict[int, int] = {}

    def batch(self, new_tokens: dict[int, list[int]], sample: str = "all") -> ForwardBatch:
        """Append `new_tokens[seq_id]` to each sequence; sample "all" rows or each seq's "last"."""
        chunks = []
        for seq_id, tokens in new_tokens.items():
            start = self.kv_len.get(seq_id, 0)
            end = start + len(tokens)
            pages = self.pages.setdefault(seq_id, [])
            while len(pages) * self.page_size < end:
                pages.append(self.free_pages.pop())
            self.kv_len[seq_id] = end
            chunks.append(SeqChunk(tokens, start, pages, len(tokens) if sample == "all" else 1))
        return ForwardBatch.build(chunks, self.page_size, self.kv_caches, "cpu")


def greedy_generate(model, prompts: list[list[int]], max_tokens: int,
                    dtype: torch.dtype = torch.float32) -> list[list[int]]:
    """Greedy decoding of several prompts at once: one ragged prefill, then batched decodes."""
    kv = PagedKV(model.cache_spec().kv, dtype, num_pages=sum(
        -(-(len(p) + max_tokens) // 16) for p in prompts), page_size=16)
    outputs: list[list[int]] = [[] for _ in prompts]
    step = dict(enumerate(prompts))
    # NOTE: one thread: tiny decode matmuls gain nothing from more, and on the shared 2-core
    # machine oversubscribed threads make this loop 100x slower.
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(max_tokens):
                batch = kv.batch(step, sample="last")
                next_ids = model(batch.input_ids, batch).argmax(-1).tolist()
                for seq_id, token in enumerate(next_ids):
                    outputs[seq_id].append(token)
                step = {seq_id: [token] for seq_id, token in enumerate(next_ids)}
    finally:
        torch.set_num_threads(num_threads)
    return outputs
