"""The other builds of the CPU kernels: for AVX2 (csrc/avx2_shim.h: the AVX512 sources compiled
for AVX2 + FMA + F16C, each 512-bit intrinsic on two 256-bit halves) and for AVX512 without
AVX512_BF16 / AVX512_VNNI (csrc/avx512_shim.h emulates those instructions).

On a CPU of either kind the default build is that one and the kernels' own tests
(test_linear.py, test_attention_cpu.py, models/test_model_cpu.py,
runtime/test_batch_invariant.py) run on it. Here each build is made explicitly, so each is
checked wherever it runs: against the references, and bit for bit against each other build that
runs here (the shims emulate each instruction's rounding; the inputs here have no denormals, the
one case where dpbf16 and cvtneps_pbh differ from the instructions)."""

from __future__ import annotations

import pytest
import torch

import vibekit.ops.attention_cpu as attention_mod
import vibekit.ops.linear as linear_mod
from vibekit.ops import paged_attention_ref
from vibekit.ops.cpu_extension import (
    AVX2_REQUIRED_FLAGS,
    EMULATED_FLAGS,
    CpuExtension,
    cpu_flags,
)
from vibekit.ops.linear import (
    _CFLAGS,
    _REQUIRED_FLAGS,
    linear_cpu,
    linear_ref,
    linear_w8a8_ref,
    pack_linear,
)

from .paged_batch import make_paged_batch, tolerance

pytestmark = pytest.mark.skipif(
    not set(AVX2_REQUIRED_FLAGS) <= cpu_flags(), reason="this CPU lacks AVX2 / FMA / F16C")


def _linear_build(isa: str, emulate: tuple[str, ...] = ()) -> CpuExtension:
    return CpuExtension("linear_cpu.cpp", "linear kernel", cflags=tuple(_CFLAGS),
                        required_flags=_REQUIRED_FLAGS, isa=isa, emulate=emulate)


# "avx512": the native one where the CPU has AVX512_BF16 and VNNI (else it emulates the missing
# ones); "avx512-emulated": both emulated, so the emulation is checked on CPUs that have them.
_BUILDS = {"avx2": ("avx2", ()), "avx512": ("avx512", ()),
           "avx512-emulated": ("avx512", tuple(EMULATED_FLAGS))}


@pytest.fixture(scope="module")
def builds():
    """{"linear": {name: module}, "attention": {name: module}} for the builds that run here."""
    out: dict[str, dict[str, object]] = {"linear": {}, "attention": {}}
    for name, (isa, emulate) in _BUILDS.items():
        lin = _linear_build(isa, emulate)
        att = CpuExtension("attention_cpu.cpp", "paged attention kernel", isa=isa,
                           emulate=emulate)
        if lin.get() is not None:
            assert lin.isa == isa
            assert set(emulate) <= set(lin.emulated)
            out["linear"][name] = lin
        if att.get() is not None:
            out["attention"][name] = att
    assert "avx2" in out["linear"] and "avx2" in out["attention"], "the AVX2 build failed"
    return out


def _with(monkeypatch, module, kernel, fn):
    monkeypatch.setattr(module, "_KERNEL", kernel)
    return fn()


@pytest.mark.parametrize("quant", [None, "int8", "w8a8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 2, 5, 7])
def test_linear_avx2_matches_the_reference_and_the_avx512_bits(builds, monkeypatch, quant, dtype,
                                                                m):
    torch.manual_seed(m)
    n, k = 131, 77  # a partial last group of outputs and an odd K
    x = torch.randn(m, k).to(dtype)
    w = (torch.randn(n, k) / k ** 0.5).to(dtype)
    b = torch.randn(n)
    packed = pack_linear(w, b, quantization=quant)
    got = {isa: _with(monkeypatch, linear_mod, kernel, lambda: linear_cpu(x, packed))
           for isa, kernel in builds["linear"].items()}
    if quant == "w8a8":
        ref = linear_w8a8_ref(x, packed.weight, packed.scale[:n], b)
        assert torch.equal(got["avx2"], ref)  # integer sums: the exact bits
    else:
        scale = None if packed.scale is None else packed.scale[:n]
        ref = linear_ref(x, packed.weight, b, scale)
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(got["avx2"].float(), ref.float(), **tol)
    for name in got:
        assert torch.equal(got["avx2"], got[name]), name
    # a row is the same alone as in the batch (batch invariance holds in this build too)
    alone = _with(monkeypatch, linear_mod, builds["linear"]["avx2"],
                  lambda: linear_cpu(x[-1:].contiguous(), packed))
    assert torch.equal(alone[0], got["avx2"][-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [24, 64, 80])
def test_attention_avx2_matches_the_reference_and_the_avx512_bits(builds, monkeypatch, dtype,
                                                                   head_dim):
    batch = make_paged_batch([1, 5, 40], [70, 3, 0], num_kv_heads=2, group=3, head_dim=head_dim,
                             page_size=16, dtype=dtype, seed=head_dim, device="cpu")
    args = batch.args()
    got = {isa: _with(monkeypatch, attention_mod, kernel,
                      lambda: attention_mod.paged_attention_cpu(*args, 0.125))
           for isa, kernel in builds["attention"].items()}
    q, k_cache, v_cache, qo_indptr, page_table, kv_lens = args
    ref = paged_attention_ref(q.float(), k_cache.float(), v_cache.float(), qo_indptr, page_table,
                              kv_lens, 0.125)
    torch.testing.assert_close(got["avx2"].float(), ref, **tolerance(dtype))
    for name in got:
        assert torch.equal(got["avx2"], got[name]), name


def test_an_isa_the_cpu_lacks_is_a_clear_reason_and_a_bad_isa_an_error(monkeypatch):
    kernel = _linear_build("avx512")
    monkeypatch.setattr(kernel, "_flags", lambda: {"avx2", "fma", "f16c"})
    assert kernel.get() is None and "asks for avx512" in kernel.reason
    old = CpuExtension("attention_cpu.cpp", "paged attention kernel")
    monkeypatch.setattr(old, "_flags", lambda: {"sse4_2", "fma"})
    assert old.get() is None
    assert old.reason.startswith("CPU lacks avx512f") and "avx2, f16c for the AVX2 build" in \
        old.reason
    with pytest.raises(ValueError, match="must be one of"):
        CpuExtension("attention_cpu.cpp", "paged attention kernel", isa="neon")
    with pytest.raises(ValueError, match="must be among"):
        CpuExtension("attention_cpu.cpp", "paged attention kernel", emulate=("amx_tile",))


def test_an_avx512_cpu_without_bf16_or_vnni_gets_the_avx512_build_with_those_emulated(
        monkeypatch):
    """Skylake-SP has neither, Cascade Lake / Ice Lake lack AVX512_BF16: the AVX512 build, with
    the missing extension's gcc flag dropped (avx512_shim.h emulates it)."""
    base = {"avx512f", "avx512bw", "avx512vl", "fma", "avx2", "f16c"}
    for extra, emulated in ((set(), {"-mavx512bf16", "-mavx512vnni"}),
                            ({"avx512_vnni"}, {"-mavx512bf16"}),
                            ({"avx512_vnni", "avx512_bf16"}, set())):
        kernel = _linear_build(None)
        monkeypatch.setattr(kernel, "_flags", lambda extra=extra: base | extra)
        isa, cflags = kernel._choose()
        assert isa == "avx512"
        assert emulated.isdisjoint(cflags)
        assert set(EMULATED_FLAGS.values()) - emulated <= set(cflags)
    # without AVX512BW it is the AVX2 build
    kernel = _linear_build(None)
    monkeypatch.setattr(kernel, "_flags", lambda: base - {"avx512bw"})
    assert kernel._choose()[0] == "avx2"
