"""ForwardBatch: the metadata of one model step, built once and read by every layer."""

from __future__ import annotations

import array
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def _host(values: list[int], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `values` (int64 or int32), through an array.array: 0.8 us where
    torch.tensor(list) takes 2.8 us, and a step builds seven of them. The tensor keeps the array
    alive and owns its memory alone (nothing else holds the array)."""
    if not values:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(array.array("q" if dtype is torch.int64 else "i", values),
                            dtype=dtype)


@dataclass(slots=True)
class SeqChunk:
    """One sequence's part of a step: `input_ids` are fed at positions `start ..
    start + len(input_ids) - 1`, its KV lives in `pages` (covering every position up to the
    last fed one), and the logits of its last `num_sample` query tokens are returned."""

    input_ids: Sequence[int]
    start: int
    pages: Sequence[int]
    num_sample: int = 1


@dataclass
class ForwardBatch:
    """One ragged batch of query tokens from `num_seqs` sequences.

    Sequence b contributes the query tokens `qo_indptr[b]:qo_indptr[b+1]` of the flattened batch
    (a prefill chunk, one decode token, or a verify block). Its KV after this step's append has
    `kv_lens[b]` tokens, stored in pages `page_table[b, :ceil(kv_lens[b] / page_size)]`; the query
    tokens are the last `q_len` of those, so query i of sequence b sits at position
    `kv_lens[b] - q_len_b + i` and attends causally to KV positions `<=` its own.

    Tensors (T = total query tokens, B = num_seqs, P = max pages per sequence, S = sampled rows):
      input_ids      [T]    int64
      positions      [T]    int64   absolute position of each query token (for RoPE)
      qo_indptr      [B+1]  int32   query offsets per sequence
      kv_lens        [B]    int32   KV length per sequence including this step's tokens
      page_table     [B, P] int32   page ids per sequence, padded with 0
      slot_mapping   [T]    int64   flat KV slot (page_id * page_size + offset) for each new token
      sample_indices [S]    int64   rows of the flattened batch whose logits are returned
    kv_caches: per layer (k_cache, v_cache), each [num_pages, page_size, num_kv_heads, head_dim].
    Hybrid models (vibekit.ssm) also read, per recurrent layer, state_caches[i] = (conv_state,
    ssm_state), each [num_slots, ...], and state_slots [B] int64, the state slot of each sequence.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    qo_indptr: torch.Tensor
    kv_lens: torch.Tensor
    page_table: torch.Tensor
    slot_mapping: torch.Tensor
    sample_indices: torch.Tensor
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]]
    max_q_len: int
    max_kv_len: int
    attention_backend: str = "auto"
    state_slots: torch.Tensor | None = None
    state_caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def build(cls, chunks: Sequence[SeqChunk], page_size: int,
              kv_caches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str,
              attention_backend: str = "auto", state_caches: list | None = None,
              state_slots: Sequence[int] | None = None) -> ForwardBatch:
        """The one builder: lay out `chunks` on the host, then move to `device` in one go.

        Example::

            batch = ForwardBatch.build([SeqChunk([5, 7, 9], 0, [3])], page_size=16,
                                       kv_caches=caches, device="cpu")
        """
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        qo_indptr = [0]
        kv_lens: list[int] = []
        sample_indices: list[int] = []
        q_lens: list[int] = []
        max_pages = max((len(c.pages) for c in chunks), default=1) or 1
        table: list[int] = []
        # NOTE: plain Python lists, one tensor each at the end: a decode step of a small model
        # is a few hundred microseconds, and per-chunk tensors and index ops showed up in it.
        for chunk in chunks:
            n = len(chunk.input_ids)
            start, pages = chunk.start, chunk.pages
            input_ids += chunk.input_ids
            positions += range(start, start + n)
            if n == 1:
                slot_mapping.append(pages[start // page_size] * page_size + start % page_size)
            else:
                slot_mapping += [pages[p // page_size] * page_size + p % page_size
                                 for p in range(start, start + n)]
            qo_indptr.append(qo_indptr[-1] + n)
            q_lens.append(n)
            kv_lens.append(start + n)
            if chunk.num_sample:
                sample_indices += range(qo_indptr[-1] - chunk.num_sample, qo_indptr[-1])
            table += pages
            table += [0] * (max_pages - len(pages))
        dev = torch.device(device)
        # NOTE: on the CPU the host tensors are the batch (no .to calls: a few microseconds
        # each, per field, per step).
        move = (lambda t: t) if dev.type == "cpu" else (lambda t: t.to(dev, non_blocking=True))
        slots = None
        if state_slots is not None:
            slots = move(torch.tensor(list(state_slots), dtype=torch.int64))
        i64, i32 = torch.int64, torch.int32
        return cls(
            input_ids=move(_host(input_ids, i64)),
            positions=move(_host(positions, i64)),
            qo_indptr=move(_host(qo_indptr, i32)),
            kv_lens=move(_host(kv_lens, i32)),
            page_table=move(_host(table, i32).view(len(chunks), max_pages)),
            slot_mapping=move(_host(slot_mapping, i64)),
            sample_indices=move(_host(sample_indices, i64)),
            kv_caches=kv_caches,
            max_q_len=max(q_lens),
            max_kv_len=max(kv_lens),
            attention_backend=attention_backend,
            state_slots=slots,
            state_caches=state_caches,
        )

    @property
    def num_seqs(self) -> int:
        return self.kv_lens.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[0]

    @property
    def kv_append_backend(self) -> str:
        """kv_append follows attention_backend ("torch" or "cpu" attention: kv_append's own
        auto choice, the C++ copy on CPU where it builds, else the reference)."""
        return "auto" if self.attention_backend in ("torch", "cpu") else self.attention_backend

    @property
    def is_decode(self) -> bool:
        """Every sequence contributes exactly one query token."""
        return self.max_q_len == 1
