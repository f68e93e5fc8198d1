"""Repetition / frequency / presence penalties and logit_bias (logits processors) against HF
transformers' generate, and exact under predicted outputs and batching."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from tests.runtime.conftest import make_checkpoint
from vibekit import Engine, InvalidRequestError, SamplingParams
from vibekit.logits import apply_penalties_ref


class _OpenAIPenalties(LogitsProcessor):
    """OpenAI's frequency / presence penalty over the generated tokens, as an HF processor: the
    definition from OpenAI's API reference, run by HF's own generation loop."""

    def __init__(self, prompt_len: int, frequency: float, presence: float) -> None:
        self.prompt_len, self.frequency, self.presence = prompt_len, frequency, presence

    def __call__(self, input_ids, scores):
        out = input_ids[:, self.prompt_len:]
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, out, torch.ones_like(out, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def _hf_generate(model, prompt, n, **kwargs):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=0, **kwargs)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("pen")
    return path, make_checkpoint("llama", path, seed=3)


def _prompts(n=3, seed=5):
    rng = random.Random(seed)
    return [[rng.randrange(512) for _ in range(rng.randint(3, 20))] for _ in range(n)]


GREEDY = dict(max_tokens=24, temperature=0.0, ignore_eos=True)


def test_repetition_penalty_equals_hf(ckpt):
    path, hf = ckpt
    engine = Engine.from_pretrained(path, page_size=4)
    prompts = _prompts()
    outs = engine.generate(prompts, SamplingParams(repetition_penalty=1.8, **GREEDY))
    plain = engine.generate(prompts, SamplingParams(**GREEDY))
    for prompt, out in zip(prompts, outs):
        assert out.token_ids == _hf_generate(hf, prompt, 24, repetition_penalty=1.8)
    assert any(o.token_ids != p.token_ids for o, p in zip(outs, plain)), \
        "the penalty changed nothing: the test would be weak"


def test_logit_bias_equals_hf_sequence_bias(ckpt):
    path, hf = ckpt
    engine = Engine.from_pretrained(path, page_size=4)
    prompt = _prompts(1)[0]
    plain = engine.generate([prompt], SamplingParams(**GREEDY))[0].token_ids
    bias = {plain[0]: -100.0, 7: 5.0, 300: 2.5}
    out = engine.generate([prompt], SamplingParams(logit_bias=bias, **GREEDY))[0]
    hf_out = _hf_generate(hf, prompt, 24, sequence_bias={(t,): b for t, b in bias.items()})
    assert out.token_ids == hf_out
    assert out.token_ids[0] != plain[0]


def test_frequency_and_presence_penalties_equal_the_openai_definition_in_hf(ckpt):
    path, hf = ckpt
    engine = Engine.from_pretrained(path, page_size=4)
    for prompt in _prompts(2):
        out = engine.generate([prompt], SamplingParams(frequency_penalty=1.5,
                                                       presence_penalty=0.7, **GREEDY))[0]
        proc = LogitsProcessorList([_OpenAIPenalties(len(prompt), 1.5, 0.7)])
        assert out.token_ids == _hf_generate(hf, prompt, 24, logits_processor=proc)


def test_penalties_are_exact_under_predictions_and_batching(ckpt):
    """Verify-block rows count the draft tokens before them, so predictions change nothing."""
    path, _ = ckpt
    params = SamplingParams(repetition_penalty=1.3, frequency_penalty=0.5,
                            presence_penalty=0.5, logit_bias={11: 3.0}, **GREEDY)
    prompts = _prompts(4, seed=9)
    alone = [Engine.from_pretrained(path, page_size=4).generate([p], params)[0].token_ids
             for p in prompts]
    engine = Engine.from_pretrained(path, page_size=4)
    batched = engine.generate(prompts, params)
    assert [o.token_ids for o in batched] == alone
    edited = [a[:10] + [1, 2, 3] + a[10:] for a in alone]
    spec = engine.generate(prompts, params, predictions=edited)
    assert [o.token_ids for o in spec] == alone
    assert sum(o.usage.accepted_prediction_tokens for o in spec) > 0


def test_penalty_reference_matches_its_definition():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    p = SamplingParams(repetition_penalty=2.0, frequency_penalty=1.0, presence_penalty=0.5,
                       logit_bias={2: 1.0})
    out = apply_penalties_ref(logits, prompt_ids=[0], output_ids=[1, 1, 3], params=p)
    # token 0: seen in prompt: 2/2 = 1; token 1: -1*2 = -2, then -2*1 - 0.5; token 2: 0.5 + 1;
    # token 3: 3/2 = 1.5, then -1 - 0.5
    assert out.tolist() == [1.0, -4.5, 1.5, 0.0]


@pytest.mark.parametrize("kwargs", [dict(repetition_penalty=0.0), dict(frequency_penalty=2.5),
                                    dict(presence_penalty="x"), dict(logit_bias={-1: 1.0}),
                                    dict(logit_bias={3: 101.0}), dict(logit_bias=[1, 2])])
def test_bad_penalties_are_rejected(kwargs):
    with pytest.raises(InvalidRequestError):
        SamplingParams(**kwargs)


def test_logit_bias_outside_the_vocabulary_is_rejected(ckpt):
    engine = Engine.from_pretrained(ckpt[0], page_size=4)
    with pytest.raises(InvalidRequestError, match="logit_bias"):
        engine.add_request([1, 2], SamplingParams(logit_bias={512: 1.0}))


class _BanToken:
    """A user's logits processor: forbid one token on every sampling row."""

    def __init__(self, token: int) -> None:
        self.token = token
        self.rows_seen = 0

    def start(self, batch):
        rows = [r for g in batch.groups for r in g.rows]
        if not rows:
            return None
        self.rows_seen += len(rows)
        outer = self

        class _Apply:
            def apply(self, logits):
                logits[rows, outer.token] = float("-inf")
        return _Apply()


def test_a_user_logits_processor_sees_every_sampling_row(ckpt):
    engine = Engine.from_pretrained(ckpt[0], page_size=4)
    prompt = _prompts(1)[0]
    plain = engine.generate([prompt], SamplingParams(**GREEDY))[0].token_ids
    ban = _BanToken(plain[0])
    engine.add_logits_processor(ban)
    out = engine.generate([prompt], SamplingParams(**GREEDY), predictions=[plain])[0].token_ids
    assert plain[0] not in out and ban.rows_seen >= len(out)
