"""Mamba2 selective state-space scan (SSD): prefill over a ragged batch and the decode update.

Per head h the state S [P, N] evolves as S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T and the
output is y_t = S_t C_t + D_h x_t, with B and C shared by the heads of a group.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from vibekit.ops.registry import register, resolve


def _per_head(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[..., G, N] -> [..., H, N]: each group serves num_heads // G consecutive heads."""
    return t.repeat_interleave(num_heads // t.shape[-2], dim=-2)


def mamba2_scan_ref(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation of the Mamba2 scan for one sequence, one token at a time.

    x: [L, H, P]; dt: [L, H] (already softplus'd, biased and clamped); A: [H] (negative);
    B, C: [L, G, N]; D: [H] or None; state: [H, P, N], the state before x[0].
    Computed in float32. Returns (y [L, H, P] float32, final state [H, P, N] float32).
    """
    num_heads = x.shape[1]
    x, dt, A = x.float(), dt.float(), A.float()
    B, C = _per_head(B.float(), num_heads), _per_head(C.float(), num_heads)  # [L, H, N]
    state = state.float().clone()
    y = torch.empty_like(x)
    for t in range(x.shape[0]):
        decay = torch.exp(dt[t] * A)[:, None, None]  # [H, 1, 1]
        state = state * decay + (dt[t, :, None] * x[t])[:, :, None] * B[t][:, None, :]
        y[t] = (state * C[t][:, None, :]).sum(-1)
    if D is not None:
        y = y + D.float()[:, None] * x
    return y, state


def _segment_sum(a: torch.Tensor) -> torch.Tensor:
    """[..., l] -> [..., l, l]: out[i, j] = sum(a[j+1 .. i]) for j <= i, -inf above the diagonal."""
    size = a.shape[-1]
    a = a[..., None].expand(*a.shape, size)
    a = a.masked_fill(~torch.tril(torch.ones(size, size, dtype=torch.bool, device=a.device), -1), 0)
    out = torch.cumsum(a, dim=-2)
    return out.masked_fill(~torch.tril(torch.ones(size, size, dtype=torch.bool,
                                                  device=a.device)), -torch.inf)


def mamba2_chunk_scan_torch(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, state: torch.Tensor, chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked (SSD) form of `mamba2_scan_ref`, same arguments and results: quadratic
    attention-like work inside chunks of `chunk_size`, a recurrence over chunk states between
    them (the algorithm of HF transformers' torch path)."""
    seq_len, num_heads, head_dim = x.shape
    x, dt, A = x.float(), dt.float(), A.float()
    B, C = _per_head(B.float(), num_heads), _per_head(C.float(), num_heads)  # [L, H, N]
    pad = (chunk_size - seq_len % chunk_size) % chunk_size
    x_dt = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad))
    a = F.pad(A * dt, (0, 0, 0, pad))  # [L', H]
    B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
    nc = x_dt.shape[0] // chunk_size
    x_dt = x_dt.view(nc, chunk_size, num_heads, head_dim)  # [c, l, h, p]
    B = B.view(nc, chunk_size, num_heads, -1)  # [c, l, h, n]
    C = C.view(nc, chunk_size, num_heads, -1)
    a = a.view(nc, chunk_size, num_heads).permute(2, 0, 1)  # [h, c, l]
    a_cumsum = torch.cumsum(a, dim=-1)
    # 1. within chunks: y = (C B^T * decay mask) x
    decay = torch.exp(_segment_sum(a))  # [h, c, l, s]
    scores = torch.einsum("clhn,cshn->clsh", C, B) * decay.permute(1, 2, 3, 0)
    y_diag = torch.einsum("clsh,cshp->clhp", scores, x_dt)
    # 2. the state each chunk adds at its end
    decay_states = torch.exp(a_cumsum[:, :, -1:] - a_cumsum)  # [h, c, l]
    states = torch.einsum("clhn,hcl,clhp->chpn", B, decay_states, x_dt)
    # 3. recurrence over chunk boundaries, starting from `state`
    states = torch.cat([state.float()[None], states], dim=0)  # [c+1, h, p, n]
    decay_chunk = torch.exp(_segment_sum(F.pad(a_cumsum[:, :, -1], (1, 0))))  # [h, c+1, c+1]
    new_states = torch.einsum("hzc,chpn->zhpn", decay_chunk, states)
    states, final_state = new_states[:-1], new_states[-1]
    # 4. contribution of each chunk's start state to its outputs
    y_off = torch.einsum("clhn,chpn,hcl->clhp", C, states, torch.exp(a_cumsum))
    y = (y_diag + y_off).reshape(-1, num_heads, head_dim)[:seq_len]
    if D is not None:
        y = y + D.float()[:, None] * x
    return y, final_state


def mamba2_state_update_ref(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, ssm_states: torch.Tensor, state_slots: torch.Tensor,
) -> torch.Tensor:
    """Reference implementation of one Mamba2 decode step for a batch of sequences.

    x: [B, H, P]; dt: [B, H]; A: [H]; B, C: [B, G, N]; D: [H] or None;
    ssm_states: [num_slots, H, P, N] (updated in place); state_slots: [B].
    Returns y [B, H, P] float32.
    """
    slots = state_slots.long()
    num_heads = x.shape[1]
    xf, dtf = x.float(), dt.float()
    Bh, Ch = _per_head(B.float(), num_heads), _per_head(C.float(), num_heads)  # [B, H, N]
    decay = torch.exp(dtf * A.float())[..., None, None]  # [B, H, 1, 1]
    state = ssm_states[slots].float() * decay + (dtf[..., None] * xf)[..., None] * Bh[:, :, None]
    ssm_states[slots] = state.to(ssm_states.dtype)
    y = (state * Ch[:, :, None, :]).sum(-1)  # [B, H, P]
    if D is not None:
        y = y + D.float()[:, None] * xf
    return y


def mamba2_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, ssm_states: torch.Tensor, state_slots: torch.Tensor,
    qo_indptr: torch.Tensor, *, chunk_size: int = 256, max_q_len: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Mamba2 scan over a ragged batch, reading and updating each sequence's state in place.

    x: [T, H, P]; dt: [T, H]; A: [H]; B, C: [T, G, N]; D: [H] or None;
    ssm_states: [num_slots, H, P, N]; state_slots: [B]; qo_indptr: [B+1]. Returns y [T, H, P]
    float32. Backends: "ref" (token by token), "torch" (chunked SSD), "triton"; a batch of
    single tokens takes the decode update in both torch paths. Example::

        y = mamba2_scan(x, dt, A, B, C, D, states, slots, batch.qo_indptr, max_q_len=1)
    """
    return resolve("mamba2_scan", backend, x.device)(
        x, dt, A, B, C, D, ssm_states, state_slots, qo_indptr, chunk_size, max_q_len)


def _mamba2_scan_ragged(x, dt, A, B, C, D, ssm_states, state_slots, qo_indptr, chunk_size,
                        max_q_len, chunked: bool):
    if max_q_len == 1 and x.shape[0] == state_slots.shape[0]:
        return mamba2_state_update_ref(x, dt, A, B, C, D, ssm_states, state_slots)
    y = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for b in range(state_slots.shape[0]):
        q0, q1 = int(qo_indptr[b]), int(qo_indptr[b + 1])
        if q1 == q0:
            continue
        slot = int(state_slots[b])
        args = (x[q0:q1], dt[q0:q1], A, B[q0:q1], C[q0:q1], D, ssm_states[slot])
        if not chunked or q1 - q0 == 1:
            y[q0:q1], final = mamba2_scan_ref(*args)
        else:
            y[q0:q1], final = mamba2_chunk_scan_torch(*args, chunk_size=chunk_size)
        ssm_states[slot] = final.to(ssm_states.dtype)
    return y


def _mamba2_scan_triton(x, dt, A, B, C, D, ssm_states, state_slots, qo_indptr, chunk_size,
                        max_q_len):
    from vibekit.ops.triton.mamba2_scan import mamba2_scan_triton

    return mamba2_scan_triton(x, dt, A, B, C, D, ssm_states, state_slots, qo_indptr)


register("mamba2_scan", "ref", functools.partial(_mamba2_scan_ragged, chunked=False))
register("mamba2_scan", "torch", functools.partial(_mamba2_scan_ragged, chunked=True))
register("mamba2_scan", "triton", _mamba2_scan_triton)
