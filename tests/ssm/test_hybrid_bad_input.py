"""Settings a model's caches cannot honour are refused at start, naming why."""

from __future__ import annotations

import pytest

from vibekit import Engine
from vibekit.ssm import StatePool, StateSpec


def test_memory_budget_too_small_for_one_request_fails_at_start(hybrid_ckpt):
    _, path, _ = hybrid_ckpt
    with pytest.raises(ValueError, match="cannot hold one request.*recurrent state"):
        Engine.from_pretrained(path, memory_budget_bytes=20_000, max_model_len=128)


def test_snapshot_budget_below_one_snapshot_fails_at_start(hybrid_ckpt):
    _, path, _ = hybrid_ckpt
    with pytest.raises(ValueError, match="holds no state snapshot"):
        Engine.from_pretrained(path, snapshot_memory_bytes=100, max_model_len=128)


def test_divergence_snapshots_need_chunked_prefill(hybrid_ckpt):
    _, path, _ = hybrid_ckpt
    with pytest.raises(ValueError, match="chunked prefill"):
        Engine.from_pretrained(path, enable_chunked_prefill=False, max_model_len=128,
                               max_num_batched_tokens=128)


def test_dense_model_refuses_snapshot_options():
    with pytest.raises(ValueError, match="no recurrent layers"):
        Engine.from_pretrained("dummy:tiny-llama", snapshot_every_pages=4)


def test_recurrent_state_cannot_be_trimmed():
    pool = StatePool(StateSpec(1, (4, 3), (2, 2, 2), mixer="mamba2"), 1, dtype=__import__(
        "torch").float32)
    with pytest.raises(NotImplementedError, match="cannot be trimmed.*snapshot"):
        pool.trim(3)
