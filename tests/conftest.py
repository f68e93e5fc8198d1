"""Session-wide test setup.

Triton kernels run under the interpreter when there is no CUDA (tests/ops, tests/grammar).
Some test modules import triton indirectly at collection (transformers -> torch._dynamo ->
triton), before tests/ops/conftest.py switches the interpreter on; in the full run that left
triton's standard library (tl.zeros, ...) un-interpreted and every interpreted kernel calling
it failed ("Cannot call @triton.jit'd outside of the scope of a kernel"). So it is set here,
before any test module is imported.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
