"""Triton Mamba2 scan over a ragged batch: the recurrence token by token per (sequence, head,
head-dim block), the state tile held in registers (prefill and the decode update alike)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _mamba2_scan_kernel(
    x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, state_ptr, slot_ptr, indptr_ptr, y_ptr,
    stride_xt, stride_xh, stride_dtt, stride_bt, stride_bg, stride_ct, stride_cg,
    stride_ss, stride_sh, stride_sp, stride_yt, stride_yh,
    head_dim, state_size, heads_per_group,
    HAS_D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < head_dim
    mask_n = offs_n < state_size
    q0 = tl.load(indptr_ptr + seq)
    q1 = tl.load(indptr_ptr + seq + 1)
    slot = tl.load(slot_ptr + seq).to(tl.int64)
    group = head // heads_per_group
    s_ptrs = (state_ptr + slot * stride_ss + head * stride_sh + offs_p[:, None] * stride_sp
              + offs_n[None, :])
    mask_s = mask_p[:, None] & mask_n[None, :]
    state = tl.load(s_ptrs, mask=mask_s, other=0.0).to(tl.float32)  # [BLOCK_P, BLOCK_N]
    a = tl.load(a_ptr + head).to(tl.float32)
    d = 0.0
    if HAS_D:
        d = tl.load(d_ptr + head).to(tl.float32)
    for t in range(q0, q1):
        x = tl.load(x_ptr + t * stride_xt + head * stride_xh + offs_p, mask=mask_p,
                    other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + t * stride_dtt + head).to(tl.float32)
        b = tl.load(b_ptr + t * stride_bt + group * stride_bg + offs_n, mask=mask_n,
                    other=0.0).to(tl.float32)
        c = tl.load(c_ptr + t * stride_ct + group * stride_cg + offs_n, mask=mask_n,
                    other=0.0).to(tl.float32)
        state = state * tl.exp(dt * a) + (dt * x)[:, None] * b[None, :]
        y = tl.sum(state * c[None, :], axis=1) + d * x
        tl.store(y_ptr + t * stride_yt + head * stride_yh + offs_p, y, mask=mask_p)
    tl.store(s_ptrs, state.to(state_ptr.dtype.element_ty), mask=mask_s)


def mamba2_scan_triton(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, ssm_states: torch.Tensor, state_slots: torch.Tensor,
    qo_indptr: torch.Tensor,
) -> torch.Tensor:
    """Triton version of `mamba2_scan` (see there): x [T, H, P], dt [T, H], A [H],
    B, C [T, G, N], D [H] or None, ssm_states [num_slots, H, P, N] updated in place.
    Returns y [T, H, P] float32."""
    num_tokens, num_heads, head_dim = x.shape
    num_groups, state_size = B.shape[1], B.shape[2]
    assert dt.shape == (num_tokens, num_heads) and A.shape == (num_heads,), "dt [T, H], A [H]"
    assert B.shape == C.shape == (num_tokens, num_groups, state_size), "B, C [T, G, N]"
    assert num_heads % num_groups == 0, "H must be a multiple of G"
    assert ssm_states.shape[1:] == (num_heads, head_dim, state_size), (
        f"ssm_states {tuple(ssm_states.shape)} is not [*, {num_heads}, {head_dim}, {state_size}]")
    for name, t in (("x", x), ("dt", dt), ("B", B), ("C", C), ("ssm_states", ssm_states)):
        assert t.stride(-1) == 1, f"{name} must be contiguous in its last dim"
    y = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    num_seqs = state_slots.shape[0]
    if num_tokens == 0 or num_seqs == 0:
        return y
    block_p = min(triton.next_power_of_2(head_dim), 32)
    grid = (num_seqs, num_heads, triton.cdiv(head_dim, block_p))
    _mamba2_scan_kernel[grid](
        x, dt, A.float().contiguous(), B, C, D if D is not None else A, ssm_states,
        state_slots.contiguous(), qo_indptr.contiguous(), y,
        x.stride(0), x.stride(1), dt.stride(0), B.stride(0), B.stride(1), C.stride(0),
        C.stride(1), ssm_states.stride(0), ssm_states.stride(1), ssm_states.stride(2),
        y.stride(0), y.stride(1), head_dim, state_size, num_heads // num_groups,
        HAS_D=D is not None, BLOCK_P=block_p, BLOCK_N=triton.next_power_of_2(state_size),
    )
    return y
