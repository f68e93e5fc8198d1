"""Packed MLX projections (vibekit.models.mlx.linear): one fused matmul computes what the
separate mlx.nn linears compute, float (transposed [in, out] weights) and quantized alike; a model
refuses to run unpacked and to be quantized once packed."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")

from vibekit.models.mlx import load_mlx_model, quantize_model  # noqa: E402
from vibekit.models.mlx.linear import MLXLinearT  # noqa: E402
from vibekit.models.mlx.llama import MLXLlamaForCausalLM  # noqa: E402


@pytest.mark.parametrize("in_dims,outs,bias", [(19, [1, 19, 7], False), (99, [99, 3], True),
                                               (64, [989], True)])
@pytest.mark.parametrize("num_tokens", [1, 19])
def test_packed_float_linears_equal_the_separate_ones(in_dims, outs, bias, num_tokens):
    mx.random.seed(in_dims + num_tokens)
    linears = [nn.Linear(in_dims, o, bias=bias) for o in outs]
    x = mx.random.normal((num_tokens, in_dims))
    fused = MLXLinearT.pack(linears)
    assert isinstance(fused, MLXLinearT) and fused.weight_t.shape == (in_dims, sum(outs))
    expected = np.concatenate([np.array(m(x)) for m in linears], axis=-1)
    np.testing.assert_allclose(np.array(fused(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [4, 8])
def test_packed_quantized_linears_equal_the_separate_ones(bits):
    mx.random.seed(bits)
    linears = [nn.Linear(128, o, bias=True) for o in (64, 192, 64)]
    quantized = [nn.QuantizedLinear.from_linear(m, group_size=64, bits=bits) for m in linears]
    for q, m in zip(quantized, linears):
        q.bias = m.bias
    x = mx.random.normal((5, 128))
    fused = MLXLinearT.pack(quantized)
    assert type(fused) is nn.QuantizedLinear and fused.bits == bits
    expected = np.concatenate([np.array(q(x)) for q in quantized], axis=-1)
    np.testing.assert_allclose(np.array(fused(x)), expected, rtol=1e-5, atol=1e-5)


def test_pack_refuses_linears_it_cannot_fuse():
    a, b = nn.Linear(64, 8), nn.Linear(32, 8)
    with pytest.raises(ValueError, match="same input size"):
        MLXLinearT.pack([a, b])
    q = nn.QuantizedLinear.from_linear(nn.Linear(64, 64), group_size=64, bits=8)
    with pytest.raises(ValueError, match="all-float nn.Linear or all-quantized"):
        MLXLinearT.pack([a, q])
    with pytest.raises(ValueError, match="a bias or none"):
        MLXLinearT.pack([nn.Linear(64, 8), nn.Linear(64, 8, bias=False)])


def test_a_model_runs_only_packed_and_quantizes_only_before_packing():
    model, config, _ = load_mlx_model("dummy:tiny-llama", "float32")
    assert model.packed
    with pytest.raises(ValueError, match="quantize before"):
        quantize_model(model, "mlx-q8")
    unpacked = MLXLlamaForCausalLM(config)
    kv = [(mx.zeros((4, config.num_kv_heads, config.head_dim)),) * 2] * config.num_layers
    with pytest.raises(RuntimeError, match="pack"):
        unpacked(mx.array([1]), None, mx.array([0]), kv)
