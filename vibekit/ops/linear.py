"""Linear layers for decode: y = x @ W^T + b, with weights prepacked for an AVX512 / AVX2 GEMV.

Three pieces, like every op here:

- `linear_ref(x, weight, bias, scale)`: the spec in plain torch (float32 accumulate).
- `linear_cpu(x, packed)`: a C++ kernel (`ops/csrc/linear_cpu.cpp`, built on first use with
  torch.utils.cpp_extension and cached) over weights repacked once by `pack_linear` into groups
  of 64 output channels: float32, bfloat16 (avx512_bf16 dot products, or their emulation on
  AVX512 CPUs without it: ops/csrc/avx512_shim.h; float32 accumulate) or
  weight-only int8 with per-output-channel scales (dequantized in registers), or "w8a8": int8
  weights times int8 activations quantized per row at run time (symmetric, max|x|/127), summed
  exactly in int32 by avx512_vnni dot products — the numerics of llama.cpp's Q8_0 x Q8_0 dot
  (with one scale per row and per output channel instead of one per 32 values).
- `linear(x, packed, backend="auto")`: picks the kernel when it is available, else torch.

NOTE (batch invariance): the kernel accumulates each output element in one fixed order
(k = 0..K-1) whatever the number of rows M or threads, so a row computed in a batch or a verify
block is bit-identical to the same row computed alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vibekit.ops.cpu_extension import CpuExtension
from vibekit.ops.cpu_extension import cpu_flags as _cpu_flags
from vibekit.ops.registry import register, resolve, set_auto_order

logger = logging.getLogger(__name__)

LINEAR_BACKENDS = ("auto", "cpu", "torch", "ref")
QUANTIZATIONS = (None, "int8", "w8a8")
# Output channels per packed group; must match kGroup in csrc/linear_cpu.cpp.
_GROUP = 64
_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}
# The instructions the kernel is compiled for (gcc -m flags / /proc/cpuinfo flag names).
_REQUIRED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "fma")
# NOTE: -ffp-contract=off: only the kernel's explicit FMAs fuse, so every row-tile height rounds
# the same way (an implicit mul+add contraction broke bit-identity across M).
_CFLAGS = ["-O3", "-ffp-contract=off", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16",
           "-mavx512vnni", "-mfma", "-fopenmp"]


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               scale: torch.Tensor | None = None) -> torch.Tensor:
    """Reference implementation of a linear layer: y = x @ (weight * scale[:, None])^T + bias.

    x [M, K] (float32 or bfloat16), weight [N, K] (x's dtype, or int8 with `scale` [N] float32:
    weight-only quantization), bias [N] or None. Computed in float32; returns [M, N] in x's dtype.
    """
    w = weight.float()
    if scale is not None:
        w = w * scale.float()[:, None]
    y = x.float() @ w.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def linear_w8a8_ref(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of the "w8a8" linear: weight [N, K] int8 with per-channel `scale` [N]; each row
    of x [M, K] is quantized to int8 with s = max|row| / 127 (1 for a zero row), q = round(x / s)
    (half to even) clamped to [-127, 127]; y = float(sum_k q * W) * (s * scale[n]) + bias, the sum
    exact (integers), returned in x's dtype. The kernel gives these exact bits."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    s = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(xf / s).clamp_(-127, 127)
    acc = (q.double() @ weight.double().T).float()  # exact: |acc| < 2**53
    y = acc * (s * scale.float()[None, :])
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


@dataclass(frozen=True)
class PackedLinear:
    """A weight repacked for `linear_cpu`, plus what `linear` needs to run it another way.

    data: fp32 [G, K, 64] / bf16 [G, ceil(K/2), 64, 2] / int8 [G, K, 64] / w8a8 int8
    [G, ceil(K/4), 64, 4] with G = ceil(N/64).
    weight: the unpacked weight [N, K] (x's dtype, or int8) for the torch path, or None when the
    caller dropped it to save memory. scale: [G * 64] float32 (int8, w8a8). bias: [N] float32.
    comp: [G * 64] int32, 128 * sum_k W[n, k] (w8a8 only).
    """

    data: torch.Tensor
    out_features: int
    in_features: int
    dtype: torch.dtype        # activation / output dtype
    weight: torch.Tensor | None
    scale: torch.Tensor | None
    bias: torch.Tensor | None
    comp: torch.Tensor | None = None

    @property
    def quantization(self) -> str | None:
        if self.data.dtype != torch.int8:
            return None
        return "w8a8" if self.data.dim() == 4 else "int8"

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads per call (weights, scales, bias)."""
        extra = sum(t.numel() * t.element_size() for t in (self.scale, self.bias, self.comp)
                    if t is not None)
        return self.data.numel() * self.data.element_size() + extra


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: weight [N, K] -> (q int8 [N, K], scale float32 [N]),
    weight ~= q * scale[:, None], scale = max|row| / 127 (1 for an all-zero row)."""
    w = weight.float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def pack_linear(weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                quantization: str | None = None, keep_weight: bool = True) -> PackedLinear:
    """Repack weight [N, K] (float32 or bfloat16) for `linear_cpu`; optionally quantize to int8.

    keep_weight=False drops the unpacked copy (halves memory; `linear` then always runs the
    kernel, or the reference on the packed data where the kernel is missing). Example::

        packed = pack_linear(layer.weight, layer.bias, quantization="int8")
        y = linear(x, packed)                      # x [M, K] -> [M, N]

    quantization: None, "int8" (weight-only) or "w8a8" (int8 weights and activations).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is not supported; use one of "
                         f"{list(QUANTIZATIONS)}")
    if weight.dim() != 2 or weight.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"weight must be [N, K] float32 or bfloat16, got {tuple(weight.shape)} "
                         f"{weight.dtype}")
    dtype = weight.dtype
    n, k = weight.shape
    groups = -(-n // _GROUP)
    pad_n = groups * _GROUP - n
    scale = comp = None
    w = weight.detach()
    if quantization in ("int8", "w8a8"):
        w, scale = quantize_int8(w)
        scale = F.pad(scale, (0, pad_n), value=1.0).contiguous()
    w_pad = F.pad(w, (0, 0, 0, pad_n)) if pad_n else w
    if quantization == "w8a8":
        comp = F.pad(128 * w.to(torch.int32).sum(dim=1, dtype=torch.int32), (0, pad_n))
        comp = comp.to(torch.int32).contiguous()
        k4 = -(-k // 4)
        w_pad = F.pad(w_pad, (0, 4 * k4 - k))  # zero columns so k quads are whole
        data = w_pad.view(groups, _GROUP, k4, 4).permute(0, 2, 1, 3)  # [G, K/4, 64, 4]
    elif w.dtype == torch.bfloat16:
        w_pad = F.pad(w_pad, (0, k % 2))  # zero column so k pairs are whole
        data = w_pad.view(groups, _GROUP, -1, 2).permute(0, 2, 1, 3)  # [G, K/2, 64, 2]
    else:
        data = w_pad.view(groups, _GROUP, k).permute(0, 2, 1)  # [G, K, 64]
    return PackedLinear(
        data=data.contiguous(), out_features=n, in_features=k, dtype=dtype,
        weight=w.contiguous() if keep_weight else None, scale=scale,
        bias=None if bias is None else bias.detach().float().contiguous(), comp=comp,
    )


def unpack_weight(packed: PackedLinear) -> torch.Tensor:
    """The weight [N, K] held by `packed.data` (int8 stays int8): inverse of the repacking."""
    n, k = packed.out_features, packed.in_features
    d = packed.data
    if d.dim() == 4:  # bf16 pairs [G, K/2, 64, 2] or w8a8 quads [G, K/4, 64, 4]
        w = d.permute(0, 2, 1, 3).reshape(-1, d.shape[1] * d.shape[3])[:, :k]
    else:
        w = d.permute(0, 2, 1).reshape(-1, k)
    return w[:n]


class _Kernel(CpuExtension):
    """The linear kernel's build (vibekit.ops.cpu_extension): the module, or `None` with one
    logged line where the CPU lacks an instruction it needs or the build fails."""

    def __init__(self) -> None:
        super().__init__("linear_cpu.cpp", "linear kernel (using torch's linear)",
                         cflags=tuple(_CFLAGS), required_flags=_REQUIRED_FLAGS)

    def _flags(self) -> set[str]:
        return _cpu_flags()


_KERNEL = _Kernel()


def cpu_kernel_available() -> bool:
    """Whether `linear_cpu` can run here (builds the extension on the first call)."""
    return _KERNEL.get() is not None


def linear_cpu(x: torch.Tensor, packed: PackedLinear) -> torch.Tensor:
    """The packed kernel (AVX512, or AVX2 through csrc/avx2_shim.h): x [M, K] float32/bfloat16
    (packed.dtype) on CPU -> [M, N] in x's dtype.

    Raises RuntimeError where the kernel is unavailable (see `cpu_kernel_available`)."""
    module = _KERNEL.get()
    if module is None:
        raise RuntimeError(f"linear backend 'cpu' is unavailable: {_KERNEL.reason}")
    if x.dtype != packed.dtype or x.device.type != "cpu" or x.shape[-1] != packed.in_features:
        raise ValueError(f"x {tuple(x.shape)} {x.dtype} on {x.device} does not fit a packed "
                         f"[{packed.out_features}, {packed.in_features}] {packed.dtype} weight")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, packed.in_features).contiguous()
    empty = _EMPTY
    if packed.comp is not None:
        y = module.packed_linear_w8a8(x2, packed.data, packed.out_features, packed.scale,
                                      packed.comp, empty if packed.bias is None else packed.bias)
        return y.view(*lead, packed.out_features)
    y = module.packed_linear(x2, packed.data, _KIND[packed.data.dtype], packed.out_features,
                             empty if packed.scale is None else packed.scale,
                             empty if packed.bias is None else packed.bias)
    return y.view(*lead, packed.out_features)


_EMPTY = torch.empty(0)


def _linear_torch(x: torch.Tensor, packed: PackedLinear) -> torch.Tensor:
    if packed.comp is not None:  # w8a8: its numerics are the reference's
        return _linear_ref_packed(x, packed)
    weight = packed.weight if packed.weight is not None else unpack_weight(packed)
    if packed.scale is not None:  # int8: dequantize, then torch's GEMM in x's dtype
        weight = (weight.float() * packed.scale[: packed.out_features, None]).to(x.dtype)
    bias = None if packed.bias is None else packed.bias.to(x.dtype)
    return F.linear(x, weight, bias)


def linear(x: torch.Tensor, packed: PackedLinear, backend: str = "auto") -> torch.Tensor:
    """y = x @ W^T + b on a `pack_linear` weight. x [..., K] -> [..., N] in x's dtype.

    backend: "cpu" (the packed kernel; errors where unavailable), "torch" (F.linear on the
    unpacked weight), "ref" (`linear_ref`), "auto" ("cpu" for CPU tensors where the kernel
    builds, else "torch").
    """
    return resolve("linear", backend, x.device)(x, packed)


def _linear_ref_packed(x: torch.Tensor, packed: PackedLinear) -> torch.Tensor:
    weight = packed.weight if packed.weight is not None else unpack_weight(packed)
    scale = None if packed.scale is None else packed.scale[: packed.out_features]
    lead = x.shape[:-1]
    if packed.comp is not None:
        y = linear_w8a8_ref(x.reshape(-1, packed.in_features), weight, scale, packed.bias)
        return y.view(*lead, packed.out_features)
    y = linear_ref(x.reshape(-1, packed.in_features), weight, packed.bias, scale)
    return y.view(*lead, packed.out_features)


register("linear", "ref", _linear_ref_packed)
register("linear", "torch", _linear_torch)
register("linear", "cpu", linear_cpu, available=cpu_kernel_available)
set_auto_order("linear", "cpu", ("cpu", "torch", "ref"))
set_auto_order("linear", "cuda", ("torch", "ref"))
