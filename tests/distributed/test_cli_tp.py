"""`vibekit serve/generate --tensor-parallel-size N` reach Engine.from_pretrained."""

from __future__ import annotations

import pytest

import vibekit.serve
from vibekit.cli import main


def test_serve_passes_tensor_parallel_size_through(monkeypatch):
    seen = {}
    monkeypatch.setattr(vibekit.serve, "run_server", lambda model, **kw: seen.update(kw))
    assert main(["serve", "dummy:tiny-llama", "--tensor-parallel-size", "2"]) == 0
    assert seen["tensor_parallel_size"] == 2
    seen.clear()
    assert main(["serve", "dummy:tiny-llama"]) == 0
    assert "tensor_parallel_size" not in seen  # the engine's default (1)


def test_generate_refuses_a_size_that_does_not_divide_the_heads():
    with pytest.raises(ValueError, match="tensor_parallel_size=3 does not divide"):
        main(["generate", "dummy:tiny-llama", "--tensor-parallel-size", "3"])
