"""Session-scoped tiny HF hybrid checkpoints (Bamba, Qwen3.5) saved with save_pretrained."""

from __future__ import annotations

import pytest
import torch

from tests.ssm.hybrid_reference import make_hybrid_checkpoint


@pytest.fixture(scope="session", params=["bamba", "qwen3_5"])
def hybrid_ckpt(request, tmp_path_factory):
    """(family, path, HF model) for each hybrid family."""
    path = tmp_path_factory.mktemp(request.param)
    return request.param, path, make_hybrid_checkpoint(path, request.param)


@pytest.fixture(autouse=True)
def _one_thread():
    # NOTE: tiny matmuls on a shared 2-core machine: more threads only oversubscribe.
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)
