"""Triton causal depthwise conv1d over a ragged batch with per-sequence conv states (prefill and
the single-token decode step share the kernel)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _causal_conv1d_kernel(
    x_ptr, w_ptr, b_ptr, state_ptr, slot_ptr, indptr_ptr, out_ptr,
    stride_xt, stride_wc, stride_ss, stride_sc, stride_ot, num_channels,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One program per (sequence, channel block); walks the sequence's tokens in order. Inputs at
    # positions < 0 come from the conv state (the K-1 inputs before the first token).
    seq = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < num_channels
    q0 = tl.load(indptr_ptr + seq)
    q1 = tl.load(indptr_ptr + seq + 1)
    seq_len = q1 - q0
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    state = state_ptr + slot * stride_ss + offs_c * stride_sc
    bias = tl.zeros([BLOCK_C], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    for t in range(0, seq_len):
        acc = bias
        for j in tl.static_range(WIDTH):
            pos = t - (WIDTH - 1) + j + offs_c * 0  # [BLOCK_C], so masks are tensors
            w = tl.load(w_ptr + offs_c * stride_wc + j, mask=mask_c, other=0.0).to(tl.float32)
            from_x = tl.load(x_ptr + (q0 + pos) * stride_xt + offs_c,
                             mask=mask_c & (pos >= 0), other=0.0).to(tl.float32)
            from_state = tl.load(state + (WIDTH - 1 + pos),
                                 mask=mask_c & (pos < 0), other=0.0).to(tl.float32)
            acc += w * tl.where(pos >= 0, from_x, from_state)
        if SILU:
            acc = acc / (1.0 + tl.exp(-acc))
        tl.store(out_ptr + (q0 + t) * stride_ot + offs_c,
                 acc.to(out_ptr.dtype.element_ty), mask=mask_c)
    # The new window: the last K-1 inputs. NOTE: entry j reads state entry j + seq_len > j,
    # which has not been overwritten yet when j goes up, so no buffering is needed.
    for j in tl.static_range(WIDTH - 1):
        pos = seq_len - (WIDTH - 1) + j + offs_c * 0
        from_x = tl.load(x_ptr + (q0 + pos) * stride_xt + offs_c, mask=mask_c & (pos >= 0),
                         other=0.0).to(tl.float32)
        from_state = tl.load(state + (WIDTH - 1 + pos), mask=mask_c & (pos < 0),
                             other=0.0).to(tl.float32)
        tl.store(state + j, tl.where(pos >= 0, from_x, from_state).to(
            state_ptr.dtype.element_ty), mask=mask_c)


def causal_conv1d_triton(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    conv_states: torch.Tensor, state_slots: torch.Tensor, qo_indptr: torch.Tensor,
    activation: str | None = "silu", max_q_len: int | None = None,
) -> torch.Tensor:
    """Triton version of `causal_conv1d_ref` (and of the decode update when every sequence has
    one token): x [T, C], weight [C, K], conv_states [num_slots, C, K-1] updated in place."""
    num_tokens, num_channels = x.shape
    width = weight.shape[1]
    assert weight.shape == (num_channels, width) and weight.stride(1) == 1, "weight [C, K]"
    assert conv_states.shape[1:] == (num_channels, width - 1), (
        f"conv_states {tuple(conv_states.shape)} is not [*, {num_channels}, {width - 1}]")
    assert conv_states.stride(2) == 1 and x.stride(1) == 1, "last dims must be contiguous"
    assert qo_indptr.shape[0] == state_slots.shape[0] + 1, "qo_indptr must have B+1 entries"
    assert activation in ("silu", "swish", None), f"activation {activation!r}"
    out = torch.empty_like(x)
    num_seqs = state_slots.shape[0]
    if num_tokens == 0 or num_seqs == 0:
        return out
    block_c = min(triton.next_power_of_2(num_channels), 128)
    grid = (num_seqs, triton.cdiv(num_channels, block_c))
    _causal_conv1d_kernel[grid](
        x, weight, bias if bias is not None else weight, conv_states, state_slots.contiguous(),
        qo_indptr.contiguous(), out,
        x.stride(0), weight.stride(0), conv_states.stride(0), conv_states.stride(1),
        out.stride(0), num_channels,
        WIDTH=width, HAS_BIAS=bias is not None, SILU=activation is not None, BLOCK_C=block_c,
    )
    return out
