"""The C++ RoPE and KV append (vibekit/ops/csrc/decode_cpu.cpp) give exactly the bits of their
torch references, on strided views like the model's, float32 and bfloat16."""

from __future__ import annotations

import pytest
import torch

from vibekit.ops.cpu_extension import DECODE
from vibekit.ops.kv_append import kv_append, kv_append_ref
from vibekit.ops.rope import apply_rope, apply_rope_ref, rope_cos_sin_cache, rope_inv_freq

needs_kernel = pytest.mark.skipif(not DECODE.available(), reason=f"no C++ build: {DECODE.reason}")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t,hq,hk,d", [(1, 9, 3, 64), (37, 4, 2, 32), (5, 2, 2, 128)])
def test_rope_matches_the_reference_bit_for_bit(dtype, t, hq, hk, d):
    gen = torch.Generator().manual_seed(t * d)
    qkv = (torch.randn(t, (hq + 2 * hk) * d, generator=gen) * 3).to(dtype)
    q, k, _ = qkv.split([hq * d, hk * d, hk * d], dim=-1)  # strided views, as in Attention
    q, k = q.view(t, hq, d), k.view(t, hk, d)
    cos, sin = rope_cos_sin_cache(rope_inv_freq(d, 10000.0), 4096)
    pos = torch.randint(0, 4096, (t,), generator=gen)
    want = apply_rope_ref(q, k, pos, cos, sin)
    got = apply_rope(q, k, pos, cos, sin, backend="cpu")
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape and torch.equal(g, w)


@needs_kernel
def test_rope_refuses_positions_outside_the_table():
    q = torch.randn(2, 1, 8)
    cos, sin = rope_cos_sin_cache(rope_inv_freq(8, 10000.0), 16)
    with pytest.raises(RuntimeError, match="positions outside the table"):
        apply_rope(q, q, torch.tensor([3, 16]), cos, sin, backend="cpu")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_append_matches_the_reference(dtype):
    gen = torch.Generator().manual_seed(0)
    t, hk, d, pages, size = 11, 3, 16, 6, 4
    qkv = torch.randn(t, 5 * hk * d, generator=gen).to(dtype)
    _, k, v = qkv.split([3 * hk * d, hk * d, hk * d], dim=-1)
    k, v = k.view(t, hk, d), v.view(t, hk, d)
    slots = torch.randperm(pages * size, generator=gen)[:t]
    slots[[2, 7]] = -1  # padding rows are skipped
    caches = [torch.zeros(pages, size, hk, d, dtype=dtype) for _ in range(4)]
    kv_append_ref(k, v, caches[0], caches[1], slots)
    kv_append(k, v, caches[2], caches[3], slots, backend="cpu")
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    with pytest.raises(RuntimeError, match="outside the cache"):
        kv_append(k, v, caches[2], caches[3], torch.full((t,), pages * size), backend="cpu")
