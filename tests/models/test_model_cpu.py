"""The one-call C++ forward (vibekit.ops.model_cpu) gives the per-op forward's logits bit for
bit, on every llama family, dtype and quantization, for ragged batches of prefill chunks, decode
tokens and verify blocks; models it cannot run take the per-op forward and say why."""

from __future__ import annotations

import pytest
import torch
from hf_reference import FAMILIES, make_hf_checkpoint
from test_llama_vs_hf import PROMPT, vibekit_logits

from vibekit.models import load_model
from vibekit.models.linear import pack_linears
from vibekit.ops.model_cpu import MODEL, FusedLlamaCpu, why_not_fused

pytestmark = pytest.mark.skipif(MODEL.get() is None, reason=f"fused forward unavailable: "
                                f"{MODEL.reason}")

# Step by step, three sequences: a prefill chunk each, then decode tokens and 3-token blocks.
SEQUENCES = [
    [PROMPT[:9], [PROMPT[9]], PROMPT[10:13], [PROMPT[13]]],
    [PROMPT[4:6], PROMPT[6:14], [PROMPT[14]], PROMPT[15:18]],
    [[PROMPT[2]], [PROMPT[3]], [PROMPT[4]]],
]


def _both(model, dtype):
    model.use_fused_cpu = True
    fused = vibekit_logits(model, dtype, SEQUENCES)
    assert isinstance(model._fused, FusedLlamaCpu), why_not_fused(model)
    model.use_fused_cpu = False
    per_op = vibekit_logits(model, dtype, SEQUENCES)
    return fused, per_op


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_forward_is_bit_identical_to_the_per_op_forward(tmp_path, family, dtype):
    model, _, _ = load_model(make_hf_checkpoint(tmp_path, family), dtype, "cpu")
    assert pack_linears(model, "cpu") == "cpu"
    fused, per_op = _both(model, dtype)
    for f, p in zip(fused, per_op):
        assert f.std() > 0.1  # real logits, not zeros
        assert torch.equal(f, p)


@pytest.mark.parametrize("quantization", ["int8", "w8a8"])
def test_fused_forward_runs_quantized_projections_exactly(tmp_path, quantization):
    model, _, _ = load_model(make_hf_checkpoint(tmp_path, "qwen2"), torch.float32, "cpu")
    pack_linears(model, "cpu", quantization)
    for f, p in zip(*_both(model, torch.float32)):
        assert torch.equal(f, p)


def test_models_it_cannot_run_take_the_per_op_forward(tmp_path):
    path = make_hf_checkpoint(tmp_path, "llama3")
    model, _, _ = load_model(path, torch.float32, "cpu")  # nn.Linear, not packed
    assert "not packed" in why_not_fused(model)
    with pytest.raises(ValueError, match="cannot fuse"):
        FusedLlamaCpu(model)
    vibekit_logits(model, torch.float32, SEQUENCES[:1])
    assert model._fused is False  # decided once: the per-op forward
    half, _, _ = load_model(path, torch.float16, "cpu")
    assert "float16" in why_not_fused(half)
