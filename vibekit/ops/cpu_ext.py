"""Build-once loading of vibekit's small C++ CPU extensions (vibekit/ops/csrc/*.cpp).

`CpuExtension("decode_cpu.cpp", flags).get()` returns the compiled module, built with
torch.utils.cpp_extension on first use and cached under ~/.cache/vibekit/kernels (or
$VIBEKIT_KERNEL_CACHE) by a hash of the source, flags, torch and Python; `None`, with one logged
line, where it cannot build (no compiler or ninja) or VIBEKIT_DISABLE_CPU_KERNELS is set, so the
ops that use it fall back to their torch paths. A cached build is imported without spawning a
compiler (sandboxed candidates must not).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import threading
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_CSRC = Path(__file__).parent / "csrc"


class CpuExtension:
    def __init__(self, source: str, cflags: tuple[str, ...] = ("-O3", "-ffp-contract=off",
                                                               "-fopenmp"),
                 required_cpu_flags: tuple[str, ...] = ()) -> None:
        self.source = _CSRC / source
        self.cflags = list(cflags)
        self.required = required_cpu_flags
        self._lock = threading.Lock()
        self._loaded = False
        self._module = None
        self.reason = ""

    def get(self):
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._module = self._load()
                    self._loaded = True
        return self._module

    def available(self) -> bool:
        return self.get() is not None

    def _load(self):
        from vibekit.ops.linear import _cpu_flags

        missing = [f for f in self.required if f not in _cpu_flags()]
        if missing:
            self.reason = f"CPU lacks {', '.join(missing)}"
        elif os.environ.get("VIBEKIT_DISABLE_CPU_KERNELS"):
            self.reason = "VIBEKIT_DISABLE_CPU_KERNELS is set"
        else:
            try:
                return self._build_or_import()
            except Exception as exc:  # compiler, ninja or headers missing
                self.reason = f"build failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        logger.warning("vibekit: CPU kernels of %s unavailable (%s); using torch",
                       self.source.name, self.reason)
        return None

    def _build_or_import(self):
        key = hashlib.sha256(self.source.read_bytes() + repr((self.cflags, torch.__version__,
                                                              sys.version)).encode())
        name = f"vibekit_{self.source.stem}_{key.hexdigest()[:16]}"
        root = (os.environ.get("VIBEKIT_KERNEL_CACHE")
                or Path.home() / ".cache" / "vibekit" / "kernels")
        build_dir = Path(root) / name
        lib = build_dir / f"{name}.so"
        if not lib.is_file():
            from torch.utils.cpp_extension import load

            build_dir.mkdir(parents=True, exist_ok=True)
            return load(name=name, sources=[str(self.source)], extra_cflags=self.cflags,
                        extra_ldflags=["-fopenmp"], build_directory=str(build_dir),
                        verbose=False)
        spec = importlib.util.spec_from_file_location(name, lib)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


DECODE = CpuExtension("decode_cpu.cpp")
