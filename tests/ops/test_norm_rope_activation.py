"""RMSNorm, RoPE and SiLU-and-mul against HF transformers' Llama modules and plain torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from vibekit.ops import (
    apply_rope,
    rms_norm,
    rope_cos_sin_cache,
    rope_inv_freq,
    silu_and_mul,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("backend", ["ref", "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 19, 99])
def test_rms_norm_matches_llama_rms_norm(dtype, num_tokens, backend):
    gen = torch.Generator().manual_seed(num_tokens)
    hidden = 72
    hf = LlamaRMSNorm(hidden, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(1 + 0.1 * torch.randn(hidden, generator=gen))
    hf = hf.to(dtype)
    x = (3 * torch.randn(num_tokens, hidden, generator=gen)).to(dtype)
    with torch.no_grad():
        expected = hf(x)
    out = rms_norm(x, hf.weight.detach(), 1e-6, backend=backend)
    assert out.dtype == expected.dtype
    if backend == "ref" or dtype == torch.float16:  # the spec (float16 always takes it): HF's bits
        torch.testing.assert_close(out, expected, atol=0, rtol=0)
    else:  # the C++ default sums in its own fixed order: float32 rounding apart, no more
        atol, rtol = (1e-6, 1e-6) if dtype == torch.float32 else (0, 8e-3)
        torch.testing.assert_close(out, expected, atol=atol, rtol=rtol)


def _llama_config(rope_parameters: dict, head_dim: int = 32) -> LlamaConfig:
    return LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=head_dim, max_position_embeddings=4096,
                       rope_parameters=rope_parameters)


ROPE_PARAMETERS = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    # original_max_position_embeddings small enough that low, medium and high bands all occur.
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256},
}


@pytest.mark.parametrize("kind", list(ROPE_PARAMETERS))
def test_rope_inv_freq_matches_llama_rotary_embedding(kind):
    params = ROPE_PARAMETERS[kind]
    hf = LlamaRotaryEmbedding(_llama_config(params))
    assert hf.attention_scaling == 1.0
    ours = rope_inv_freq(32, params["rope_theta"], params)
    torch.testing.assert_close(ours, hf.inv_freq, atol=0, rtol=1e-6)
    if kind == "llama3":  # the scaling really changed something
        assert not torch.allclose(ours, rope_inv_freq(32, params["rope_theta"]))


@pytest.mark.parametrize("kind", list(ROPE_PARAMETERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_rope_matches_apply_rotary_pos_emb(kind, dtype):
    params = ROPE_PARAMETERS[kind]
    head_dim, num_tokens = 32, 19
    hf = LlamaRotaryEmbedding(_llama_config(params, head_dim))
    gen = torch.Generator().manual_seed(0)
    positions = torch.randint(0, 4096, (num_tokens,), generator=gen)
    q = torch.randn(num_tokens, 4, head_dim, generator=gen).to(dtype)
    k = torch.randn(num_tokens, 2, head_dim, generator=gen).to(dtype)

    cos_hf, sin_hf = hf(q, positions[None])  # [1, T, D] in q.dtype
    q_hf, k_hf = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                      cos_hf, sin_hf)  # [1, H, T, D]

    cos, sin = rope_cos_sin_cache(rope_inv_freq(head_dim, params["rope_theta"], params), 4096)
    q_out, k_out = apply_rope(q, k, positions, cos, sin)
    torch.testing.assert_close(q_out, q_hf[0].transpose(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_out, k_hf[0].transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_rope_rejects_an_unknown_rope_type_by_name():
    with pytest.raises(ValueError, match="yarn"):
        rope_inv_freq(32, 10000.0, {"rope_type": "yarn", "factor": 2.0})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 19, 99])
def test_silu_and_mul_is_silu_of_gate_times_up(dtype, num_tokens):
    gen = torch.Generator().manual_seed(num_tokens)
    gate = torch.randn(num_tokens, 37, generator=gen).to(dtype)
    up = torch.randn(num_tokens, 37, generator=gen).to(dtype)
    out = silu_and_mul(torch.cat([gate, up], dim=-1))
    torch.testing.assert_close(out, F.silu(gate) * up)
