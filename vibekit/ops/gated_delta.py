"""Gated delta rule (gated DeltaNet linear attention): chunked prefill over a ragged batch and
the recurrent decode step.

Per value head the state S [Dk, Dv] evolves as S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t -
exp(g_t) S_{t-1}^T k_t))^T and the output is o_t = S_t^T q_t / sqrt(Dk), with q and k
L2-normalized and shared by the value heads of a key head.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from vibekit.ops.registry import register, resolve


def _prepare(q: torch.Tensor, k: torch.Tensor, num_v_heads: int,
             use_qk_l2norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = q.float(), k.float()
    if use_qk_l2norm:  # as the FLA library: x / sqrt(sum(x^2) + 1e-6)
        q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    group = num_v_heads // q.shape[-2]
    q = q.repeat_interleave(group, dim=-2) * q.shape[-1] ** -0.5
    return q, k.repeat_interleave(group, dim=-2)


def gated_delta_rule_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
    state: torch.Tensor, use_qk_l2norm: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation of the gated delta rule for one sequence, token by token.

    q, k: [L, Hk, Dk]; v: [L, Hv, Dv] (Hv a multiple of Hk); g: [L, Hv] log decay (<= 0);
    beta: [L, Hv] in (0, 1); state: [Hv, Dk, Dv], the state before the first token.
    Computed in float32. Returns (o [L, Hv, Dv] float32, final state [Hv, Dk, Dv] float32).
    """
    q, k = _prepare(q, k, v.shape[1], use_qk_l2norm)
    v, g, beta = v.float(), g.float(), beta.float()
    state = state.float().clone()
    o = torch.empty_like(v)
    for t in range(v.shape[0]):
        state = state * g[t].exp()[:, None, None]
        predicted = (state * k[t][:, :, None]).sum(1)  # [Hv, Dv]
        delta = (v[t] - predicted) * beta[t][:, None]
        state = state + k[t][:, :, None] * delta[:, None, :]
        o[t] = (state * q[t][:, :, None]).sum(1)
    return o, state


def gated_delta_rule_chunked_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
    state: torch.Tensor, use_qk_l2norm: bool = True, chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked (WY / UT-transform) form of `gated_delta_rule_ref`, same arguments and results
    (the algorithm of HF transformers' torch path)."""
    seq_len, num_v_heads, v_dim = v.shape
    q, k = _prepare(q, k, num_v_heads, use_qk_l2norm)
    # [H, L, D] layout, padded to whole chunks
    q, k, v = (t.transpose(0, 1) for t in (q, k, v.float()))
    g, beta = g.float().t(), beta.float().t()  # [H, L]
    pad = (chunk_size - seq_len % chunk_size) % chunk_size
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    v_beta, k_beta = v * beta[..., None], k * beta[..., None]
    h = num_v_heads
    q, k, k_beta, v_beta = (t.reshape(h, -1, chunk_size, t.shape[-1])
                            for t in (q, k, k_beta, v_beta))  # [H, c, l, D]
    g = g.reshape(h, -1, chunk_size).cumsum(-1)  # [H, c, l]
    upper = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).triu(1)
    decay = (g[..., :, None] - g[..., None, :]).masked_fill(upper, float("-inf")).exp()
    ut_system = (k_beta @ k.transpose(-1, -2)) * decay
    intra = (q @ k.transpose(-1, -2)) * decay
    new_values = torch.linalg.solve_triangular(ut_system, v_beta, upper=False,
                                               unitriangular=True)
    k_cumdecay = torch.linalg.solve_triangular(ut_system, k_beta * g.exp()[..., None],
                                               upper=False, unitriangular=True)
    s = state.float().clone()
    o = torch.zeros_like(new_values)
    q = q * g.exp()[..., None]
    k = k * (g[..., -1:] - g).exp()[..., None]
    chunk_decay = g[..., -1].exp()[..., None, None]  # [H, c, 1, 1]
    for i in range(q.shape[1]):
        v_new = new_values[:, i] - k_cumdecay[:, i] @ s
        o[:, i] = q[:, i] @ s + intra[:, i].masked_fill(upper, 0) @ v_new
        s = s * chunk_decay[:, i] + k[:, i].transpose(-1, -2) @ v_new
    o = o.reshape(h, -1, v_dim)[:, :seq_len].transpose(0, 1)
    return o.contiguous(), s


def gated_delta_update_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
    states: torch.Tensor, state_slots: torch.Tensor, use_qk_l2norm: bool = True,
) -> torch.Tensor:
    """Reference implementation of one recurrent decode step for a batch of sequences.

    q, k: [B, Hk, Dk]; v: [B, Hv, Dv]; g, beta: [B, Hv]; states: [num_slots, Hv, Dk, Dv]
    (updated in place); state_slots: [B]. Returns o [B, Hv, Dv] float32.
    """
    slots = state_slots.long()
    q, k = _prepare(q, k, v.shape[1], use_qk_l2norm)
    s = states[slots].float() * g.float().exp()[..., None, None]  # [B, Hv, Dk, Dv]
    delta = (v.float() - (s * k[..., None]).sum(-2)) * beta.float()[..., None]
    s = s + k[..., None] * delta[..., None, :]
    states[slots] = s.to(states.dtype)
    return (s * q[..., None]).sum(-2)


def gated_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
    states: torch.Tensor, state_slots: torch.Tensor, qo_indptr: torch.Tensor, *,
    use_qk_l2norm: bool = True, chunk_size: int = 64, max_q_len: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Gated delta rule over a ragged batch, reading and updating each sequence's state in place.

    q, k: [T, Hk, Dk]; v: [T, Hv, Dv]; g, beta: [T, Hv]; states: [num_slots, Hv, Dk, Dv];
    state_slots: [B]; qo_indptr: [B+1]. Returns o [T, Hv, Dv] float32. Backends: "ref" (token by
    token), "torch" (chunked), "triton"; a batch of single tokens takes the recurrent update in
    both torch paths.
    """
    return resolve("gated_delta_rule", backend, v.device)(
        q, k, v, g, beta, states, state_slots, qo_indptr, use_qk_l2norm, chunk_size, max_q_len)


def _gated_delta_ragged(q, k, v, g, beta, states, state_slots, qo_indptr, use_qk_l2norm,
                        chunk_size, max_q_len, chunked: bool):
    if max_q_len == 1 and v.shape[0] == state_slots.shape[0]:
        return gated_delta_update_ref(q, k, v, g, beta, states, state_slots, use_qk_l2norm)
    o = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    for b in range(state_slots.shape[0]):
        q0, q1 = int(qo_indptr[b]), int(qo_indptr[b + 1])
        if q1 == q0:
            continue
        slot = int(state_slots[b])
        args = (q[q0:q1], k[q0:q1], v[q0:q1], g[q0:q1], beta[q0:q1], states[slot],
                use_qk_l2norm)
        if not chunked or q1 - q0 == 1:
            o[q0:q1], final = gated_delta_rule_ref(*args)
        else:
            o[q0:q1], final = gated_delta_rule_chunked_torch(*args, chunk_size=chunk_size)
        states[slot] = final.to(states.dtype)
    return o


def _gated_delta_triton(q, k, v, g, beta, states, state_slots, qo_indptr, use_qk_l2norm,
                        chunk_size, max_q_len):
    from vibekit.ops.triton.gated_delta import gated_delta_rule_triton

    return gated_delta_rule_triton(q, k, v, g, beta, states, state_slots, qo_indptr,
                                   use_qk_l2norm=use_qk_l2norm)


register("gated_delta_rule", "ref", functools.partial(_gated_delta_ragged, chunked=False))
register("gated_delta_rule", "torch", functools.partial(_gated_delta_ragged, chunked=True))
register("gated_delta_rule", "triton", _gated_delta_triton)
