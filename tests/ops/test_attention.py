"""Paged attention: the reference against plain SDPA, and every backend against the reference."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vibekit.ops import paged_attention, paged_attention_ref, paged_decode_attention_ref
from vibekit.ops.attention_cpu import attention_kernel_available

from .paged_batch import DEVICE, make_paged_batch, tolerance

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CPU_KERNEL = DEVICE == "cpu" and attention_kernel_available()
BACKENDS = [
    "torch",
    pytest.param("cpu", marks=pytest.mark.skipif(not HAS_CPU_KERNEL,
                                                 reason="AVX512 attention kernel unavailable")),
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")),
]

# A prefill from scratch, appends onto cached prefixes, single-token decodes and an idle sequence.
RAGGED_Q_LENS = [1, 19, 99, 0, 1, 5]
RAGGED_PREFIX_LENS = [0, 7, 0, 5, 40, 16]
DECODE_KV_LENS = [1, 19, 99, 41, 4]


def _ref(batch, scale):
    """The reference on fp32 copies of the inputs: low-precision backends meet the exact one."""
    q, k_cache, v_cache, qo_indptr, page_table, kv_lens = batch.args()
    return paged_attention_ref(q.float(), k_cache.float(), v_cache.float(), qo_indptr,
                               page_table, kv_lens, scale)


@pytest.mark.parametrize("group", [1, 3])
def test_reference_matches_sdpa_on_a_contiguous_causal_layout(group):
    batch = make_paged_batch(RAGGED_Q_LENS, RAGGED_PREFIX_LENS, num_kv_heads=2, group=group,
                             head_dim=16, page_size=4, device="cpu")
    scale = 16**-0.5
    out = paged_attention_ref(*batch.args(), scale)
    gen = torch.Generator().manual_seed(1)
    starts = batch.qo_indptr.tolist()
    for b, (k, v) in enumerate(zip(batch.k_seqs, batch.v_seqs)):
        q_new = batch.q[starts[b]:starts[b + 1]]  # [Q, Hq, D]
        q_len, kv_len = q_new.shape[0], k.shape[0]
        if q_len == 0:
            continue
        # The whole sequence's queries, the batch's as its last rows: plain causal attention.
        q_prefix = torch.randn(kv_len - q_len, *q_new.shape[1:], generator=gen)
        q_full = torch.cat([q_prefix, q_new]).transpose(0, 1)  # [Hq, L, D]
        k_full = k.repeat_interleave(group, dim=1).transpose(0, 1)  # [Hq, L, D]
        v_full = v.repeat_interleave(group, dim=1).transpose(0, 1)
        expected = F.scaled_dot_product_attention(q_full, k_full, v_full, is_causal=True,
                                                  scale=scale)
        torch.testing.assert_close(out[starts[b]:starts[b + 1]],
                                   expected.transpose(0, 1)[kv_len - q_len:],
                                   atol=1e-5, rtol=1e-5)


def test_decode_reference_is_the_ragged_reference_with_one_query_per_sequence():
    batch = make_paged_batch([1] * 5, [n - 1 for n in DECODE_KV_LENS], num_kv_heads=2, group=3,
                             head_dim=16, page_size=16, device="cpu")
    q, k_cache, v_cache, _, page_table, kv_lens = batch.args()
    torch.testing.assert_close(paged_decode_attention_ref(q, k_cache, v_cache, page_table,
                                                          kv_lens, 0.25),
                               paged_attention_ref(*batch.args(), 0.25))


# fp32 over the layout grid; low precision on one layout each (the interpreter is slow).
LAYOUTS = [
    pytest.param(dtype, page_size, group, id=f"{str(dtype)[6:]}-page{page_size}-group{group}")
    for dtype, page_size, group in [
        (torch.float32, 16, 1), (torch.float32, 16, 3), (torch.float32, 1, 1),
        (torch.float32, 1, 3), (torch.float16, 16, 3), (torch.bfloat16, 1, 3),
    ]
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,page_size,group", LAYOUTS)
def test_backend_matches_reference_on_a_ragged_batch(backend, dtype, page_size, group):
    batch = make_paged_batch(RAGGED_Q_LENS, RAGGED_PREFIX_LENS, num_kv_heads=2, group=group,
                             head_dim=16, page_size=page_size, dtype=dtype)
    out = paged_attention(*batch.args(), 0.25, max_q_len=batch.max_q_len,
                          max_kv_len=batch.max_kv_len, backend=backend)
    assert out.dtype == dtype and out.shape == batch.q.shape
    torch.testing.assert_close(out.float(), _ref(batch, 0.25), **tolerance(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,page_size,group", LAYOUTS)
def test_backend_matches_reference_on_a_decode_batch(backend, dtype, page_size, group):
    batch = make_paged_batch([1] * 5, [n - 1 for n in DECODE_KV_LENS], num_kv_heads=2,
                             group=group, head_dim=16, page_size=page_size, dtype=dtype)
    out = paged_attention(*batch.args(), 0.25, max_q_len=1, max_kv_len=batch.max_kv_len,
                          backend=backend)
    torch.testing.assert_close(out.float(), _ref(batch, 0.25), **tolerance(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_handles_a_head_dim_that_is_not_a_power_of_two(backend):
    batch = make_paged_batch([3, 1, 20], [0, 9, 17], num_kv_heads=1, group=3, head_dim=24,
                             page_size=16)
    out = paged_attention(*batch.args(), 0.2, backend=backend)
    torch.testing.assert_close(out, _ref(batch, 0.2), atol=1e-5, rtol=1e-5)


def test_torch_decode_without_host_bounds_matches_reference():
    batch = make_paged_batch([1] * 5, [n - 1 for n in DECODE_KV_LENS], num_kv_heads=2, group=3,
                             head_dim=16, page_size=16)
    out = paged_attention(*batch.args(), 0.25, backend="torch")  # no max_q_len / max_kv_len
    torch.testing.assert_close(out, _ref(batch, 0.25), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("gather_bytes", [1, 26_000])
def test_torch_decode_in_chunks_of_sequences_matches_reference(monkeypatch, gather_bytes):
    import vibekit.ops.attention_torch as attention_torch

    # 1 byte: one sequence per chunk; 26 kB: chunks of 2, 2, 1 sequences (99 tokens: 12.7 kB).
    monkeypatch.setattr(attention_torch, "_GATHER_BYTES", gather_bytes)
    batch = make_paged_batch([1] * 5, [n - 1 for n in DECODE_KV_LENS], num_kv_heads=2, group=3,
                             head_dim=8, page_size=4)
    out = paged_attention(*batch.args(), 0.25, max_q_len=1, max_kv_len=batch.max_kv_len,
                          backend="torch")
    torch.testing.assert_close(out, _ref(batch, 0.25), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
@pytest.mark.parametrize("num_splits", [1, 2, 5])
def test_triton_decode_reads_each_kv_len_from_memory_whatever_the_split(num_splits):
    from vibekit.ops.triton.attention import paged_decode_attention_triton

    batch = make_paged_batch([1] * 5, [n - 1 for n in DECODE_KV_LENS], num_kv_heads=2, group=3,
                             head_dim=16, page_size=4)
    q, k_cache, v_cache, _, page_table, kv_lens = batch.args()
    # max_kv_len is a host hint the decode grid ignores: a stale one changes nothing.
    out = paged_decode_attention_triton(q, k_cache, v_cache, page_table, kv_lens, 0.25,
                                        max_kv_len=1, num_splits=num_splits)
    torch.testing.assert_close(out, _ref(batch, 0.25), atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    seqs=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 40)), min_size=1, max_size=5),
    page_size=st.sampled_from([1, 4, 16]),
    group=st.sampled_from([1, 2, 3]),
    head_dim=st.sampled_from([8, 16]),
)
def test_torch_backend_matches_reference_on_any_ragged_batch(seqs, page_size, group, head_dim):
    q_lens = [q for q, _ in seqs]
    prefix_lens = [p if q else max(p, 1) for q, p in seqs]  # an idle sequence still has KV
    if sum(q_lens) == 0:
        q_lens[0] = 1
    batch = make_paged_batch(q_lens, prefix_lens, num_kv_heads=2, group=group,
                             head_dim=head_dim, page_size=page_size, device="cpu")
    max_q_len = batch.max_q_len if len(seqs) % 2 else None  # with and without host bounds
    out = paged_attention(*batch.args(), 0.3, max_q_len=max_q_len, backend="torch")
    torch.testing.assert_close(out, _ref(batch, 0.3), atol=1e-5, rtol=1e-5)


def test_unknown_backend_is_refused_with_the_allowed_names():
    batch = make_paged_batch([1], [0], num_kv_heads=1, group=1, head_dim=8, page_size=1,
                             device="cpu")
    with pytest.raises(ValueError,
                       match="no .flash. backend; it has: auto, ref, torch, cpu, triton"):
        paged_attention(*batch.args(), 1.0, backend="flash")


def test_importing_ops_does_not_import_triton():
    code = "import sys, vibekit.ops; assert 'triton' not in sys.modules, 'triton was imported'"
    repo_root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root)


def test_auto_backend_on_cpu_is_the_kernel_where_it_builds_else_the_torch_path():
    from vibekit.ops.registry import auto_backend

    batch = make_paged_batch([2, 1], [3, 4], num_kv_heads=1, group=2, head_dim=8, page_size=4,
                             device="cpu")
    expected = "cpu" if attention_kernel_available() else "torch"
    assert auto_backend("paged_attention", "cpu") == expected
    assert torch.equal(paged_attention(*batch.args(), 0.5),
                       paged_attention(*batch.args(), 0.5, backend=expected))
