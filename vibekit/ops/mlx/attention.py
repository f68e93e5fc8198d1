"""Paged causal attention on MLX: the KV of a ragged batch gathered from pages, one fused
`mx.fast.scaled_dot_product_attention` over the padded batch.

The plan (gather indices and mask) is built once per step on the host from the same page tables
the torch path uses and read by every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass
class AttentionPlan:
    """One step's layout, for B sequences of q_len_b query tokens each (T in all), padded to
    Q = max q_len and L = max kv_len.

      slot_mapping [T]      int32  flat KV slot (page * page_size + offset) of each new token
      kv_slots     [B, L]   int32  flat KV slot of every key position of each sequence (0 pad)
      q_index      [B, Q]   int32  row of the flattened batch of each padded query (0 pad)
      out_index    [T]      int32  row b * Q + i of the padded output for each query token
      mask         [B, 1, Q, L]    additive float32 causal mask (0 allowed, -inf not); for one
                                   sequence None (one query) or "causal" (SDPA's own lower-right
                                   causal mask: the same positions, no mask array)
      positions    [T]      int32  absolute position of each query token
    """

    slot_mapping: mx.array
    kv_slots: mx.array
    q_index: mx.array
    out_index: mx.array
    mask: mx.array | str | None
    positions: mx.array
    num_seqs: int
    max_q_len: int

    @classmethod
    def build(cls, q_lens: Sequence[int], kv_lens: Sequence[int],
              page_tables: Sequence[Sequence[int]], page_size: int) -> AttentionPlan:
        """Sequence b's query tokens sit at positions kv_lens[b] - q_lens[b] .. kv_lens[b] - 1
        and attend to positions <= their own, its KV in pages page_tables[b].

        Example::

            plan = AttentionPlan.build([3, 1], [3, 9], [[4], [0, 2]], page_size=8)
        """
        num_seqs = len(q_lens)
        offsets = np.arange(page_size, dtype=np.int32)
        slots_of = []  # flat KV slot of every key position, per sequence
        for b, (kv_len, pages) in enumerate(zip(kv_lens, page_tables)):
            if len(pages) * page_size < kv_len:
                raise ValueError(f"sequence {b} has {len(pages)} pages of {page_size} for "
                                 f"{kv_len} KV tokens")
            table = np.asarray(pages[:-(-kv_len // page_size)], dtype=np.int32)
            slots_of.append((table[:, None] * page_size + offsets).reshape(-1)[:kv_len])
        if num_seqs == 1:  # no padding: no gathers of q / out, SDPA's own causal mask
            q_len, kv_len = q_lens[0], kv_lens[0]
            slots = slots_of[0]
            return cls(mx.array(slots[kv_len - q_len:]), mx.array(slots[None]),
                       mx.arange(q_len, dtype=mx.int32)[None], mx.arange(q_len, dtype=mx.int32),
                       None if q_len == 1 else "causal",
                       mx.arange(kv_len - q_len, kv_len, dtype=mx.int32), 1, q_len)
        max_q, max_kv = max(q_lens), max(kv_lens)
        kv_slots = np.zeros((num_seqs, max_kv), dtype=np.int32)
        q_index = np.zeros((num_seqs, max_q), dtype=np.int32)
        mask = np.full((num_seqs, 1, max_q, max_kv), -np.inf, dtype=np.float32)
        mask[:, :, :, 0] = 0.0  # padded query rows attend to something (their output is dropped)
        out_index, slot_mapping, positions = [], [], []
        row = 0
        for b, (q_len, kv_len, slots) in enumerate(zip(q_lens, kv_lens, slots_of)):
            kv_slots[b, :kv_len] = slots
            start = kv_len - q_len
            q_pos = np.arange(start, kv_len, dtype=np.int32)
            # causal: query i (position start + i) sees key positions 0 .. start + i
            mask[b, 0, :q_len, :kv_len] = np.where(
                np.arange(kv_len)[None, :] <= q_pos[:, None], 0.0, -np.inf)
            q_index[b, :q_len] = np.arange(row, row + q_len)
            out_index.append(np.arange(b * max_q, b * max_q + q_len, dtype=np.int32))
            slot_mapping.append(slots[start:])
            positions.append(q_pos)
            row += q_len
        return cls(mx.array(np.concatenate(slot_mapping)), mx.array(kv_slots),
                   mx.array(q_index), mx.array(np.concatenate(out_index)), mx.array(mask),
                   mx.array(np.concatenate(positions)), num_seqs, max_q)


def paged_attention_mlx(q: mx.array, k: mx.array, v: mx.array, k_cache: mx.array,
                        v_cache: mx.array, plan: AttentionPlan, scale: float) -> mx.array:
    """Append this step's k, v [T, Hk, D] to the flat caches [num_pages * page_size, Hk, D] (in
    place, at plan.slot_mapping), then causal attention of q [T, Hq, D] over each sequence's
    KV. Returns [T, Hq, D]; grouped-query heads share their KV head (Hq a multiple of Hk)."""
    k_cache[plan.slot_mapping] = k.astype(k_cache.dtype)
    v_cache[plan.slot_mapping] = v.astype(v_cache.dtype)
    num_tokens, num_qo_heads, head_dim = q.shape
    keys = k_cache[plan.kv_slots].transpose(0, 2, 1, 3)  # [B, Hk, L, D]
    values = v_cache[plan.kv_slots].transpose(0, 2, 1, 3)  # [B, Hk, L, D]
    if plan.max_q_len == 1:
        # Decode: mlx[cpu]'s SDPA reads contiguous K/V faster than these strided views (~4%
        # of a decode step of the zoo model); for query blocks the copy costs more than it saves.
        keys, values = mx.contiguous(keys), mx.contiguous(values)
    one = plan.num_seqs == 1  # NOTE: then the batch is unpadded: q is its own [1, T] layout
    queries = (q[None] if one else q[plan.q_index]).transpose(0, 2, 1, 3)  # [B, Hq, Q, D]
    mask = plan.mask
    if isinstance(mask, mx.array):
        mask = mask.astype(q.dtype)
    out = mx.fast.scaled_dot_product_attention(
        queries, keys.astype(q.dtype), values.astype(q.dtype), scale=scale,
        mask=mask).transpose(0, 2, 1, 3)  # [B, Q, Hq, D]
    if one:
        return out[0]  # [T, Hq, D]
    out = out.reshape(plan.num_seqs * plan.max_q_len, num_qo_heads, head_dim)
    return out[plan.out_index]  # [T, Hq, D]
