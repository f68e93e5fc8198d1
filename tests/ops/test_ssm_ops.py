"""Causal conv1d, the Mamba2 scan and the gated delta rule: every backend against the
token-by-token reference on ragged batches of odd sizes, plus long-run bf16 precision."""

from __future__ import annotations

import pytest
import torch

from vibekit.ops.conv1d import causal_conv1d, causal_conv1d_ref
from vibekit.ops.gated_delta import gated_delta_rule, gated_delta_rule_ref
from vibekit.ops.mamba2_scan import mamba2_scan, mamba2_scan_ref
from vibekit.ops.registry import backends

BACKENDS = ["torch", "triton"]  # the scans; causal_conv1d has ref and triton only
LENS = [[1], [19, 1, 5], [1, 1, 1]]  # prefill, mixed, decode-only


def _ragged(lens):
    indptr = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    slots = torch.tensor([2 * i + 1 for i in range(len(lens))], dtype=torch.int64)
    return indptr, slots, max(lens)


@pytest.mark.parametrize("backend", [b for b in backends("causal_conv1d") if b != "ref"])
@pytest.mark.parametrize("lens", LENS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_causal_conv1d_matches_reference(backend, lens, dtype):
    gen = torch.Generator().manual_seed(0)
    channels, width = 13, 4
    indptr, slots, max_q = _ragged(lens)
    x = torch.randn(sum(lens), channels, generator=gen).to(dtype)
    w, b = torch.randn(channels, width, generator=gen), torch.randn(channels, generator=gen)
    states = torch.randn(2 * len(lens) + 1, channels, width - 1, generator=gen).to(dtype)
    ref_states = states.clone()
    expected = causal_conv1d_ref(x, w, b, ref_states, slots, indptr, "silu")
    got = causal_conv1d(x, w, b, states, slots, indptr, "silu", max_q_len=max_q, backend=backend)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
    torch.testing.assert_close(states, ref_states, atol=tol, rtol=tol)


def _mamba_inputs(lens, gen, heads=4, head_dim=6, groups=2, state=5):
    t = sum(lens)
    return dict(
        x=torch.randn(t, heads, head_dim, generator=gen), dt=torch.rand(t, heads, generator=gen),
        A=-torch.rand(heads, generator=gen) - 0.2, B=torch.randn(t, groups, state, generator=gen),
        C=torch.randn(t, groups, state, generator=gen), D=torch.randn(heads, generator=gen),
    ), torch.randn(2 * len(lens) + 1, heads, head_dim, state, generator=gen)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lens", LENS + [[99]])
def test_mamba2_scan_matches_reference(backend, lens):
    gen = torch.Generator().manual_seed(1)
    indptr, slots, max_q = _ragged(lens)
    inputs, states = _mamba_inputs(lens, gen)
    expected_states = states.clone()
    expected = torch.empty_like(inputs["x"])
    for b, (q0, q1) in enumerate(zip(indptr[:-1].tolist(), indptr[1:].tolist())):
        part = {k: (v[q0:q1] if k in "xdtBC" and v.dim() > 1 else v) for k, v in inputs.items()}
        expected[q0:q1], expected_states[slots[b]] = mamba2_scan_ref(
            part["x"], part["dt"], part["A"], part["B"], part["C"], part["D"],
            states[slots[b]])
    got = mamba2_scan(**inputs, ssm_states=states, state_slots=slots, qo_indptr=indptr,
                      chunk_size=8, max_q_len=max_q, backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(states, expected_states, atol=1e-4, rtol=1e-4)


def _delta_inputs(lens, gen, k_heads=2, v_heads=4, k_dim=8, v_dim=6):
    t = sum(lens)
    return dict(
        q=torch.randn(t, k_heads, k_dim, generator=gen), k=torch.randn(t, k_heads, k_dim,
                                                                      generator=gen),
        v=torch.randn(t, v_heads, v_dim, generator=gen),
        g=-torch.rand(t, v_heads, generator=gen), beta=torch.rand(t, v_heads, generator=gen),
    ), torch.randn(2 * len(lens) + 1, v_heads, k_dim, v_dim, generator=gen)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lens", LENS + [[99]])
def test_gated_delta_rule_matches_reference(backend, lens):
    gen = torch.Generator().manual_seed(2)
    indptr, slots, max_q = _ragged(lens)
    inputs, states = _delta_inputs(lens, gen)
    expected_states = states.clone()
    expected = torch.empty_like(inputs["v"])
    for b, (q0, q1) in enumerate(zip(indptr[:-1].tolist(), indptr[1:].tolist())):
        part = [inputs[n][q0:q1] for n in ("q", "k", "v", "g", "beta")]
        expected[q0:q1], expected_states[slots[b]] = gated_delta_rule_ref(*part,
                                                                          states[slots[b]])
    got = gated_delta_rule(**inputs, states=states, state_slots=slots, qo_indptr=indptr,
                           chunk_size=8, max_q_len=max_q, backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(states, expected_states, atol=1e-4, rtol=1e-4)


def test_long_run_bf16_decode_tracks_float32():
    """300 decode steps with bf16 inputs and conv state (SSM state kept in float32, as the
    engine does) stay within bf16 rounding of the float32 run: errors do not accumulate."""
    gen = torch.Generator().manual_seed(3)
    steps, heads, head_dim, state_size = 300, 4, 8, 16
    x = torch.randn(steps, 1, heads, head_dim, generator=gen)
    dt = torch.rand(steps, 1, heads, generator=gen) * 0.5
    A = -torch.rand(heads, generator=gen) - 0.1
    B = torch.randn(steps, 1, 1, state_size, generator=gen)
    C = torch.randn(steps, 1, 1, state_size, generator=gen)
    q, k = torch.randn(steps, 1, 2, 8, generator=gen), torch.randn(steps, 1, 2, 8, generator=gen)
    v = torch.randn(steps, 1, 4, 8, generator=gen)
    g, beta = -torch.rand(steps, 1, 4, generator=gen) * 0.1, torch.rand(steps, 1, 4,
                                                                         generator=gen)
    slots, indptr = torch.zeros(1, dtype=torch.int64), torch.tensor([0, 1], dtype=torch.int32)
    worst = {}
    for dtype in (torch.float32, torch.bfloat16):
        ssm = torch.zeros(1, heads, head_dim, state_size)
        delta = torch.zeros(1, 4, 8, 8)
        ys, os_ = [], []
        for t in range(steps):
            ys.append(mamba2_scan(x[t].to(dtype), dt[t], A, B[t].to(dtype), C[t].to(dtype),
                                  None, ssm, slots, indptr, max_q_len=1))
            os_.append(gated_delta_rule(q[t].to(dtype), k[t].to(dtype), v[t].to(dtype), g[t],
                                        beta[t], delta, slots, indptr, max_q_len=1))
        worst[dtype] = torch.stack(ys), torch.stack(os_)
    for got, ref in zip(worst[torch.bfloat16], worst[torch.float32]):
        err = (got - ref).abs()
        scale = ref.abs().mean()
        assert err.mean() < 0.02 * scale  # bf16 input rounding, not drift
        assert err[-50:].mean() < 2 * err[:50].mean() + 1e-3 * scale  # no growth over the run
