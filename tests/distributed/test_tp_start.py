"""Tensor parallelism, each test with its own TP engine (one per process at a time, so not
beside test_tp.py's module engine): a qwen3 checkpoint with replicated KV heads and a padded
vocabulary, and a worker that cannot start."""

from __future__ import annotations

import gc

import pytest
import torch

from vibekit import Engine
from vibekit.config import ModelConfig
from vibekit.distributed.tp import TPModel
from vibekit.models import load_model
from vibekit.models.dummy import save_dummy_checkpoint

from .test_tp import GREEDY, OPTS, PROMPTS, run_pair


def test_tp2_qwen3_checkpoint_with_replicated_kv_heads_and_padded_vocab(tmp_path):
    """qwen3 (q/k norm, tied embeddings) with 1 KV head over 2 ranks (replicated) and an odd
    vocabulary (lm_head rows padded to a multiple of the ranks), from a save_pretrained folder."""
    config = ModelConfig(model_type="qwen3", vocab_size=509, hidden_size=64,
                         intermediate_size=96, num_layers=2, num_qo_heads=4, num_kv_heads=1,
                         head_dim=16, tie_word_embeddings=True, qk_norm=True,
                         eos_token_ids=(256,))
    path = save_dummy_checkpoint(config, tmp_path / "qwen3")
    tp1 = Engine.from_pretrained(path, **OPTS)
    tp2 = Engine.from_pretrained(path, tensor_parallel_size=2, **OPTS)
    procs = list(tp2.model._workers.procs)
    try:
        assert tp2.cache.spec.num_kv_heads == 1
        (o1, o2), (c1, c2) = run_pair(tp1, tp2, PROMPTS[:3], GREEDY)
        assert [o.token_ids for o in o2] == [o.token_ids for o in o1]
        for a, b in zip(c1.steps, c2.steps):
            assert b.shape[-1] == 509
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    except BaseException:
        tp2.close()
        raise
    # No close(): dropping the engine stops its workers and frees the process group.
    del tp2
    gc.collect()
    for p in procs:
        p.join(15)
        assert not p.is_alive()
    assert not torch.distributed.is_initialized()


def test_a_worker_that_cannot_start_raises_with_its_error():
    model, config, _ = load_model("dummy:tiny-llama", torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="(?s)rank 1 failed to start.*unknown dummy model"):
        TPModel.start(model, config, 2, source="dummy:no-such-model", dtype=torch.float32,
                      device="cpu", seed=0, num_threads=1, timeout_s=60)
    # The failed start left no process group behind: a new TP engine can start.
    assert not torch.distributed.is_initialized()


def test_a_worker_that_dies_makes_the_next_step_raise_not_hang():
    engine = Engine.from_pretrained("dummy:tiny-llama", tensor_parallel_size=2, num_threads=1)
    try:
        assert len(engine.generate(["hi"], GREEDY)[0].token_ids) == GREEDY.max_tokens
        proc = engine.model._workers.procs[0]
        proc.kill()
        proc.join(10)
        with pytest.raises(RuntimeError, match="rank 1 .* is gone"):
            engine.generate(["hello"], GREEDY)
    finally:
        engine.close()
    assert not torch.distributed.is_initialized()
