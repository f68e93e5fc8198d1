"""The op-backend registry: every op has its reference, a backend an op does not have is refused
by name, "auto" follows one rule, and every non-reference backend equals the reference."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

import vibekit.ops  # noqa: F401  (registers every op)
from vibekit.ops import apply_rope, rms_norm, rope_cos_sin_cache, rope_inv_freq, silu_and_mul
from vibekit.ops.activation import silu_and_mul_ref
from vibekit.ops.norm import rms_norm_ref
from vibekit.ops.registry import auto_backend, backends, ops, resolve
from vibekit.ops.rope import apply_rope_ref

from .paged_batch import DEVICE

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
README = Path(__file__).parents[2] / "README.md"


def test_every_op_has_a_reference():
    assert ops(), "no op registered"
    for op in ops():
        assert backends(op)[0] == "ref", op


def test_a_backend_an_op_lacks_is_refused_by_name():
    msg = r"rms_norm has no 'torch' backend; it has: auto, ref, cpu"
    with pytest.raises(ValueError, match=msg):
        resolve("rms_norm", "torch", "cpu")
    with pytest.raises(ValueError, match="unknown op"):
        resolve("no_such_op", "ref", "cpu")


def test_auto_picks_cpu_then_torch_then_ref_on_the_cpu_and_never_triton():
    from vibekit.ops.attention_cpu import attention_kernel_available
    from vibekit.ops.cpu_extension import DECODE
    from vibekit.ops.linear import cpu_kernel_available

    # The ops whose CPU order puts their C++ kernel first, where it builds.
    kernels = {"linear": cpu_kernel_available(), "paged_attention": attention_kernel_available(),
               "apply_rope": DECODE.available(), "kv_append": DECODE.available(),
               "rms_norm": DECODE.available(), "silu_and_mul": DECODE.available()}
    for op in ops():
        expected = "torch" if "torch" in backends(op) else "ref"
        if kernels.get(op):
            expected = "cpu"
        assert auto_backend(op, "cpu") == expected, op
        assert (op in kernels) == ("cpu" in backends(op)), op


def test_the_readme_op_table_lists_each_ops_backends():
    """README's "Ops and backends" table is the registry, row for row."""
    text = README.read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, flags=re.M))
    assert set(rows) == set(ops()), "README op table and the registry list different ops"
    for op in ops():
        listed = [b.strip(" `") for b in rows[op].split(",")]
        assert listed == backends(op), f"{op}: README says {listed}, registry has {backends(op)}"


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 19), (19, 99), (3, 5, 989)])
def test_rms_norm_triton_matches_reference(dtype, shape):
    gen = torch.Generator().manual_seed(shape[-1])
    x = torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)
    w = torch.randn(shape[-1], generator=gen).to(dtype).to(DEVICE)
    torch.testing.assert_close(rms_norm(x, w, 1e-6, backend="triton"),
                               rms_norm_ref(x, w, 1e-6))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 2), (19, 38), (99, 1978)])
def test_silu_and_mul_triton_matches_reference(dtype, shape):
    gen = torch.Generator().manual_seed(shape[-1])
    x = torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)
    torch.testing.assert_close(silu_and_mul(x, backend="triton"), silu_and_mul_ref(x))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("num_tokens,heads", [(1, (1, 1)), (19, (4, 2)), (99, (3, 3))])
def test_apply_rope_triton_matches_reference(dtype, num_tokens, heads):
    gen = torch.Generator().manual_seed(num_tokens)
    head_dim = 32
    q = torch.randn(num_tokens, heads[0], head_dim, generator=gen).to(dtype).to(DEVICE)
    k = torch.randn(num_tokens, heads[1], head_dim, generator=gen).to(dtype).to(DEVICE)
    positions = torch.randint(0, 512, (num_tokens,), generator=gen).to(DEVICE)
    cos, sin = rope_cos_sin_cache(rope_inv_freq(head_dim, 10000.0), 512)
    cos, sin = cos.to(DEVICE), sin.to(DEVICE)
    got = apply_rope(q, k, positions, cos, sin, backend="triton")
    want = apply_rope_ref(q, k, positions, cos, sin)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
