"""Triton token-bitmask apply: one program per (row, block of BLOCK_V tokens)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _apply_token_bitmask_kernel(
    logits_ptr, bitmask_ptr, indices_ptr,
    vocab_size, stride_logits, stride_bitmask,
    HAS_INDICES: tl.constexpr, BLOCK_V: tl.constexpr,
):
    pid = tl.program_id(0)
    if HAS_INDICES:
        row = tl.load(indices_ptr + pid).to(tl.int64)
    else:
        row = pid.to(tl.int64)
    offs = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    in_vocab = offs < vocab_size
    # Each packed word is loaded by its 32 tokens; they share a cache line.
    words = tl.load(bitmask_ptr + row * stride_bitmask + offs // 32, mask=in_vocab, other=-1)
    allowed = (words >> (offs % 32)) & 1
    neg_inf = tl.full([BLOCK_V], float("-inf"), logits_ptr.dtype.element_ty)
    tl.store(logits_ptr + row * stride_logits + offs, neg_inf, mask=in_vocab & (allowed == 0))


def apply_token_bitmask_triton(logits: torch.Tensor, bitmask: torch.Tensor,
                               indices: torch.Tensor | None = None, block_v: int = 1024) -> None:
    """Triton version of `apply_token_bitmask_ref`: logits [S, V] float, bitmask
    [S, ceil(V / 32)] int32, indices [N] int32/int64 rows or None (all rows); in place."""
    num_rows, vocab = logits.shape
    assert bitmask.shape == (num_rows, triton.cdiv(vocab, 32)), (
        f"bitmask {tuple(bitmask.shape)} does not match logits {tuple(logits.shape)}"
    )
    assert bitmask.dtype == torch.int32, f"bitmask must be int32, got {bitmask.dtype}"
    assert logits.dtype in (torch.float32, torch.float16, torch.bfloat16), logits.dtype
    assert logits.stride(1) == 1 and bitmask.stride(1) == 1, "the vocab dim must be contiguous"
    assert bitmask.device == logits.device, "logits and bitmask must be on one device"
    assert block_v % 32 == 0 and block_v & (block_v - 1) == 0, "block_v: a power of 2, >= 32"
    if indices is not None:
        assert indices.dim() == 1 and indices.dtype in (torch.int32, torch.int64), indices.dtype
        assert indices.device == logits.device and indices.is_contiguous()
    num_programs = num_rows if indices is None else indices.shape[0]
    if num_programs == 0 or vocab == 0:
        return
    grid = (num_programs, triton.cdiv(vocab, block_v))
    _apply_token_bitmask_kernel[grid](
        logits, bitmask, indices if indices is not None else bitmask,
        vocab, logits.stride(0), bitmask.stride(0),
        HAS_INDICES=indices is not None, BLOCK_V=block_v,
    )
