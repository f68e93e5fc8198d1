"""The op-backend registry: `{op: {backend: implementation}}` and the one dispatch rule.

Backends: "ref" (plain torch, the spec: every op has it), "torch" (a faster torch path),
"triton" (CUDA kernels; on the CPU only under TRITON_INTERPRET=1, for tests), and op-specific
ones (e.g. "xgrammar" for apply_token_bitmask). An implementation is a function or a lazy
"module:function" path, so importing vibekit.ops never imports triton, xgrammar or mlx.

The rule for backend="auto": the first backend, in the op's preference order for the tensor's
device, that the op has and whose package imports. Default order: CUDA triton, torch, ref; any
other device torch, ref. A backend the op does not have, or whose package is missing, is an
error naming what is available; never a silent fall back to the reference under a faster name.

Example::

    register("rms_norm", "ref", rms_norm_ref)
    register("rms_norm", "triton", "vibekit.ops.triton.norm:rms_norm_triton")
    fn = resolve("rms_norm", "auto", x.device)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import torch

_DEFAULT_ORDER = {"cuda": ("triton", "torch", "ref")}
_FALLBACK_ORDER = ("torch", "ref")
# Backends that need a package beyond torch.
_PACKAGES = {"triton": "triton", "xgrammar": "xgrammar", "mlx": "mlx"}

_OPS: dict[str, dict[str, Callable[..., Any] | str]] = {}
# (op, backend) -> a check that the backend can run here (e.g. a kernel that builds on this CPU).
_CHECKS: dict[tuple[str, str], Callable[[], bool]] = {}
_ORDERS: dict[str, dict[str, tuple[str, ...]]] = {}
# (op, backend, device type) -> implementation: the hot path is one dict lookup per op call.
_RESOLVED: dict[tuple[str, str, str], Callable[..., Any]] = {}


def register(op: str, backend: str, impl: Callable[..., Any] | str,
             available: Callable[[], bool] | None = None) -> None:
    """Add `backend` to `op`; `impl` is a function or a lazy "module:function" path.
    `available`: a check that the backend can run here, beyond its package importing."""
    impls = _OPS.setdefault(op, {})
    if backend in impls:
        raise ValueError(f"op {op!r} already has a {backend!r} backend")
    impls[backend] = impl
    if available is not None:
        _CHECKS[(op, backend)] = available
    _RESOLVED.clear()


def set_auto_order(op: str, device_type: str, order: tuple[str, ...]) -> None:
    """Override the "auto" preference order of `op` on one device type."""
    _ORDERS.setdefault(op, {})[device_type] = order
    _RESOLVED.clear()


def ops() -> list[str]:
    return sorted(_OPS)


def backends(op: str) -> list[str]:
    """The backends `op` has, ref first."""
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r}; registered: {', '.join(ops())}")
    return sorted(_OPS[op], key=lambda b: (b != "ref", b != "torch", b))


@functools.cache
def available(backend: str) -> bool:
    """Whether the package a backend needs imports (torch backends always do)."""
    package = _PACKAGES.get(backend)
    return package is None or importlib.util.find_spec(package) is not None


def auto_backend(op: str, device: torch.device | str) -> str:
    device_type = torch.device(device).type
    order = _ORDERS.get(op, {}).get(device_type) or _DEFAULT_ORDER.get(device_type,
                                                                          _FALLBACK_ORDER)
    impls = _OPS[op]
    for backend in order:
        if backend in impls and _runs(op, backend):
            return backend
    return "ref"


def _runs(op: str, backend: str) -> bool:
    check = _CHECKS.get((op, backend))
    return available(backend) and (check is None or check())


def resolve(op: str, backend: str, device: torch.device | str) -> Callable[..., Any]:
    """The implementation of `op` for `backend` ("auto": the dispatch rule above)."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    fn = _RESOLVED.get((op, backend, device_type))
    if fn is None:
        fn = _RESOLVED[(op, backend, device_type)] = _resolve(op, backend, device_type)
    return fn


def _resolve(op: str, backend: str, device: str) -> Callable[..., Any]:
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r}; registered: {', '.join(ops())}")
    if backend == "auto":
        backend = auto_backend(op, device)
    impl = _OPS[op].get(backend)
    if impl is None:
        raise ValueError(f"{op} has no {backend!r} backend; it has: "
                         f"{', '.join(['auto'] + backends(op))}")
    if not available(backend):
        raise ValueError(f"the {backend!r} backend of {op} needs the {_PACKAGES[backend]} "
                         "package, which is not installed")
    if not _runs(op, backend):
        raise ValueError(f"the {backend!r} backend of {op} cannot run on this machine "
                         "(see the log for why); ask for 'auto' to fall back")
    if isinstance(impl, str):
        impl = _load(impl)
        _OPS[op][backend] = impl
    return impl


def _load(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
