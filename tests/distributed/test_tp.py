"""Tensor parallelism (vibekit.distributed.tp) over gloo on this machine: TP=2 gives TP=1's
greedy tokens and logits, predicted outputs and JSON-schema output stay exact, bad sizes are
refused at start, a worker that cannot start raises instead of hanging."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from vibekit import Engine, SamplingParams
from vibekit.config import ModelConfig
from vibekit.distributed.tp import TPModel
from vibekit.models.dummy import save_dummy_checkpoint

PROMPTS = ["Hello world", "The quick brown fox jumps over the lazy dog. " * 3, "abc",
           "Hello world, again"]  # the last shares a prefix with the first (a cache hit)
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
OPTS = dict(num_threads=1, page_size=8, max_num_batched_tokens=32)  # chunked prefill too


class CaptureLogits:
    """A logits processor that keeps every step's sampling-row logits."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def start(self, batch):
        return self

    def apply(self, logits: torch.Tensor) -> None:
        self.steps.append(logits.clone())


def run_pair(tp1: Engine, tp2: Engine, prompts, params, predictions=None):
    caps = [CaptureLogits(), CaptureLogits()]
    for engine, cap in zip((tp1, tp2), caps):
        engine.runner.processors.append(cap)
    try:
        outs = [e.generate(prompts, params, predictions) for e in (tp1, tp2)]
    finally:
        for engine, cap in zip((tp1, tp2), caps):
            engine.runner.processors.remove(cap)
    return outs, caps


@pytest.fixture(scope="module")
def engines():
    tp1 = Engine.from_pretrained("dummy:tiny-llama", **OPTS)
    tp2 = Engine.from_pretrained("dummy:tiny-llama", tensor_parallel_size=2, **OPTS)
    yield tp1, tp2
    procs = list(tp2.model._workers.procs)
    tp2.close()
    assert procs and not any(p.is_alive() for p in procs)


def test_tp2_greedy_tokens_and_logits_match_tp1(engines):
    tp1, tp2 = engines
    assert isinstance(tp2.model, TPModel)
    assert tp2.cache.spec.num_kv_heads == 1  # tiny-llama: 2 KV heads over 2 ranks
    (o1, o2), (c1, c2) = run_pair(tp1, tp2, PROMPTS, GREEDY)
    assert [o.token_ids for o in o2] == [o.token_ids for o in o1]
    assert all(len(o.token_ids) == 24 for o in o1)
    assert len(c1.steps) == len(c2.steps) > 1
    for a, b in zip(c1.steps, c2.steps):
        assert a.shape == b.shape == (a.shape[0], 512)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert tp2.stats()["prefix_hit_rate"] > 0  # the shared prefix was reused under TP too


def test_tp2_predicted_outputs_stay_exact(engines):
    tp1, tp2 = engines
    ref = tp1.generate(PROMPTS[:2], GREEDY)
    # The true continuation, and one with a wrong token in the middle (a rejection + rollback).
    preds = [ref[0].token_ids, ref[1].token_ids[:10] + [7] + ref[1].token_ids[11:]]
    (o1, o2), _ = run_pair(tp1, tp2, PROMPTS[:2], GREEDY, preds)
    assert [o.token_ids for o in o2] == [o.token_ids for o in o1] == [r.token_ids for r in ref]
    assert o2[0].usage.accepted_prediction_tokens > 0
    assert o2[1].usage.rejected_prediction_tokens > 0


SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                           "ok": {"type": "boolean"}},
          "required": ["color", "ok"], "additionalProperties": False}


def test_tp2_json_schema_output_matches_tp1_and_validates(engines):
    tp1, tp2 = engines
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMA,
                                                  "strict": True}}
    params = SamplingParams(max_tokens=120, temperature=0.0, response_format=fmt)
    (o1, o2), _ = run_pair(tp1, tp2, ["Answer in JSON: "], params)
    assert o2[0].token_ids == o1[0].token_ids
    assert o2[0].finish_reason == "stop", o2[0].text
    jsonschema.validate(json.loads(o2[0].text), SCHEMA)


@pytest.mark.parametrize("size, match", [
    (3, "does not divide the model's 4 attention"),
    (0, "must be an integer >= 1"),
    (-2, "must be an integer >= 1"),
])
def test_bad_tensor_parallel_size_is_refused_at_start(size, match):
    with pytest.raises(ValueError, match=match):
        Engine.from_pretrained("dummy:tiny-llama", tensor_parallel_size=size)


def test_kv_heads_that_do_not_split_are_refused(tmp_path):
    config = ModelConfig(model_type="llama", vocab_size=300, hidden_size=96,
                         intermediate_size=64, num_layers=1, num_qo_heads=6, num_kv_heads=3,
                         head_dim=16)
    path = save_dummy_checkpoint(config, tmp_path / "c")
    with pytest.raises(ValueError, match="3 KV heads"):
        Engine.from_pretrained(path, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="does not divide the model's 6 attention"):
        Engine.from_pretrained(path, tensor_parallel_size=4)


def test_hybrid_model_is_refused():
    with pytest.raises(ValueError, match="hybrid model.*dense llama-family"):
        Engine.from_pretrained("dummy:tiny-bamba", tensor_parallel_size=2)
