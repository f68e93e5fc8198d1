"""ForwardBatch: the metadata of one model step, built once and read by every layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

    @property
    def num_seqs(self) -> int:
        return self.kv_lens.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[0]

    @property
    def is_decode(self) -> bool:
        """Every sequence contributes exactly one query token."""
        return self.max_q_len == 1
