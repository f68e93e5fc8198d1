"""Causal depthwise conv1d over a ragged batch, with a per-sequence rolling input window (the
"conv state" of Mamba2 and gated-DeltaNet layers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vibekit.ops.registry import register, resolve


def _activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return x
    if activation in ("silu", "swish"):
        return F.silu(x)
    raise ValueError(f"activation {activation!r} is not supported; allowed: silu, None")


def causal_conv1d_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    conv_states: torch.Tensor, state_slots: torch.Tensor, qo_indptr: torch.Tensor,
    activation: str | None = "silu",
) -> torch.Tensor:
    """Reference implementation of a causal depthwise conv1d over a ragged batch (prefill).

    x: [T, C] (the tokens of all sequences, concatenated); weight: [C, K]; bias: [C] or None;
    conv_states: [num_slots, C, K-1], the K-1 inputs that precede each sequence's first token
    (zeros for a fresh sequence); state_slots: [B] int64, the slot of each sequence;
    qo_indptr: [B+1]. out[t, c] = act(bias[c] + sum_j weight[c, j] * in[t - K + 1 + j, c]).
    Computed in weight.dtype like HF. Updates conv_states in place to the last K-1 inputs of each
    sequence. Returns [T, C] in x.dtype.
    """
    out = torch.empty_like(x)
    num_channels, width = weight.shape
    for b in range(state_slots.shape[0]):
        q0, q1 = int(qo_indptr[b]), int(qo_indptr[b + 1])
        if q1 == q0:
            continue
        slot = int(state_slots[b])
        window = torch.cat([conv_states[slot].to(x.dtype), x[q0:q1].t()], dim=-1)  # [C, K-1+L]
        y = F.conv1d(window[None].to(weight.dtype), weight[:, None, :], bias,
                     groups=num_channels)[0]  # [C, L]
        out[q0:q1] = _activate(y, activation).t().to(x.dtype)
        conv_states[slot] = window[:, window.shape[1] - (width - 1):].to(conv_states.dtype)
    return out


def causal_conv1d_update_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    conv_states: torch.Tensor, state_slots: torch.Tensor, activation: str | None = "silu",
) -> torch.Tensor:
    """Reference implementation of one decode step of the causal conv1d.

    x: [B, C] (one new token per sequence); weight: [C, K]; bias: [C] or None;
    conv_states: [num_slots, C, K-1]; state_slots: [B]. Shifts x into each sequence's window in
    place and returns act(conv) [B, C] in x.dtype.
    """
    slots = state_slots.long()
    window = torch.cat([conv_states[slots].to(x.dtype), x[:, :, None]], dim=-1)  # [B, C, K]
    y = (window.to(weight.dtype) * weight).sum(-1)
    if bias is not None:
        y = y + bias
    conv_states[slots] = window[:, :, 1:].to(conv_states.dtype)
    return _activate(y, activation).to(x.dtype)


def causal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    conv_states: torch.Tensor, state_slots: torch.Tensor, qo_indptr: torch.Tensor,
    activation: str | None = "silu", *, max_q_len: int | None = None, backend: str = "auto",
) -> torch.Tensor:
    """Causal conv1d over a ragged batch (see `causal_conv1d_ref`), updating `conv_states`.

    Backends: "ref" (plain torch; a batch of single tokens, max_q_len == 1, takes the decode
    update `causal_conv1d_update_ref`), "triton". Example::

        y = causal_conv1d(x, w, b, conv_states, slots, qo_indptr, "silu", max_q_len=batch.max_q_len)
    """
    return resolve("causal_conv1d", backend, x.device)(
        x, weight, bias, conv_states, state_slots, qo_indptr, activation, max_q_len)


def _causal_conv1d_ref(x, weight, bias, conv_states, state_slots, qo_indptr, activation,
                       max_q_len):
    if max_q_len == 1 and x.shape[0] == state_slots.shape[0]:
        return causal_conv1d_update_ref(x, weight, bias, conv_states, state_slots, activation)
    return causal_conv1d_ref(x, weight, bias, conv_states, state_slots, qo_indptr, activation)


def _causal_conv1d_triton(x, weight, bias, conv_states, state_slots, qo_indptr, activation,
                          max_q_len):
    from vibekit.ops.triton.conv1d import causal_conv1d_triton

    return causal_conv1d_triton(x, weight, bias, conv_states, state_slots, qo_indptr,
                                activation, max_q_len=max_q_len)


register("causal_conv1d", "ref", _causal_conv1d_ref)
register("causal_conv1d", "triton", _causal_conv1d_triton)
