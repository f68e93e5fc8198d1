"""The AVX512 paged-attention kernel: against the reference, and bit-identical per row whatever
shares the call (batch invariance)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vibekit.ops import paged_attention, paged_attention_ref
from vibekit.ops.attention_cpu import KV_CHUNK, attention_kernel_available

from .paged_batch import make_paged_batch, tolerance

pytestmark = pytest.mark.skipif(not attention_kernel_available(),
                                reason="AVX512 attention kernel unavailable on this CPU")
DTYPES = [torch.float32, torch.bfloat16]


def _cpu(batch, scale=0.125):
    return paged_attention(*batch.args(), scale, backend="cpu")


def _ref(batch, scale=0.125):
    q, k_cache, v_cache, qo_indptr, page_table, kv_lens = batch.args()
    return paged_attention_ref(q.float(), k_cache.float(), v_cache.float(), qo_indptr,
                               page_table, kv_lens, scale)


@settings(max_examples=30, deadline=None)
@given(
    seqs=st.lists(st.tuples(st.integers(0, 70), st.integers(0, 80)), min_size=1, max_size=4),
    page_size=st.sampled_from([1, 3, 16]),
    group=st.sampled_from([1, 3]),
    head_dim=st.sampled_from([8, 24, 64, 80]),
    dtype=st.sampled_from(DTYPES),
)
def test_matches_reference_on_any_ragged_batch(seqs, page_size, group, head_dim, dtype):
    q_lens = [q for q, _ in seqs]
    prefix_lens = [p if q else max(p, 1) for q, p in seqs]
    if sum(q_lens) == 0:
        q_lens[0] = 1
    batch = make_paged_batch(q_lens, prefix_lens, num_kv_heads=2, group=group,
                             head_dim=head_dim, page_size=page_size, dtype=dtype, device="cpu")
    out = _cpu(batch)
    assert out.dtype == dtype and out.shape == batch.q.shape
    torch.testing.assert_close(out.float(), _ref(batch), **tolerance(dtype))


def _rows_of_one_sequence(dtype, page_size, prompt_len=100, seed=7):
    """Queries and K/V of one 100-token sequence (fp32 masters), laid into pages."""
    full = make_paged_batch([prompt_len], [0], num_kv_heads=3, group=3, head_dim=64,
                            page_size=page_size, dtype=dtype, seed=seed, device="cpu")
    return full


def _sub_batch(full, start, stop, others=()):
    """The rows start..stop-1 of `full`'s sequence as one sequence of a batch whose KV ends at
    stop (kv_len = stop), after `others`: (q_len, kv_len) sequences sharing the same pool."""
    seqs = [*others, (stop - start, stop)]
    qs, qo, lens = [], [0], []
    for q_len, kv_len in seqs:
        qs.append(full.q[kv_len - q_len:kv_len])
        qo.append(qo[-1] + q_len)
        lens.append(kv_len)
    page_table = full.page_table.expand(len(seqs), -1).contiguous()
    args = (torch.cat(qs), full.k_cache, full.v_cache, torch.tensor(qo, dtype=torch.int32),
            page_table, torch.tensor(lens, dtype=torch.int32))
    return paged_attention(*args, 0.125, backend="cpu")[-(stop - start):]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_is_bit_identical_as_decode_verify_prefill_chunk_or_in_a_batch(dtype):
    full = _rows_of_one_sequence(dtype, page_size=16)
    whole = _cpu(full)  # the 100-token prompt in one prefill
    # One decode row at each position, a 17-row verify block, prefill chunks of 7, 64 and 29
    # (split off the 32-position chunk grid), and rows batched behind other sequences.
    for p in (0, 31, 32, 33, 63, 99):
        assert torch.equal(_sub_batch(full, p, p + 1), whole[p:p + 1])
    assert torch.equal(_sub_batch(full, 50, 67), whole[50:67])
    chunks = [_sub_batch(full, a, b) for a, b in ((0, 7), (7, 71), (71, 100))]
    assert torch.equal(torch.cat(chunks), whole)
    batched = _sub_batch(full, 40, 45, others=[(1, 90), (12, 12), (30, 99)])
    assert torch.equal(batched, whole[40:45])


def _relaid(full, page_size):
    """`full`'s one sequence in a fresh pool of `page_size` pages, in reverse page order."""
    k, v = full.k_seqs[0], full.v_seqs[0]  # [L, Hk, D]
    n = -(-k.shape[0] // page_size)
    shape = (n + 1, page_size, *k.shape[1:])
    k_cache = torch.full(shape, float("nan"), dtype=k.dtype)
    v_cache = torch.full(shape, float("nan"), dtype=k.dtype)
    pages = list(range(n, 0, -1))
    for i in range(k.shape[0]):
        k_cache[pages[i // page_size], i % page_size] = k[i]
        v_cache[pages[i // page_size], i % page_size] = v[i]
    return (full.q, k_cache, v_cache, full.qo_indptr,
            torch.tensor([pages], dtype=torch.int32), full.kv_lens)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_does_not_depend_on_page_size_or_thread_count(dtype):
    full = _rows_of_one_sequence(dtype, page_size=16)
    want = _cpu(full)
    for page_size in (1, 5, 64):
        assert torch.equal(paged_attention(*_relaid(full, page_size), 0.125, backend="cpu"), want)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert torch.equal(_cpu(full), want)
    finally:
        torch.set_num_threads(threads)


def test_kv_chunks_cut_at_absolute_positions_still_match_the_reference():
    # Lengths around the chunk grid, a cached prefix ending mid-chunk.
    lens = [KV_CHUNK - 1, KV_CHUNK, KV_CHUNK + 1, 3 * KV_CHUNK + 5]
    batch = make_paged_batch([5, 1, 9, 40], [n - q for n, q in zip(lens, [5, 1, 9, 40])],
                             num_kv_heads=1, group=2, head_dim=32, page_size=5, device="cpu")
    torch.testing.assert_close(_cpu(batch), _ref(batch), atol=1e-5, rtol=1e-5)


def test_strided_queries_are_read_in_place():
    batch = make_paged_batch([4, 1], [3, 30], num_kv_heads=2, group=2, head_dim=16,
                             page_size=4, device="cpu")
    qkv = torch.randn(batch.q.shape[0], 4 * 16 + 2 * 2 * 16)
    q = qkv[:, :64].view(-1, 4, 16)  # a slice of a fused projection: token stride 128
    got = paged_attention(q, *batch.args()[1:], 0.25, backend="cpu")
    want = paged_attention(q.contiguous(), *batch.args()[1:], 0.25, backend="cpu")
    assert torch.equal(got, want)


def test_bad_inputs_are_refused_with_what_was_wrong():
    batch = make_paged_batch([2], [3], num_kv_heads=1, group=2, head_dim=16, page_size=4,
                             device="cpu")
    q, k_cache, v_cache, qo_indptr, page_table, kv_lens = batch.args()
    with pytest.raises(ValueError, match="float32, bfloat16 or float16; q is torch.float64"):
        paged_attention(q.double(), k_cache, v_cache, qo_indptr, page_table, kv_lens, 1.0,
                        backend="cpu")
    with pytest.raises(ValueError, match="float16 q needs a float16 KV cache"):
        paged_attention(q.half(), k_cache, v_cache, qo_indptr, page_table, kv_lens, 1.0,
                        backend="cpu")
    with pytest.raises(RuntimeError, match="needs 2 pages; page_table has 1"):
        paged_attention(q, k_cache, v_cache, qo_indptr, page_table[:, :1], kv_lens, 1.0,
                        backend="cpu")
    with pytest.raises(RuntimeError, match="2 query tokens but kv_len 1"):
        paged_attention(q, k_cache, v_cache, qo_indptr, page_table, torch.tensor(
            [1], dtype=torch.int32), 1.0, backend="cpu")
    bad_table = page_table.clone()
    bad_table[0, 1] = k_cache.shape[0]
    with pytest.raises(RuntimeError, match="page 1 is"):
        paged_attention(q, k_cache, v_cache, qo_indptr, bad_table, kv_lens, 1.0, backend="cpu")
    with pytest.raises(RuntimeError, match="not a multiple of num_kv_heads"):
        paged_attention(q[:, :1].expand(-1, 3, -1), k_cache.expand(-1, -1, 2, -1).contiguous(),
                        v_cache.expand(-1, -1, 2, -1).contiguous(), qo_indptr, page_table,
                        kv_lens, 1.0, backend="cpu")
