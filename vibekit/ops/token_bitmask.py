"""Apply a packed token bitmask to logits: forbidden tokens get -inf (xgrammar's layout)."""

from __future__ import annotations

import functools
import sys

import torch

from vibekit.ops.registry import register, resolve, set_auto_order

_MIN_XGRAMMAR_VOCAB = 32


def apply_token_bitmask_ref(logits: torch.Tensor, bitmask: torch.Tensor,
                            indices: torch.Tensor | None = None) -> torch.Tensor:
    """Reference implementation of applying a token bitmask, in place.

    logits: [S, V] float; bitmask: [S, ceil(V / 32)] int32 where bit (j % 32) of word j // 32 of
    a row is 1 when token j is allowed (xgrammar's layout; bits past V are ignored);
    indices: optional [N] int, the rows to mask (row i of logits by row i of bitmask); None masks
    every row. Returns logits, with forbidden tokens set to -inf.

    Example: apply_token_bitmask_ref(torch.zeros(1, 40), torch.tensor([[0b101, 0]],
    dtype=torch.int32)) leaves tokens 0 and 2 at 0.0 and sets the other 38 to -inf.
    """
    num_rows, vocab = logits.shape
    assert bitmask.shape == (num_rows, -(-vocab // 32)), (
        f"bitmask {tuple(bitmask.shape)} does not match logits {tuple(logits.shape)}"
    )
    assert bitmask.dtype == torch.int32, f"bitmask must be int32, got {bitmask.dtype}"
    rows = torch.arange(num_rows, device=logits.device) if indices is None else indices.long()
    bits = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    allowed = (bitmask[rows].unsqueeze(-1) >> bits) & 1  # [N, W, 32]
    allowed = allowed.flatten(1)[:, :vocab].bool()  # [N, V]
    logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))
    return logits


def apply_token_bitmask_torch(logits: torch.Tensor, bitmask: torch.Tensor,
                              indices: torch.Tensor | None = None) -> torch.Tensor:
    """`apply_token_bitmask_ref` in a few vectorized torch ops: each byte of the bitmask looks up
    its 8 additive biases (0 or -inf) in a [256, 8] table, and the biases are added to the
    logits. About 4x faster than xgrammar's CPU kernel at batch 16 (bench_grammar.py)."""
    num_rows, vocab = logits.shape
    assert bitmask.shape == (num_rows, -(-vocab // 32)), (
        f"bitmask {tuple(bitmask.shape)} does not match logits {tuple(logits.shape)}"
    )
    assert bitmask.dtype == torch.int32, f"bitmask must be int32, got {bitmask.dtype}"
    rows = bitmask if indices is None else bitmask[indices.long()]
    # NOTE: viewing int32 words as bytes puts bits 8k..8k+7 in byte k on little-endian hosts.
    table = _bias_table(logits.device, logits.dtype)
    bias = torch.nn.functional.embedding(rows.view(torch.uint8).long(), table)  # [N, 4W, 8]
    bias = bias.view(rows.shape[0], -1)[:, :vocab]  # [N, V]
    if indices is None:
        return logits.add_(bias)
    return logits.index_add_(0, indices.long(), bias)


@functools.cache
def _bias_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    assert sys.byteorder == "little", "the byte view of the bitmask assumes little-endian"
    bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1  # [256, 8]
    return torch.where(bits.bool(), 0.0, float("-inf")).to(device=device, dtype=dtype)


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor,
                        indices: torch.Tensor | None = None, backend: str = "auto"
                        ) -> torch.Tensor:
    """Set logits [S, V] of tokens forbidden by bitmask [S, ceil(V / 32)] to -inf, in place, on
    the rows `indices` (all rows when None); see `apply_token_bitmask_ref`.

    Backends: "ref" (the spec); "torch" (vectorized, a byte lookup table); "triton" (CUDA, or
    the interpreter); "xgrammar" (its CPU kernel on CPU, its Triton kernel on CUDA). "auto": on
    CPU "torch", which bench_grammar.py measures 3-7x faster than xgrammar's CPU kernel at
    batch 16; on CUDA xgrammar's Triton kernel when installed, else "triton" (no GPU was lent
    to measure them against each other; bench_grammar.py times every backend).
    """
    return resolve("apply_token_bitmask", backend, logits.device)(logits, bitmask, indices)


def _apply_token_bitmask_triton(logits, bitmask, indices):
    from vibekit.ops.triton.token_bitmask import apply_token_bitmask_triton

    apply_token_bitmask_triton(logits, bitmask, indices)
    return logits


def _apply_token_bitmask_xgrammar(logits, bitmask, indices):
    """NOTE: xgrammar's CPU kernel (0.2.8) writes past the end of logits when V < 8, so this
    backend refuses V < _MIN_XGRAMMAR_VOCAB."""
    import xgrammar

    vocab = logits.shape[-1]
    if vocab < _MIN_XGRAMMAR_VOCAB:
        raise ValueError(f"the xgrammar backend needs V >= {_MIN_XGRAMMAR_VOCAB} (its CPU "
                         f"kernel overruns smaller rows), got V = {vocab}; use ref or triton")
    assert bitmask.shape == (logits.shape[0], -(-vocab // 32)), (
        f"bitmask {tuple(bitmask.shape)} does not match logits {tuple(logits.shape)}"
    )
    rows = None if indices is None else indices.tolist()
    if logits.is_cuda:
        xgrammar.apply_token_bitmask_inplace(logits, bitmask, vocab_size=vocab, indices=rows)
    else:  # the CPU kernel itself: the dispatcher's checks cost more than a small vocab
        from xgrammar.kernels.apply_token_bitmask_inplace_cpu import (
            apply_token_bitmask_inplace_cpu,
        )

        apply_token_bitmask_inplace_cpu(logits, bitmask, vocab, rows)
    return logits


register("apply_token_bitmask", "ref", apply_token_bitmask_ref)
register("apply_token_bitmask", "torch", apply_token_bitmask_torch)
register("apply_token_bitmask", "triton", _apply_token_bitmask_triton)
register("apply_token_bitmask", "xgrammar", _apply_token_bitmask_xgrammar)
set_auto_order("apply_token_bitmask", "cuda", ("xgrammar", "triton", "torch", "ref"))
