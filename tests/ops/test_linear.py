"""The prepacked AVX512 linear kernel against torch's F.linear (in float64) and `linear_ref`, on
odd sizes and every dtype it serves; rows are bit-identical whatever the number of rows."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from vibekit.ops.linear import (
    _Kernel,
    cpu_kernel_available,
    linear,
    linear_ref,
    linear_w8a8_ref,
    pack_linear,
    quantize_int8,
    unpack_weight,
)

needs_kernel = pytest.mark.skipif(not cpu_kernel_available(),
                                  reason="AVX512 linear kernel unavailable on this CPU/compiler")
SIZES = [1, 19, 99, 989]


def make(m, n, k, dtype, seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen).to(dtype)
    w = (torch.randn(n, k, generator=gen) / k**0.5).to(dtype)
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    return x, w, b


def float64_linear(x, w, b, scale=None):
    w64 = w.double() if scale is None else w.double() * scale.double()[:, None]
    return F.linear(x.double(), w64, None if b is None else b.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_is_torch_linear_in_float32(dtype):
    x, w, b = make(5, 19, 99, dtype)
    expected = F.linear(x.float(), w.float(), b.float()).to(dtype)
    torch.testing.assert_close(linear_ref(x, w, b), expected, atol=1e-5, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_float64_torch_linear(n, k, dtype):
    m = 7 if n * k < 10**5 else 3
    x, w, b = make(m, n, k, dtype, seed=n + k)
    got = linear(x, pack_linear(w, b), backend="cpu")
    assert got.shape == (m, n) and got.dtype == dtype
    expected = float64_linear(x, w, b)
    if dtype == torch.float32:
        torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    else:  # both round the float32 sum to bfloat16 once
        torch.testing.assert_close(got, expected.to(dtype), atol=2e-2, rtol=1.6e-2)
        torch.testing.assert_close(got, linear_ref(x, w, b), atol=2e-2, rtol=1.6e-2)


@needs_kernel
@pytest.mark.parametrize("n,k", [(1, 1), (19, 989), (989, 19), (99, 99)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_kernel_matches_dequantized_reference(n, k, dtype):
    x, w, b = make(9, n, k, dtype, seed=n * k)
    packed = pack_linear(w, b, quantization="int8")
    q, scale = quantize_int8(w)
    assert packed.weight.dtype == torch.int8 and torch.equal(packed.weight, q)
    got = linear(x, packed, backend="cpu")
    expected = float64_linear(x, q, b, scale)
    atol, rtol = (2e-5, 1e-5) if dtype == torch.float32 else (2e-2, 1.6e-2)
    torch.testing.assert_close(got.double(), expected.to(dtype).double(), atol=atol, rtol=rtol)
    torch.testing.assert_close(got, linear(x, packed, backend="ref"), atol=atol, rtol=rtol)
    # The quantization itself is within half a step of the float weight.
    assert ((q.float() * scale[:, None] - w.float()).abs() <= scale[:, None] / 2 + 1e-6).all()


@needs_kernel
@pytest.mark.parametrize("n,k", [(1, 1), (19, 989), (989, 19), (99, 99), (130, 577)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_w8a8_kernel_gives_the_reference_bits(n, k, dtype):
    x, w, b = make(9, n, k, dtype, seed=n * k + 1)
    x[3] = 0  # an all-zero row (scale 1)
    packed = pack_linear(w, b, quantization="w8a8")
    q, scale = quantize_int8(w)
    assert packed.quantization == "w8a8" and torch.equal(unpack_weight(packed), q)
    got = linear(x, packed, backend="cpu")
    assert torch.equal(got, linear_w8a8_ref(x, q, scale, b))
    assert torch.equal(got, linear(x, packed, backend="torch"))
    # Within the two roundings (activations per row, weights per channel) of the float result.
    expected = float64_linear(x, w, b)
    err = (got.double() - expected).norm() / expected.norm()
    assert err < 0.03, err


def test_w8a8_reference_quantizes_each_row_half_to_even():
    w = torch.eye(4, dtype=torch.int8)
    x = torch.tensor([[127.0, 63.5, -0.5, 1.5], [0.0, 0.0, 0.0, 0.0]])
    y = linear_w8a8_ref(x, w, torch.ones(4))
    # s = 1: 63.5 -> 64, -0.5 -> -0, 1.5 -> 2 (half to even); the zero row stays zero
    assert y.tolist() == [[127.0, 64.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]


@needs_kernel
@pytest.mark.parametrize("quantization", [None, "int8", "w8a8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_are_bit_identical_whatever_the_number_of_rows(dtype, quantization):
    # NOTE: the batch-invariance contract (issue 16): a row alone, in a batch of 16, in a
    # 65-row verify block, or on another thread count, gives the same bits.
    x, w, b = make(65, 200, 333, dtype, seed=3)
    packed = pack_linear(w, b, quantization=quantization)
    alone = torch.cat([linear(x[i:i + 1], packed, backend="cpu") for i in range(65)])
    for m in (2, 5, 6, 7, 16, 65):
        assert torch.equal(linear(x[:m], packed, backend="cpu"), alone[:m]), m
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            assert torch.equal(linear(x, packed, backend="cpu"), alone)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [19, 64])
def test_unpacking_recovers_the_weight(dtype, k):
    _, w, b = make(1, 99, k, dtype)
    assert torch.equal(unpack_weight(pack_linear(w, b, keep_weight=False)), w)


@pytest.mark.parametrize("backend", ["torch", "ref"])
def test_torch_and_ref_backends_serve_a_packed_weight_without_its_copy(backend):
    x, w, b = make(4, 19, 99, torch.float32)
    got = linear(x, pack_linear(w, b, keep_weight=False), backend=backend)
    torch.testing.assert_close(got, F.linear(x, w, b), atol=1e-5, rtol=1e-5)


def test_unknown_quantization_backend_and_mismatched_input_are_refused():
    x, w, b = make(2, 19, 99, torch.float32)
    with pytest.raises(ValueError, match="quantization='int4' is not supported"):
        pack_linear(w, b, quantization="int4")
    with pytest.raises(ValueError, match="linear has no 'fast' backend; it has: auto, ref, tor"):
        linear(x, pack_linear(w, b), backend="fast")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        pack_linear(w.half())
    if cpu_kernel_available():
        with pytest.raises(ValueError, match="does not fit"):
            linear(x.bfloat16(), pack_linear(w, b), backend="cpu")


def test_missing_instructions_fall_back_with_one_logged_line(monkeypatch, caplog):
    import vibekit.ops.linear as linear_mod

    monkeypatch.setattr(linear_mod, "_cpu_flags", lambda: {"avx2", "fma"})
    kernel = _Kernel()
    monkeypatch.setattr(linear_mod, "_KERNEL", kernel)
    x, w, b = make(3, 19, 99, torch.float32)
    with caplog.at_level(logging.WARNING, logger="vibekit.ops.linear"):
        got = linear(x, pack_linear(w, b), backend="auto")
        linear(x, pack_linear(w, b), backend="auto")
    torch.testing.assert_close(got, F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    notices = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(notices) == 1 and "avx512f" in notices[0].getMessage()
    with pytest.raises(RuntimeError, match="CPU lacks avx512f"):
        linear(x, pack_linear(w, b), backend="cpu")
