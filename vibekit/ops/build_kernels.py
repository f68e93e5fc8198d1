"""Build every CPU kernel ahead of first use: `build_all()`, or `vibekit build-kernels`."""

from __future__ import annotations

from vibekit.ops.attention_cpu import _KERNEL as ATTENTION
from vibekit.ops.cpu_extension import DECODE
from vibekit.ops.linear import _KERNEL as LINEAR
from vibekit.ops.model_cpu import MODEL


def build_all() -> dict[str, str]:
    """Build (or import the cached build of) every CPU kernel now; name -> "ok (<isa> build)"
    (avx512, avx2 or generic: vibekit.ops.cpu_extension) or the reason it cannot run here.

    The engine builds each on first use; this does it ahead (CI, a container image, a sandbox's
    preload): `vibekit build-kernels`."""
    out = {}
    for name, ext in (("linear", LINEAR), ("attention", ATTENTION), ("decode", DECODE),
                      ("model", MODEL)):
        if not ext.available():
            out[name] = ext.reason
        elif ext.emulated:
            out[name] = f"ok ({ext.isa} build, {' and '.join(ext.emulated)} emulated)"
        else:
            out[name] = f"ok ({ext.isa} build)"
    return out
