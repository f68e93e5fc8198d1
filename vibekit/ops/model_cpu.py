"""The whole llama-family forward in one C++ call on CPU (ops/csrc/model_cpu.cpp).

A decode step of a small model spends most of its time in per-op Python and dispatch: module
calls, the op registry, views and temporaries, ~15 per layer. `FusedLlamaCpu` hands the packed
weights to C++ once and then runs embedding, every layer and the head in one call, with the very
functions the per-op path's "cpu" backends call, in its order: the logits are bit-identical to
the per-op forward on those backends (tests/ops/test_model_cpu.py), so every exactness and
batch-invariance property carries over.

It applies when the model's projections are packed for the "cpu" linear kernel (the engine's
default on AVX512 and AVX2 CPUs), the dtype is float32 or bfloat16, and the step's attention
backend is the CPU kernel ("auto" or "cpu"); anything else runs the per-op forward.
`model.use_fused_cpu = False` turns it off (e.g. to profile the ops one by one).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from vibekit.ops.cpu_extension import CpuExtension
from vibekit.ops.linear import _CFLAGS, _EMPTY, _KIND, _REQUIRED_FLAGS

logger = logging.getLogger(__name__)

# The linear kernel's instructions and flags (this file includes its source), and the small
# ops' -fno-trapping-math (decode_cpu.cpp's vectorized SiLU; no value changes).
MODEL = CpuExtension("model_cpu.cpp", "fused llama forward (using the per-op forward)",
                     cflags=(*_CFLAGS, "-fno-trapping-math"), required_flags=_REQUIRED_FLAGS,
                     depends=("linear_cpu.cpp", "attention_cpu.cpp", "decode_cpu.cpp"))


def _linear_args(layer: Any) -> dict[str, Any] | None:
    """A PackedLinearLayer on the "cpu" kernel as the C++ side's dict; None for anything else."""
    packed = getattr(layer, "packed", None)
    if packed is None or getattr(layer, "backend", None) != "cpu":
        return None
    return {"data": packed.data, "kind": _KIND[packed.data.dtype],
            "out_features": packed.out_features,
            "scale": _EMPTY if packed.scale is None else packed.scale,
            "bias": _EMPTY if packed.bias is None else packed.bias,
            "comp": _EMPTY if packed.comp is None else packed.comp}


def why_not_fused(model: torch.nn.Module) -> str:
    """"" when `FusedLlamaCpu(model)` can run, else the reason it cannot."""
    if getattr(model, "rope", None) is None or not hasattr(model, "model"):
        return f"{type(model).__name__} is not a llama-family model"
    embed = model.model.embed_tokens.weight
    if embed.device.type != "cpu" or embed.dtype not in (torch.float32, torch.bfloat16):
        return f"weights are {embed.dtype} on {embed.device} (float32 / bfloat16 on CPU only)"
    heads = [model.lm_head]
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if attn.output_gate or attn.rotary_dim != attn.head_dim:
            return "output gates and partial rotary are not fused"
        heads += [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        if attn.qk_norm:
            norms += [attn.q_norm, attn.k_norm]
        if any(type(n).__name__ != "RMSNorm" or n.weight.dtype != embed.dtype for n in norms):
            return "norm weights differ in kind or dtype from the model's"
    if any(_linear_args(h) is None for h in heads):
        return "projections are not packed for the 'cpu' linear kernel"
    if MODEL.get() is None:
        return MODEL.reason
    return ""


class FusedLlamaCpu:
    """The C++ forward of one LlamaForCausalLM whose projections are packed (see the module
    docstring). `forward(batch)` -> float32 logits [S, V] of `batch.sample_indices`."""

    def __init__(self, model: torch.nn.Module) -> None:
        reason = why_not_fused(model)
        if reason:
            raise ValueError(f"cannot fuse this model's forward: {reason}")
        inner = model.model
        layers = []
        for layer in inner.layers:
            attn = layer.self_attn
            layers.append({
                "input_norm": layer.input_layernorm.weight.detach(),
                "post_norm": layer.post_attention_layernorm.weight.detach(),
                "q_norm": attn.q_norm.weight.detach() if attn.qk_norm else None,
                "k_norm": attn.k_norm.weight.detach() if attn.qk_norm else None,
                "qkv": _linear_args(attn.qkv_proj), "o": _linear_args(attn.o_proj),
                "gate_up": _linear_args(layer.mlp.gate_up_proj),
                "down": _linear_args(layer.mlp.down_proj),
            })
        first = inner.layers[0].self_attn
        self.rope = model.rope
        self.impl = MODEL.get().LlamaCpu(
            inner.embed_tokens.weight.detach(), inner.norm.weight.detach(),
            _linear_args(model.lm_head), layers, first.num_qo_heads, first.num_kv_heads,
            first.head_dim, float(inner.norm.eps), float(first.scale))
        self._caches: list | None = None

    def forward(self, batch: Any) -> torch.Tensor:
        caches = batch.kv_caches
        if caches is not self._caches:
            self.impl.set_caches([k for k, _ in caches], [v for _, v in caches])
            self._caches = caches
        cos, sin = self.rope.get(batch.max_kv_len, batch.input_ids.device)
        return self.impl.forward(batch.input_ids, batch.positions, cos, sin, batch.slot_mapping,
                                 batch.qo_indptr, batch.page_table, batch.kv_lens,
                                 batch.sample_indices)
