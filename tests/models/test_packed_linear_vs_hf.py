"""With its projections prepacked for the CPU linear kernel (`pack_linears`), the llama-family
model still matches HF transformers logits: float32 within the usual tolerance, half precision
as close to float32 as HF is, int8 weight-only close to the float model."""

from __future__ import annotations

import pytest
import torch
from hf_reference import FAMILIES, hf_logits, make_hf_checkpoint
from test_llama_vs_hf import PROMPT, vibekit_logits

from vibekit.models import load_model
from vibekit.models.linear import PackedLinearLayer, pack_linears
from vibekit.ops.linear import cpu_kernel_available

pytestmark = pytest.mark.skipif(not cpu_kernel_available(),
                                reason="AVX512 linear kernel unavailable on this CPU/compiler")


def packed_model(path, dtype, quantization=None):
    model, _, _ = load_model(path, dtype, "cpu")
    assert pack_linears(model, "cpu", quantization) == "cpu"
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_model_logits_match_hf(tmp_path, family):
    path = make_hf_checkpoint(tmp_path, family)
    model = packed_model(path, torch.float32)
    layers = [m for m in model.modules() if isinstance(m, PackedLinearLayer)]
    assert len(layers) == 4 * model.config.num_layers + 1  # qkv, o, gate_up, down; lm_head
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    prompts = [PROMPT, PROMPT[3:10][::-1], [7]]
    for prompt, got in zip(prompts, vibekit_logits(model, torch.float32, [[p] for p in prompts])):
        torch.testing.assert_close(got, hf_logits(path, prompt), atol=1e-4, rtol=1e-4)


def test_packed_prefill_then_decode_equals_single_pass(tmp_path):
    path = make_hf_checkpoint(tmp_path, "qwen2")
    model = packed_model(path, torch.float32)
    [single] = vibekit_logits(model, torch.float32, [[PROMPT]])
    [steps] = vibekit_logits(model, torch.float32, [[PROMPT[:11]] + [[t] for t in PROMPT[11:]]])
    torch.testing.assert_close(steps, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama-tied", "qwen3"])
def test_packed_bfloat16_is_as_close_to_float32_as_hf_is(tmp_path, family):
    path = make_hf_checkpoint(tmp_path, family)
    exact = hf_logits(path, PROMPT)
    hf_err = (hf_logits(path, PROMPT, torch.bfloat16) - exact).abs().max().item()
    [got] = vibekit_logits(packed_model(path, torch.bfloat16), torch.bfloat16, [[PROMPT]])
    our_err = (got - exact).abs().max().item()
    assert our_err <= 2 * hf_err + 1e-2, (our_err, hf_err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_weights_stay_close_to_the_float_model(tmp_path, dtype):
    path = make_hf_checkpoint(tmp_path, "llama3")
    exact = hf_logits(path, PROMPT)
    [got] = vibekit_logits(packed_model(path, dtype, "int8"), dtype, [[PROMPT]])
    # int8 rounding moves logits by a fraction of their spread, never to something unrelated.
    err = (got - exact).abs()
    std = exact.std().item()
    assert err.mean().item() < 0.03 * std and err.max().item() < 0.3 * std, (err, std)
    agree = (got.argmax(-1) == exact.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree
