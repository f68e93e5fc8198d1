"""Engine options `linear_backend` and `quantization`: what they build, what they refuse, and
that the prepacked kernel keeps a request's tokens independent of the batch it shares."""

from __future__ import annotations

import pytest
import torch

from vibekit import Engine, SamplingParams
from vibekit.models.linear import PackedLinearLayer
from vibekit.ops.linear import cpu_kernel_available

needs_kernel = pytest.mark.skipif(not cpu_kernel_available(),
                                  reason="AVX512 linear kernel unavailable on this CPU/compiler")
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


def layers(engine, cls):
    return [m for m in engine.model.modules() if isinstance(m, cls)]


@pytest.mark.parametrize("option,value,allowed", [
    ("linear_backend", "mkl", "'auto', 'cpu', 'torch'"),
    ("quantization", "int4", "None, 'int8' or 'w8a8'"),
])
def test_unsupported_linear_options_are_refused_naming_the_allowed_values(option, value, allowed):
    with pytest.raises(ValueError, match=f"{option}={value!r} is not supported.*{allowed}"):
        Engine.from_pretrained("dummy:tiny-llama", **{option: value})


def test_torch_backend_keeps_nn_linear():
    engine = Engine.from_pretrained("dummy:tiny-llama", linear_backend="torch")
    assert engine.linear_backend == "torch"
    assert layers(engine, torch.nn.Linear) and not layers(engine, PackedLinearLayer)


@needs_kernel
@pytest.mark.parametrize("quantization", [None, "int8", "w8a8"])
def test_auto_backend_packs_every_projection(quantization):
    engine = Engine.from_pretrained("dummy:tiny-llama", quantization=quantization)
    assert engine.linear_backend == "cpu"
    packed = layers(engine, PackedLinearLayer)
    assert len(packed) == 4 * 2 + 1 and not layers(engine, torch.nn.Linear)
    assert {p.packed.quantization for p in packed} == {quantization}


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_packed_engine_gives_the_torch_engines_greedy_tokens(dtype):
    prompts = [[5, 6, 7, 8], [100, 3, 250, 9, 9, 41]]
    ref = Engine.from_pretrained("dummy:tiny-llama", dtype=dtype, linear_backend="torch")
    fast = Engine.from_pretrained("dummy:tiny-llama", dtype=dtype, linear_backend="cpu")
    want = [o.token_ids for o in ref.generate(prompts, GREEDY)]
    got = [o.token_ids for o in fast.generate(prompts, GREEDY)]
    # bfloat16 logits differ by rounding between the two GEMMs: allow a late near-tie flip.
    same = sum(a == b for w, g in zip(want, got) for a, b in zip(w, g)) / sum(map(len, want))
    assert same >= (1.0 if dtype == "float32" else 0.75), (want, got)


@needs_kernel
@pytest.mark.parametrize("quantization", ["int8", "w8a8"])
def test_quantized_engine_mostly_agrees_with_the_float_engine_on_the_zoo_model(quantization):
    prompts = [[3, 17, 99, 200, 45, 12, 77, 300]]
    params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)
    full = Engine.from_pretrained("zoo:code-edit-tiny").generate(prompts, params)[0].token_ids
    q = Engine.from_pretrained("zoo:code-edit-tiny",
                               quantization=quantization).generate(prompts, params)[0].token_ids
    prefix = next((i for i, (a, b) in enumerate(zip(full, q)) if a != b), len(full))
    assert prefix >= 16, (prefix, full, q)
