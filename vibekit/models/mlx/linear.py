"""Fused projections on MLX: the linears that read one input (q/k/v, gate/up) packed into one
matmul after loading, the way the torch path prepacks its linears (vibekit.models.linear).

Float weights are stored transposed, [in, out] row-major, so the matmul is `x @ w` with no
transpose flag: the layout the CPU backend's BLAS reads fastest (mlx[cpu] on Linux runs a
64-token block's projections ~1.7x faster than `x @ w.T`, see benchmarks/RESULTS.md; on a Mac GPU
MLX's GEMM takes either layout). Quantized linears (mx.quantize) stay in mlx's own layout,
fused along their output rows into one QuantizedLinear. The outputs equal the separate
HF-layout linears' to float rounding (the BLAS accumulates `x @ w` and `x @ w.T` in different
orders: ~5e-7 apart at unit scale), not bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn


class MLXLinearT(nn.Module):
    """A float linear with its weight stored transposed: `weight_t` [in, out], bias [out].

    Example::

        fused = MLXLinearT.pack([attn.q_proj, attn.k_proj, attn.v_proj])  # [T, h] -> [T, q+k+v]
    """

    def __init__(self, weight_t: mx.array, bias: mx.array | None) -> None:
        super().__init__()
        self.weight_t = weight_t
        if bias is not None:
            self.bias = bias

    @staticmethod
    def pack(linears: Sequence[nn.Module]) -> nn.Module:
        """One module computing `concat([l(x) for l in linears], -1)`: an MLXLinearT for
        nn.Linear, one QuantizedLinear for QuantizedLinears of the same group size, bits and
        mode. Raises ValueError for a mix, or for inputs of different sizes."""
        if all(type(m) is nn.Linear for m in linears):
            if len({m.weight.shape[1] for m in linears}) != 1:
                raise ValueError("fused linears must read the same input size, got "
                                 f"{[tuple(m.weight.shape) for m in linears]}")
            weight = mx.concatenate([m.weight for m in linears], axis=0)  # [out, in]
            return MLXLinearT(mx.contiguous(weight.T), _fused_bias(linears))  # [in, out]
        if all(type(m) is nn.QuantizedLinear for m in linears):
            first = linears[0]
            if any((m.group_size, m.bits, m.mode, m.weight.shape[1])
                   != (first.group_size, first.bits, first.mode, first.weight.shape[1])
                   for m in linears):
                raise ValueError("fused quantized linears must share group size, bits, mode "
                                 "and input size")
            in_dims = first.weight.shape[1] * 32 // first.bits
            out_dims = sum(m.weight.shape[0] for m in linears)
            bias = _fused_bias(linears)
            fused = nn.QuantizedLinear(in_dims, out_dims, bias is not None, first.group_size,
                                       first.bits, mode=first.mode)
            fused.weight = mx.concatenate([m.weight for m in linears], axis=0)
            fused.scales = mx.concatenate([m.scales for m in linears], axis=0)
            if first.get("biases") is not None:
                fused.biases = mx.concatenate([m.biases for m in linears], axis=0)
            if bias is not None:
                fused.bias = bias
            return fused
        raise ValueError("can only fuse all-float nn.Linear or all-quantized nn.QuantizedLinear, "
                         f"got {[type(m).__name__ for m in linears]}")

    def _extra_repr(self) -> str:
        in_dims, out_dims = self.weight_t.shape
        return f"input_dims={in_dims}, output_dims={out_dims}, bias={'bias' in self}"

    def __call__(self, x: mx.array) -> mx.array:
        if "bias" in self:
            return mx.addmm(self["bias"], x, self["weight_t"])
        return x @ self["weight_t"]


def _fused_bias(linears: Sequence[nn.Module]) -> mx.array | None:
    has = ["bias" in m for m in linears]
    if not any(has):
        return None
    if not all(has):
        raise ValueError("fused linears must all have a bias or none")
    return mx.concatenate([m.bias for m in linears], axis=0)
