"""Prepacked linear layers for CPU decode, swapped in for `nn.Linear` after `load_weights`.

`pack_linears(model, backend, quantization)` replaces the model's projections (qkv, o, gate_up,
down, lm_head, and a tied head built from the embedding) by `PackedLinearLayer`s that run
`vibekit.ops.linear` on weights repacked once. The engine calls it (`linear_backend`,
`quantization` options); model files only mark which modules may be packed (`packable_linears`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from vibekit.config import LINEAR_BACKENDS
from vibekit.ops.linear import (
    QUANTIZATIONS,
    PackedLinear,
    cpu_kernel_available,
    linear,
    pack_linear,
    quantize_int8,
)

logger = logging.getLogger(__name__)



class PackedLinearLayer(nn.Module):
    """y = x @ W^T + b on a `PackedLinear` (the unpacked weight is dropped: the kernel serves
    every row count, prefill included). x [..., K] -> [..., N] in x's dtype."""

    def __init__(self, packed: PackedLinear, backend: str) -> None:
        super().__init__()
        self.packed = packed
        self.backend = backend
        self.in_features = packed.in_features
        self.out_features = packed.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.packed, self.backend)

    def extra_repr(self) -> str:
        q = self.packed.quantization or str(self.packed.dtype).removeprefix("torch.")
        return f"in={self.in_features}, out={self.out_features}, {q}, backend={self.backend}"


def resolve_linear_backend(backend: str, device: torch.device | str) -> str:
    """"auto" -> "cpu" on a CPU where the kernel builds, else "torch" ("cpu" errors there)."""
    on_cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        return "cpu" if on_cpu and cpu_kernel_available() else "torch"
    if backend == "cpu" and not (on_cpu and cpu_kernel_available()):
        from vibekit.ops.linear import _KERNEL

        raise RuntimeError(f"linear_backend='cpu' is unavailable on {device}: "
                           f"{_KERNEL.reason or 'not a CPU tensor'}")
    return backend


@torch.no_grad()
def pack_linears(model: nn.Module, backend: str = "auto", quantization: str | None = None) -> str:
    """Swap the model's packable `nn.Linear`s for `PackedLinearLayer`s; returns the backend used.

    backend "torch" keeps `nn.Linear` (with quantization="int8" the weights are rounded to int8
    and dequantized in place: int8 numerics at float speed, where the kernel is missing; with
    "w8a8" the layers run the torch reference of the kernel's numerics, slowly).
    Models opt in with `packable_linears() -> dict[name, (weight, bias)]`; others are left as
    they are (returns "torch"). Call once, after `load_weights`.
    """
    if backend not in LINEAR_BACKENDS or quantization not in QUANTIZATIONS:
        raise ValueError(f"linear_backend={backend!r} / quantization={quantization!r}: use one "
                         f"of {list(LINEAR_BACKENDS)} and one of {list(QUANTIZATIONS)}")
    if not hasattr(model, "packable_linears"):
        if quantization is not None:
            raise ValueError(f"quantization={quantization!r} is not supported for "
                             f"{type(model).__name__}")
        return "torch"
    device = next(model.parameters()).device
    resolved = resolve_linear_backend(backend, device)
    if quantization is not None and device.type != "cpu":
        raise ValueError(f"quantization={quantization!r} is implemented for CPU only, "
                         f"not {device}")
    targets = model.packable_linears()
    for name, (weight, bias) in targets.items():
        if resolved == "torch" and quantization != "w8a8":
            if quantization is None:
                continue
            # A fresh nn.Linear (not an in-place edit: a tied head shares the embedding).
            q, scale = quantize_int8(weight)
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                              device=weight.device, dtype=weight.dtype).requires_grad_(False)
            layer.weight.copy_((q.float() * scale[:, None]).to(weight.dtype))
            if bias is not None:
                layer.bias.copy_(bias)
        else:
            layer = PackedLinearLayer(
                pack_linear(weight, bias, quantization=quantization, keep_weight=False), resolved)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, layer)
    return resolved
