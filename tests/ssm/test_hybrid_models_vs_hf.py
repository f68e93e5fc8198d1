"""Bamba (Mamba2 hybrid) and Qwen3.5 (gated-DeltaNet hybrid) on vibekit ops equal HF
transformers: logits over ragged / chunked prefills and decodes, and greedy engine outputs."""

from __future__ import annotations

import random

import pytest
import torch

from tests.runtime.conftest import hf_greedy
from tests.ssm.hybrid_reference import HybridBatches, hybrid_logits
from vibekit import Engine, SamplingParams
from vibekit.models import load_model
from vibekit.models.hybrid_config import HybridConfig

PROMPTS = {0: list(range(5, 25)), 1: [7, 8, 9, 100, 200, 3, 4], 2: [42]}


def _hf_logits(hf, tokens):
    with torch.no_grad():
        return hf(torch.tensor([tokens])).logits[0]


@pytest.mark.parametrize("chunks", [1, 3])
def test_prefill_logits_equal_hf(hybrid_ckpt, chunks):
    _, path, hf = hybrid_ckpt
    model, config, _ = load_model(path, torch.float32, "cpu")
    assert isinstance(config, HybridConfig)
    got = hybrid_logits(model, PROMPTS, chunks=chunks)
    for seq_id, tokens in PROMPTS.items():
        torch.testing.assert_close(got[seq_id], _hf_logits(hf, tokens), atol=1e-3, rtol=1e-3)


def test_decode_logits_equal_hf(hybrid_ckpt):
    _, path, hf = hybrid_ckpt
    model, _, _ = load_model(path, torch.float32, "cpu")
    kv = HybridBatches(model, torch.float32, num_pages=64, page_size=4)
    seqs = {s: list(p) for s, p in PROMPTS.items()}
    with torch.inference_mode():
        model(*_args(kv.batch(seqs, sample="last")))
        for step in range(6):  # batched single-token decodes
            new = {s: [(17 * step + 5 * s) % 300] for s in seqs}
            logits = model(*_args(kv.batch(new, sample="last")))
            for row, (s, tok) in enumerate(new.items()):
                seqs[s] += tok
                torch.testing.assert_close(logits[row], _hf_logits(hf, seqs[s])[-1],
                                           atol=1e-3, rtol=1e-3)


def _args(batch):
    return batch.input_ids, batch


def test_greedy_engine_equals_hf_generate(hybrid_ckpt):
    _, path, hf = hybrid_ckpt
    rng = random.Random(1)
    prompts = [[rng.randrange(300) for _ in range(rng.randint(3, 30))] for _ in range(3)]
    engine = Engine.from_pretrained(path, page_size=4, max_model_len=256)
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    outs = engine.generate(prompts, params)
    for prompt, out in zip(prompts, outs):
        assert out.token_ids == hf_greedy(hf, prompt, 16)
    assert len({t for o in outs for t in o.token_ids}) > 8  # non-degenerate outputs


def test_checkpoint_with_wrong_shapes_is_refused(hybrid_ckpt, tmp_path):
    import json
    import shutil

    _, path, _ = hybrid_ckpt
    shutil.copytree(path, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        load_model(tmp_path / "ckpt", torch.float32, "cpu")
