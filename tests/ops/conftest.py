"""Ops tests run the Triton kernels under the interpreter when there is no CUDA.

The interpreter must be switched on before any kernel is defined, so TRITON_INTERPRET is set here,
before the test modules import them.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
