"""CFGCache: the guided output on steps that run the unconditional branch and on steps that
reuse, extrapolate, reweight or drop its cached delta."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vibekit.cfg import CFGCache, CFGCachePolicy, cfg_combine_ref, frequency_reweight_ref


def branches(num_steps: int, batch: int = 3, shape=(4, 5), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    cond = [torch.randn(batch, *shape, generator=gen) for _ in range(num_steps)]
    uncond = [torch.randn(batch, *shape, generator=gen) for _ in range(num_steps)]
    return cond, uncond


def run(cache: CFGCache, cond, uncond) -> list[torch.Tensor]:
    out = []
    for step in range(len(cond)):
        rows = cache.uncond_rows(step)
        u = uncond[step][rows] if rows else None
        out.append(cache.guide(step, cond[step], u, rows))
    return out


def test_full_cfg_is_uncond_plus_scale_times_difference():
    cond, uncond = branches(5)
    out = run(CFGCache(CFGCachePolicy.full(), 5, 3.5, 3), cond, uncond)
    for c, u, o in zip(cond, uncond, out):
        assert torch.equal(o, cfg_combine_ref(c, u, 3.5))
        torch.testing.assert_close(o, u + 3.5 * (c - u))


def test_skipped_steps_reuse_the_last_delta():
    cond, uncond = branches(6)
    out = run(CFGCache(CFGCachePolicy.every(3), 6, 2.0, 3), cond, uncond)
    for step in range(6):
        last = step - step % 3
        expected = cond[step] + 1.0 * (cond[last] - uncond[last])
        torch.testing.assert_close(out[step], expected)


def test_extrapolated_delta_is_linear_in_the_step():
    cond, uncond = branches(7)
    out = run(CFGCache(CFGCachePolicy.every(2, extrapolate=True), 7, 2.0, 3), cond, uncond)
    d = {s: cond[s] - uncond[s] for s in (0, 2, 4, 6)}
    torch.testing.assert_close(out[1], cond[1] + d[0])  # one delta only: plain reuse
    torch.testing.assert_close(out[3], cond[3] + d[2] + 0.5 * (d[2] - d[0]))
    torch.testing.assert_close(out[5], cond[5] + d[4] + 0.5 * (d[4] - d[2]))


def test_drop_gate_returns_cond_after_the_gate():
    cond, uncond = branches(5)
    cache = CFGCache(CFGCachePolicy.gate(gate_step=2), 5, 4.0, 3)
    out = run(cache, cond, uncond)
    assert cache.num_uncond_rows == 2 * 3
    for step in (2, 3, 4):
        assert torch.equal(out[step], cond[step])


def test_cosine_gate_closes_only_rows_whose_branches_agree():
    cond, uncond = branches(4)
    uncond = [u.clone() for u in uncond]
    uncond[0][1] = cond[0][1] * 1.01  # row 1: cond and uncond nearly parallel
    cache = CFGCache(CFGCachePolicy.gate(gate_cos=0.99), 4, 2.0, 3)
    out = run(cache, cond, uncond)
    assert cache.gated == [False, True, False]
    assert cache.uncond_rows(1) == [0, 2]
    assert torch.equal(out[1][1], cond[1][1])


def test_scale_one_never_needs_uncond():
    cond, uncond = branches(3)
    cache = CFGCache(CFGCachePolicy.full(), 3, 1.0, 3)
    out = run(cache, cond, uncond)
    assert cache.num_uncond_rows == 0
    assert all(torch.equal(o, c) for o, c in zip(out, cond))


def test_guide_rejects_rows_other_than_uncond_rows():
    cond, uncond = branches(2)
    cache = CFGCache(CFGCachePolicy.full(), 2, 2.0, 3)
    with pytest.raises(AssertionError, match="uncond_rows"):
        cache.guide(0, cond[0], uncond[0][:2], [0, 1])


def _diffusers_style_split(x: np.ndarray, radius: int):
    """FasterCache's split as published (shifted FFT, disc of `radius` around the centre)."""
    spectrum = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    h, w = x.shape[-2:]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    low = (xx - w // 2) ** 2 + (yy - h // 2) ** 2 <= radius**2
    return spectrum * low, spectrum * ~low


@pytest.mark.parametrize("size", [(16, 16), (9, 12)])
def test_frequency_reweight_matches_the_shifted_fft_split(size):
    x = np.random.default_rng(0).standard_normal((2, 1, *size)).astype(np.float32)
    radius = max(1, int(0.2 * min(size)))
    low, high = _diffusers_style_split(x.astype(np.float64), radius)
    expected = np.fft.ifft2(np.fft.ifftshift(1.3 * low + 0.7 * high, axes=(-2, -1))).real
    got = frequency_reweight_ref(torch.from_numpy(x), 1.3, 0.7, 0.2)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    torch.testing.assert_close(frequency_reweight_ref(torch.from_numpy(x), 1.0, 1.0, 0.2),
                               torch.from_numpy(x), atol=1e-5, rtol=0)


def test_fastercache_reweights_only_reused_rows():
    cond, uncond = branches(4, shape=(1, 8, 8))
    policy = CFGCachePolicy.fastercache(interval=2, alpha_low=1.5, alpha_high=0.5)
    ident = lambda x: x  # noqa: E731
    out = run(CFGCache(policy, 4, 2.0, 3, to_grid=ident, from_grid=ident), cond, uncond)
    d0 = cond[0] - uncond[0]
    torch.testing.assert_close(out[1], cond[1] + frequency_reweight_ref(d0, 1.5, 1.0, 0.2))
    torch.testing.assert_close(out[2], cfg_combine_ref(cond[2], uncond[2], 2.0))
    torch.testing.assert_close(out[3], cond[3] + frequency_reweight_ref(
        cond[2] - uncond[2], 1.5, 0.5, 0.2))
