"""The MLX ops (vibekit.ops.mlx) compute what their torch references compute: token bitmask,
RoPE, paged attention with the KV append, on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vibekit.ops.attention import paged_attention_ref
from vibekit.ops.rope import apply_rope_ref, rope_cos_sin_cache, rope_inv_freq
from vibekit.ops.token_bitmask import apply_token_bitmask_ref

mx = pytest.importorskip("mlx.core")

from vibekit.ops.mlx import (  # noqa: E402
    AttentionPlan,
    apply_token_bitmask_mlx,
    paged_attention_mlx,
    rope_fast_mlx,
    rope_freqs_mlx,
)


@pytest.mark.parametrize("vocab", [1, 19, 99, 989])
@pytest.mark.parametrize("subset", [False, True])
def test_token_bitmask_matches_the_reference(vocab, subset):
    gen = torch.Generator().manual_seed(vocab)
    num_rows = 5
    logits = torch.randn(num_rows, vocab, generator=gen)
    words = -(-vocab // 32)
    bitmask = torch.randint(-2**31, 2**31 - 1, (num_rows, words), dtype=torch.int32,
                            generator=gen)
    rows = [0, 3, 4] if subset else None
    expected = apply_token_bitmask_ref(logits.clone(), bitmask,
                                       None if rows is None else torch.tensor(rows))
    got = apply_token_bitmask_mlx(mx.array(logits.numpy()), bitmask.numpy(), rows)
    np.testing.assert_array_equal(np.array(got), expected.numpy())


def test_token_bitmask_refuses_a_mask_of_the_wrong_size():
    with pytest.raises(ValueError, match="does not match logits"):
        apply_token_bitmask_mlx(mx.zeros((1, 40)), np.zeros((1, 1), dtype=np.int32))
    with pytest.raises(ValueError, match="one row per logits row"):
        apply_token_bitmask_mlx(mx.zeros((2, 40)), np.zeros((1, 2), dtype=np.int32))


@pytest.mark.parametrize("q_lens,kv_lens", [([1], [1]), ([19], [19]), ([1, 1, 1], [99, 5, 37]),
                                            ([7, 1, 13], [20, 99, 13])])
def test_paged_attention_matches_the_reference(q_lens, kv_lens):
    gen = torch.Generator().manual_seed(sum(kv_lens))
    page_size, num_pages, hq, hk, d = 8, 64, 4, 2, 16
    # Scattered, non-contiguous page tables.
    perm = torch.randperm(num_pages, generator=gen).tolist()
    tables, used = [], 0
    for kv_len in kv_lens:
        n = -(-kv_len // page_size)
        tables.append(perm[used:used + n])
        used += n
    k_cache = torch.randn(num_pages, page_size, hk, d, generator=gen)
    v_cache = torch.randn(num_pages, page_size, hk, d, generator=gen)
    total = sum(q_lens)
    q = torch.randn(total, hq, d, generator=gen)
    k_new, v_new = torch.randn(total, hk, d, generator=gen), torch.randn(total, hk, d,
                                                                          generator=gen)
    plan = AttentionPlan.build(q_lens, kv_lens, tables, page_size)
    # The reference reads caches that already hold the new K/V.
    slots = np.array(plan.slot_mapping)
    ref_k, ref_v = k_cache.clone().view(-1, hk, d), v_cache.clone().view(-1, hk, d)
    ref_k[torch.from_numpy(slots).long()] = k_new
    ref_v[torch.from_numpy(slots).long()] = v_new
    width = max(len(t) for t in tables)
    page_table = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    qo_indptr = torch.tensor([0, *np.cumsum(q_lens)], dtype=torch.int32)
    expected = paged_attention_ref(q, ref_k.view_as(k_cache), ref_v.view_as(v_cache), qo_indptr,
                                   page_table, torch.tensor(kv_lens, dtype=torch.int32), 0.25)
    mk = mx.array(k_cache.reshape(-1, hk, d).numpy())
    mv = mx.array(v_cache.reshape(-1, hk, d).numpy())
    got = paged_attention_mlx(mx.array(q.numpy()), mx.array(k_new.numpy()),
                              mx.array(v_new.numpy()), mk, mv, plan, 0.25)
    np.testing.assert_allclose(np.array(got), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(np.array(mk), ref_k.numpy())  # appended in place


@pytest.mark.parametrize("scaling", [None, {"rope_type": "llama3", "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 64},
                                     {"rope_type": "linear", "factor": 4.0}])
def test_fused_rope_matches_the_reference(scaling):
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(19, 4, 32, generator=gen), torch.randn(19, 2, 32, generator=gen)
    positions = torch.randint(0, 999, (19,), generator=gen)
    cos, sin = rope_cos_sin_cache(rope_inv_freq(32, 10000.0, scaling), 1024)
    eq, ek = apply_rope_ref(q, k, positions, cos, sin)
    freqs = rope_freqs_mlx(32, 10000.0, scaling)
    pos = mx.array(positions.numpy().astype(np.int32))
    np.testing.assert_allclose(np.array(rope_fast_mlx(mx.array(q.numpy()), pos, freqs)),
                               eq.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.array(rope_fast_mlx(mx.array(k.numpy()), pos, freqs)),
                               ek.numpy(), atol=1e-4)
