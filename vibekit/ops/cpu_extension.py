"""JIT-built C++ CPU kernels (ops/csrc/*.cpp): build once with torch.utils.cpp_extension, cache,
import; or, where the CPU lacks an instruction or the build fails, `None` with one logged line.

The kernels are written with AVX512 intrinsics. On a CPU without AVX512 (AMD Zen 1-3, Intel
desktops before Ice Lake) but with AVX2 + FMA + F16C they build for AVX2 instead, through
csrc/avx2_shim.h; `ext.isa` says which build loaded. On an AVX512 CPU without AVX512_BF16 or
AVX512_VNNI the AVX512 build emulates those instructions (csrc/avx512_shim.h); `ext.emulated`
names them.

Example::

    ext = CpuExtension("attention_cpu.cpp", "paged attention kernel")
    module = ext.get()          # None (and ext.reason says why) where it cannot run here
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

# The instructions the kernels are compiled for (gcc -m flags / /proc/cpuinfo flag names).
REQUIRED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "fma")
# NOTE: -ffp-contract=off: only a kernel's explicit FMAs fuse, so the rounding of a row does not
# depend on how the compiler scheduled the code around it (batch invariance needs that).
CFLAGS = ("-O3", "-ffp-contract=off", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16",
          "-mfma", "-fopenmp")
# Where the AVX512 ones are missing, the same sources build for AVX2 + FMA + F16C instead
# (csrc/avx2_shim.h runs each 512-bit intrinsic on two 256-bit halves).
AVX2_REQUIRED_FLAGS = ("avx2", "fma", "f16c")
AVX2_CFLAGS = ("-mavx2", "-mfma", "-mf16c")
ISAS = ("avx512", "avx2")
# AVX512 extensions the AVX512 build uses where the CPU has them and emulates (csrc/avx512_shim.h)
# where it does not: /proc/cpuinfo flag -> gcc flag. Intel's AVX512 servers before Cooper Lake /
# Sapphire Rapids (Skylake-SP, Cascade Lake, Ice Lake) lack AVX512_BF16; Skylake-SP lacks VNNI.
EMULATED_FLAGS = {"avx512_bf16": "-mavx512bf16", "avx512_vnni": "-mavx512vnni"}


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class CpuExtension:
    """One C++ source under ops/csrc, built and loaded once per process (thread-safe)."""

    def __init__(self, source: str, what: str, cflags: tuple[str, ...] = CFLAGS,
                 required_flags: tuple[str, ...] = REQUIRED_FLAGS,
                 depends: tuple[str, ...] = (), avx2: bool = True,
                 isa: str | None = None, emulate: tuple[str, ...] = ()) -> None:
        """cflags / required_flags: the AVX512 build; of those, the EMULATED_FLAGS ones the CPU
        lacks are emulated (csrc/avx512_shim.h) rather than required. avx2: where the CPU lacks
        the AVX512 ones but has AVX2 + FMA + F16C, build for that instead (the source includes
        avx2_shim.h). isa: "avx512" or "avx2" to insist on one build (tests; VIBEKIT_CPU_ISA
        sets it for every kernel), None for the best this CPU runs. emulate: EMULATED_FLAGS
        names to emulate even where the CPU has them (tests of the emulation)."""
        isa = isa or os.environ.get("VIBEKIT_CPU_ISA") or None
        if isa is not None and isa not in ISAS:
            raise ValueError(f"isa={isa!r} (VIBEKIT_CPU_ISA) must be one of {list(ISAS)}")
        self.source = Path(__file__).parent / "csrc" / source
        # Other csrc files the source includes: part of the build's cache key.
        self.depends = [self.source.parent / d for d in depends]
        # only a source with AVX512 intrinsics has an AVX2 form (it includes the shim)
        self.avx2 = avx2 and any(f.startswith("avx512") for f in required_flags)
        if self.avx2:
            self.depends += [self.source.parent / "avx2_shim.h",
                             self.source.parent / "avx512_shim.h"]
        self.what = what
        self.cflags = list(cflags)
        self.required_flags = required_flags
        self.requested_isa = isa
        unknown = [f for f in emulate if f not in EMULATED_FLAGS]
        if unknown:
            raise ValueError(f"emulate={unknown} must be among {list(EMULATED_FLAGS)}")
        self.emulate = tuple(emulate)
        self.isa: str | None = None  # the build that loaded: "avx512", "avx2" or "generic"
        self.emulated: tuple[str, ...] = ()  # EMULATED_FLAGS the loaded AVX512 build emulates
        self._lock = threading.Lock()
        self._loaded = False
        self._module = None
        self.reason = ""

    def get(self):
        """The loaded module, or None (see `reason`)."""
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._module = self._load()
                    self._loaded = True
        return self._module

    def _flags(self) -> set[str]:
        return cpu_flags()

    def _choose(self) -> tuple[str, list[str]] | str:
        """(isa, cflags) of the build this CPU runs, or why there is none."""
        flags = self._flags()
        # an extension the shim emulates is not required; its gcc flag goes where it is missing
        emulated = [f for f in EMULATED_FLAGS
                    if f in self.required_flags and (f not in flags or f in self.emulate)]
        missing = [f for f in self.required_flags if f not in flags and f not in emulated]
        if not self.avx2:  # no intrinsics (or no AVX2 form): the given build or nothing
            if missing:
                return f"CPU lacks {', '.join(missing)}"
            return ("avx512" if self.required_flags else "generic"), self.cflags
        want = self.requested_isa
        if not missing and want in (None, "avx512"):
            drop = {EMULATED_FLAGS[f] for f in emulated}
            return "avx512", [f for f in self.cflags if f not in drop]
        if want == "avx512":
            return f"CPU lacks {', '.join(missing)} (VIBEKIT_CPU_ISA / isa asks for avx512)"
        missing2 = [f for f in AVX2_REQUIRED_FLAGS if f not in flags]
        if missing2:
            lacks = f"CPU lacks {', '.join(missing)}, and " if missing else "CPU lacks "
            return f"{lacks}{', '.join(missing2)} for the AVX2 build"
        base = [f for f in self.cflags if not f.startswith("-mavx512") and f != "-mfma"]
        return "avx2", [*base, *AVX2_CFLAGS]

    def _load(self):
        choice = self._choose()
        if isinstance(choice, str):
            self.reason = choice
        elif os.environ.get("VIBEKIT_DISABLE_CPU_KERNELS"):
            self.reason = "VIBEKIT_DISABLE_CPU_KERNELS is set"
        else:
            isa, cflags = choice
            try:
                module = self._build_or_import(cflags)
                self.isa = isa
                self.emulated = tuple(f for f, c in EMULATED_FLAGS.items()
                                      if isa == "avx512" and f in self.required_flags
                                      and c not in cflags)
                return module
            except Exception as exc:  # compiler, ninja or headers missing
                self.reason = f"build failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        logger.warning("vibekit: %s unavailable (%s)", self.what, self.reason)
        return None

    def _build_or_import(self, cflags: list[str]):
        """Import the cached build of this exact source, flags and torch, or build it.

        NOTE: a cached build is imported without spawning anything (torch's `load` always runs
        the compiler and ninja to check freshness, which sandboxed candidates must not do)."""
        code = b"".join(p.read_bytes() for p in [self.source, *self.depends])
        key = hashlib.sha256(code + repr((cflags, torch.__version__,
                                          sys.version)).encode())
        name = f"vibekit_{self.source.stem}_{key.hexdigest()[:16]}"
        root = os.environ.get("VIBEKIT_KERNEL_CACHE") or (
            Path.home() / ".cache" / "vibekit" / "kernels")
        build_dir = Path(root) / name
        lib = build_dir / f"{name}.so"
        if not lib.is_file():
            from torch.utils.cpp_extension import load

            build_dir.mkdir(parents=True, exist_ok=True)
            return load(name=name, sources=[str(self.source)], extra_cflags=cflags,
                        extra_ldflags=["-fopenmp"], build_directory=str(build_dir),
                        verbose=False)
        spec = importlib.util.spec_from_file_location(name, lib)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def available(self) -> bool:
        return self.get() is not None


# The small per-token ops (RoPE, KV append, RMSNorm, SiLU-and-mul; csrc/decode_cpu.cpp): plain
# C++, no AVX512 needed. -fno-trapping-math lets the compiler vectorize loops with compares
# (SiLU's clamped exp); it changes no value, only what FP exceptions may signal.
DECODE_CFLAGS = ("-O3", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp")
DECODE = CpuExtension("decode_cpu.cpp", "RoPE / KV append / RMSNorm / SiLU kernels",
                      cflags=DECODE_CFLAGS, required_flags=())

