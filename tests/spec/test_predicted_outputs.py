"""Predicted outputs never change the tokens, only the number of steps."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vibekit import Engine, InvalidRequestError, SamplingParams
from vibekit.ops.sampling import sampling_probs
from vibekit.spec import accept_sampling

PROMPT = [11, 22, 33, 44, 55]


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained("dummy:tiny-llama", page_size=4, num_pages=256,
                                  max_model_len=256, num_draft_tokens=8)


@pytest.fixture(scope="module")
def reference(engine):
    params = SamplingParams(max_tokens=80, temperature=0.0, ignore_eos=True)
    return engine.generate([PROMPT], params)[0].token_ids


def _edit(ref: list[int], ops: list[tuple[str, int, int]]) -> list[int]:
    pred = list(ref)
    for kind, where, token in ops:
        i = where % (len(pred) + 1)
        if kind == "replace" and i < len(pred):
            pred[i] = token
        elif kind == "insert":
            pred.insert(i, token)
        elif kind == "delete" and i < len(pred):
            del pred[i]
    return pred


edits = st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete"]),
                           st.integers(0, 200), st.integers(0, 511)), max_size=6)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=edits, cut=st.integers(0, 120), max_tokens=st.integers(1, 80))
def test_any_prediction_gives_the_plain_greedy_tokens(engine, reference, ops, cut, max_tokens):
    pred = _edit(reference, ops)[:cut]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    out = engine.generate([PROMPT], params, predictions=[pred])[0]
    assert out.token_ids == reference[:max_tokens]
    assert out.usage.accepted_prediction_tokens <= max_tokens


@pytest.mark.parametrize("case", ["empty", "exact", "start", "middle", "end", "longer",
                                  "garbage"])
def test_named_prediction_cases(engine, reference, case):
    ref = reference
    pred = {
        "empty": [],
        "exact": ref,
        "start": [1, 2, 3] + ref[3:],
        "middle": ref[:30] + [9, 9] + ref[40:],
        "end": ref[:70] + [5] * 10,
        "longer": ref + ref,
        "garbage": [7] * 80,
    }[case]
    params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
    steps = engine.num_steps
    out = engine.generate([PROMPT], params, predictions=[pred])[0]
    assert out.token_ids == ref[:60]
    if case == "exact":
        # Each verify block's last token is the model's own (the bonus), not a draft token.
        assert out.usage.rejected_prediction_tokens == 0
        assert out.usage.accepted_prediction_tokens >= 50
        assert engine.num_steps - steps <= 8, "an exact prediction should take few verify steps"
    if case == "middle":  # re-anchoring keeps most of the tail after the edit
        assert out.usage.accepted_prediction_tokens >= 38  # 13 of 60 must be decoded plainly


def test_stop_token_inside_an_accepted_block(engine, reference):
    stop = reference[25]
    first = reference.index(stop)
    params = SamplingParams(max_tokens=60, temperature=0.0, stop_token_ids=[stop])
    out = engine.generate([PROMPT], params, predictions=[reference])[0]
    assert out.token_ids == reference[:first + 1] and out.finish_reason == "stop"


def test_text_prediction_that_tokenizes_differently_alone(engine):
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    plain = engine.generate(["def f(x):"], params)[0]
    out = engine.generate(["def f(x):"], params, predictions=[" " + plain.text + "\n"])[0]
    assert out.token_ids == plain.token_ids


def test_mixed_batch_with_and_without_predictions(engine, reference):
    rng = random.Random(0)
    prompts = [PROMPT] + [[rng.randrange(500) for _ in range(rng.randint(2, 30))]
                          for _ in range(5)]
    params = SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)
    plain = [o.token_ids for o in engine.generate(prompts, params)]
    preds = [reference, None, plain[2], plain[3][:10] + [1] + plain[3][11:], None, []]
    outs = engine.generate(prompts, params, predictions=preds)
    assert [o.token_ids for o in outs] == plain


def test_thousands_of_rejected_drafts_leak_no_pages(engine):
    rng = random.Random(1)
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    prompts = [[rng.randrange(500) for _ in range(rng.randint(1, 20))] for _ in range(64)]
    plain = [o.token_ids for o in engine.generate(prompts, params)]
    # Every fifth token wrong: drafts keep re-anchoring and keep being cut short.
    preds = [[rng.randrange(500) if i % 5 == 4 else t for i, t in enumerate(ids)]
             for ids in plain]
    outs = engine.generate(prompts, params, predictions=preds)
    assert [o.token_ids for o in outs] == plain
    assert sum(o.usage.rejected_prediction_tokens for o in outs) >= 1000
    assert engine.cache.manager.pool.num_used_pages == 0


def test_bad_predictions_are_rejected(engine):
    with pytest.raises(InvalidRequestError, match="prediction must be"):
        engine.add_request(PROMPT, SamplingParams(), prediction={"type": "content"})
    with pytest.raises(InvalidRequestError, match="room"):
        engine.add_request(PROMPT, SamplingParams(), prediction=[1] * 300)
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        engine.add_request(PROMPT, SamplingParams(), prediction=[10**6])


def test_rejection_sampling_matches_the_model_distribution():
    """Emitted tokens from a fixed draft are distributed exactly as plain sampling from p."""
    torch.manual_seed(0)
    vocab, n = 6, 40000
    logits = torch.randn(3, vocab) * 1.5
    draft = [int(logits[0].argmax()), 2]
    gen = torch.Generator().manual_seed(0)
    first = torch.zeros(vocab)
    second = torch.zeros(vocab)
    for _ in range(n):
        out = accept_sampling(draft, logits, temperature=0.9, top_k=0, top_p=1.0, generator=gen)
        first[out[0]] += 1
        if out[0] == draft[0]:
            second[out[1]] += 1
    temp = torch.full((3,), 0.9)
    p = sampling_probs(logits, temp, torch.zeros(3, dtype=torch.long), torch.ones(3))
    assert (first / n - p[0]).abs().max() < 0.01
    assert (second / second.sum() - p[1]).abs().max() < 0.015


def test_sampling_with_a_prediction_matches_plain_sampling_in_the_engine():
    engine = Engine.from_pretrained("dummy:tiny-llama", page_size=4, max_num_seqs=256)
    params = [SamplingParams(max_tokens=2, temperature=1.0, top_k=4, seed=s, ignore_eos=True)
              for s in range(1500)]
    prompt = [5, 6, 7]
    plain = engine.generate([prompt] * len(params), params)
    mode = max({tuple(o.token_ids) for o in plain}, key=[tuple(o.token_ids) for o in plain].count)
    spec = engine.generate([prompt] * len(params), params,
                           predictions=[list(mode)] * len(params))
    assert sum(o.usage.accepted_prediction_tokens for o in spec) > 0
    for pos in range(2):
        a = torch.bincount(torch.tensor([o.token_ids[pos] for o in plain]), minlength=512)
        b = torch.bincount(torch.tensor([o.token_ids[pos] for o in spec]), minlength=512)
        tv = 0.5 * (a / a.sum() - b / b.sum()).abs().sum()
        assert tv < 0.06, f"position {pos}: total variation {tv:.3f}"


def test_engine_with_predictions_off_ignores_them(reference):
    engine = Engine.from_pretrained("dummy:tiny-llama", page_size=4, num_pages=256,
                                    max_model_len=256, enable_predictions=False)
    params = SamplingParams(max_tokens=80, temperature=0.0, ignore_eos=True)
    out = engine.generate([PROMPT], params, predictions=[reference])[0]
    assert out.token_ids == reference
    assert out.usage.accepted_prediction_tokens == 0 == out.usage.rejected_prediction_tokens
    assert engine.num_steps >= 80  # one token per decode step: no verify blocks
