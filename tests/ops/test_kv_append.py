"""KV append: the reference against a plain loop, and every backend against the reference."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vibekit.ops import kv_append, kv_append_ref

from .paged_batch import DEVICE

HAS_TRITON = importlib.util.find_spec("triton") is not None
# Every backend but the reference itself (the spec's one index_put is the torch path).
BACKENDS = [
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")),
]


def _new_tokens(num_tokens, num_kv_heads, head_dim, dtype, seed=0):
    """k, v [T, Hk, D] as views into one fused qkv projection, the way the models slice them."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(num_tokens, 3 * num_kv_heads * head_dim, generator=gen).to(dtype)
    k, v = qkv[:, num_kv_heads * head_dim:].view(num_tokens, 2, num_kv_heads, head_dim).unbind(1)
    return k.to(DEVICE), v.to(DEVICE)


def _slots(num_tokens, num_pages, page_size, seed=0):
    """Distinct random slots, every third one negative (padding)."""
    gen = torch.Generator().manual_seed(seed)
    slots = torch.randperm(num_pages * page_size, generator=gen)[:num_tokens]
    slots[::3] = -1
    return slots.to(DEVICE)


def test_reference_writes_each_token_to_its_slot_and_skips_negative_ones():
    k, v = _new_tokens(19, 2, 8, torch.float32)
    k_cache = torch.zeros(6, 4, 2, 8, device=DEVICE)
    v_cache = torch.zeros(6, 4, 2, 8, device=DEVICE)
    slots = _slots(19, 6, 4)
    kv_append_ref(k, v, k_cache, v_cache, slots)
    expected_k, expected_v = torch.zeros_like(k_cache), torch.zeros_like(v_cache)
    for t, slot in enumerate(slots.tolist()):
        if slot >= 0:
            expected_k[slot // 4, slot % 4] = k[t]
            expected_v[slot // 4, slot % 4] = v[t]
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_tokens", [1, 19, 99])
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backend_matches_reference(backend, num_tokens, page_size, dtype):
    num_pages = -(-num_tokens // page_size) + 2
    k, v = _new_tokens(num_tokens, 3, 16, dtype, seed=num_tokens)
    slots = _slots(num_tokens, num_pages, page_size, seed=num_tokens)
    caches = [torch.randn(num_pages, page_size, 3, 16).to(dtype).to(DEVICE) for _ in range(2)]
    expected = [c.clone() for c in caches]
    kv_append_ref(k, v, *expected, slots)
    kv_append(k, v, *caches, slots, backend=backend)
    assert torch.equal(caches[0], expected[0]) and torch.equal(caches[1], expected[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_casts_to_the_cache_dtype(backend):
    k, v = _new_tokens(5, 2, 8, torch.float32)
    slots = torch.arange(5, device=DEVICE)
    caches = [torch.zeros(2, 4, 2, 8, dtype=torch.bfloat16, device=DEVICE) for _ in range(2)]
    kv_append(k, v, *caches, slots, backend=backend)
    assert torch.equal(caches[0].flatten(0, 1)[:5], k.to(torch.bfloat16))
    assert torch.equal(caches[1].flatten(0, 1)[:5], v.to(torch.bfloat16))


def test_unknown_backend_is_refused():
    k, v = _new_tokens(1, 1, 8, torch.float32)
    cache = torch.zeros(1, 1, 1, 8, device=DEVICE)
    with pytest.raises(ValueError, match="kv_append has no 'cuda' backend; it has: auto, ref"):
        kv_append(k, v, cache, cache.clone(), torch.zeros(1, dtype=torch.int64), backend="cuda")
