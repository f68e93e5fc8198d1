"""Triton gated delta rule over a ragged batch: the recurrence token by token per (sequence,
value head, value-dim block), the [Dk, BLOCK_V] state tile held in registers."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gated_delta_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, state_ptr, slot_ptr, indptr_ptr, o_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_gt, stride_bt,
    stride_ss, stride_sh, stride_sk, stride_ot, stride_oh,
    k_dim, v_dim, v_heads_per_k_head, scale,
    L2NORM: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    offs_k = tl.arange(0, BLOCK_K)
    mask_v = offs_v < v_dim
    mask_k = offs_k < k_dim
    q0 = tl.load(indptr_ptr + seq)
    q1 = tl.load(indptr_ptr + seq + 1)
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    k_head = head // v_heads_per_k_head
    s_ptrs = (state_ptr + slot * stride_ss + head * stride_sh + offs_k[:, None] * stride_sk
              + offs_v[None, :])
    mask_s = mask_k[:, None] & mask_v[None, :]
    state = tl.load(s_ptrs, mask=mask_s, other=0.0).to(tl.float32)  # [BLOCK_K, BLOCK_V]
    for t in range(q0, q1):
        q = tl.load(q_ptr + t * stride_qt + k_head * stride_qh + offs_k, mask=mask_k,
                    other=0.0).to(tl.float32)
        k = tl.load(k_ptr + t * stride_kt + k_head * stride_kh + offs_k, mask=mask_k,
                    other=0.0).to(tl.float32)
        if L2NORM:
            q = q / tl.sqrt(tl.sum(q * q, axis=0) + 1e-6)
            k = k / tl.sqrt(tl.sum(k * k, axis=0) + 1e-6)
        v = tl.load(v_ptr + t * stride_vt + head * stride_vh + offs_v, mask=mask_v,
                    other=0.0).to(tl.float32)
        g = tl.load(g_ptr + t * stride_gt + head).to(tl.float32)
        beta = tl.load(beta_ptr + t * stride_bt + head).to(tl.float32)
        state = state * tl.exp(g)
        predicted = tl.sum(state * k[:, None], axis=0)  # [BLOCK_V]
        delta = (v - predicted) * beta
        state = state + k[:, None] * delta[None, :]
        o = tl.sum(state * q[:, None], axis=0) * scale
        tl.store(o_ptr + t * stride_ot + head * stride_oh + offs_v, o, mask=mask_v)
    tl.store(s_ptrs, state.to(state_ptr.dtype.element_ty), mask=mask_s)


def gated_delta_rule_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
    states: torch.Tensor, state_slots: torch.Tensor, qo_indptr: torch.Tensor,
    use_qk_l2norm: bool = True,
) -> torch.Tensor:
    """Triton version of `gated_delta_rule` (see there): q, k [T, Hk, Dk], v [T, Hv, Dv],
    g, beta [T, Hv], states [num_slots, Hv, Dk, Dv] updated in place. Returns o float32."""
    num_tokens, num_k_heads, k_dim = q.shape
    num_v_heads, v_dim = v.shape[1], v.shape[2]
    assert k.shape == q.shape, f"k {tuple(k.shape)} != q {tuple(q.shape)}"
    assert num_v_heads % num_k_heads == 0, "Hv must be a multiple of Hk"
    assert g.shape == beta.shape == (num_tokens, num_v_heads), "g, beta [T, Hv]"
    assert states.shape[1:] == (num_v_heads, k_dim, v_dim), (
        f"states {tuple(states.shape)} is not [*, {num_v_heads}, {k_dim}, {v_dim}]")
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta), ("states", states)):
        assert t.stride(-1) == 1, f"{name} must be contiguous in its last dim"
    o = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    num_seqs = state_slots.shape[0]
    if num_tokens == 0 or num_seqs == 0:
        return o
    block_v = min(triton.next_power_of_2(v_dim), 32)
    grid = (num_seqs, num_v_heads, triton.cdiv(v_dim, block_v))
    _gated_delta_kernel[grid](
        q, k, v, g, beta, states, state_slots.contiguous(), qo_indptr.contiguous(), o,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        g.stride(0), beta.stride(0), states.stride(0), states.stride(1), states.stride(2),
        o.stride(0), o.stride(1), k_dim, v_dim, num_v_heads // num_k_heads, k_dim**-0.5,
        L2NORM=use_qk_l2norm, BLOCK_K=triton.next_power_of_2(k_dim), BLOCK_V=block_v,
    )
    return o
