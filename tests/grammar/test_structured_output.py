"""Structured output in the engine: every output validates, greedy ids equal HF generate with
xgrammar's logits processor, and jump-forward, predictions and the mask thread change nothing."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
import xgrammar as xgr
from xgrammar.contrib.hf import LogitsProcessor

from vibekit import SamplingParams
from vibekit.grammar import parse_response_format

from .schemas import SCHEMAS


def schema_format(schema, **options):
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema,
                                                   "strict": True}, **options}


def prompt(name: str) -> str:
    return f"Return the {name.replace('_', ' ')} as JSON: "


def validate(out, schema):
    assert out.finish_reason == "stop", (out.finish_reason, out.text)
    jsonschema.validate(json.loads(out.text), schema)


def test_every_sampled_output_validates_over_the_schema_suite(bpe_engine):
    names = list(SCHEMAS)
    params = [SamplingParams(max_tokens=400, temperature=1.0, seed=i,
                             response_format=schema_format(SCHEMAS[n]))
              for i, n in enumerate(names)]
    outs = bpe_engine.generate([prompt(n) for n in names], params)
    for name, out in zip(names, outs):
        validate(out, SCHEMAS[name])


GREEDY = ["person", "point", "sentiment", "login", "sku", "version", "scores", "matrix",
          "order", "refs", "shape", "payment", "dates", "contact"]


@pytest.fixture(scope="module")
def greedy_reference(bpe_engine):
    """Plain constrained greedy decoding: no jump-forward, masks filled on the main thread."""
    masker = bpe_engine.grammar_masker
    masker.overlap = False
    try:
        params = [SamplingParams(max_tokens=300, temperature=0.0,
                                 response_format=schema_format(SCHEMAS[n], jump_forward=False))
                  for n in GREEDY]
        outs = bpe_engine.generate([prompt(n) for n in GREEDY], params)
    finally:
        masker.overlap = None
    return dict(zip(GREEDY, outs))


def test_greedy_outputs_validate(greedy_reference):
    for name, out in greedy_reference.items():
        validate(out, SCHEMAS[name])


HF_RAW = ["point", "sentiment", "sku", "version", "scores", "matrix", "shape", "dates"]
HF_OURS = ["person", "login", "order", "contact"]  # bounded strings: vibekit's fixed grammar


@pytest.mark.parametrize("name", HF_RAW + HF_OURS)
def test_greedy_ids_equal_hf_generate_with_xgrammar_logits_processor(
        name, bpe_ckpt, bpe_engine, greedy_reference):
    _, model, tokenizer = bpe_ckpt
    schema = SCHEMAS[name]
    if name in HF_RAW:  # xgrammar's own compilation: an independent reference
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=640)
        compiled = xgr.GrammarCompiler(info).compile_json_schema(
            schema, any_whitespace=False, separators=(",", ":"))
    else:  # the same grammar vibekit compiled (plain xgrammar admits invalid strings here)
        spec = parse_response_format(schema_format(schema))
        compiled = bpe_engine.grammars.cache.get(spec, bpe_engine.grammars.tokenizer).grammar
    ids = torch.tensor([tokenizer(prompt(name))["input_ids"]])
    with torch.no_grad():
        hf = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                            max_new_tokens=300, do_sample=False,
                            logits_processor=[LogitsProcessor(compiled)],
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.eos_token_id)
    assert greedy_reference[name].token_ids == hf[0, ids.shape[1]:].tolist()


def test_jump_forward_and_the_mask_thread_change_no_token(bpe_engine, greedy_reference):
    params = [SamplingParams(max_tokens=300, temperature=0.0,
                             response_format=schema_format(SCHEMAS[n])) for n in GREEDY]
    bpe_engine.grammar_masker.overlap = True  # always on the worker thread
    try:
        outs = bpe_engine.generate([prompt(n) for n in GREEDY], params)
    finally:
        bpe_engine.grammar_masker.overlap = None
    for name, out in zip(GREEDY, outs):
        assert out.token_ids == greedy_reference[name].token_ids, name
    # one at a time, jump-forward saves steps (every key of these objects is forced)
    name = "order"
    ref_steps = len(greedy_reference[name].token_ids)
    steps = bpe_engine.num_steps
    out = bpe_engine.generate([prompt(name)], params[GREEDY.index(name)])[0]
    assert out.token_ids == greedy_reference[name].token_ids
    assert bpe_engine.num_steps - steps < 0.8 * ref_steps


def _edit(ids, seed):
    g = torch.Generator().manual_seed(seed)
    out = list(ids)
    for _ in range(3):
        i = int(torch.randint(0, len(out), (1,), generator=g))
        out[i] = int(torch.randint(0, 600, (1,), generator=g))
    return out


@pytest.mark.parametrize("case", ["exact", "edited", "prefix", "garbage", "longer"])
def test_predictions_under_a_grammar_give_the_plain_constrained_tokens(
        case, bpe_engine, greedy_reference):
    names = ["order", "payment", "refs", "scores"]
    preds = []
    for i, n in enumerate(names):
        ref = greedy_reference[n].token_ids
        preds.append({"exact": ref, "edited": _edit(ref, i), "prefix": ref[:len(ref) // 2],
                      "garbage": [7, 8, 9] * 20, "longer": ref[:-1] + ref}[case])
    params = [SamplingParams(max_tokens=300, temperature=0.0,
                             response_format=schema_format(SCHEMAS[n])) for n in names]
    outs = bpe_engine.generate([prompt(n) for n in names], params, predictions=preds)
    for name, out in zip(names, outs):
        assert out.token_ids == greedy_reference[name].token_ids, name
        if case == "exact":
            assert out.usage.accepted_prediction_tokens >= len(out.token_ids) // 2


def test_sampling_with_predictions_stays_valid(bpe_engine, greedy_reference):
    names = ["order", "payment", "refs", "person"]
    params = [SamplingParams(max_tokens=300, temperature=0.7, seed=3 + i,
                             response_format=schema_format(SCHEMAS[n]))
              for i, n in enumerate(names)]
    preds = [greedy_reference[n].token_ids for n in names]
    for out, name in zip(bpe_engine.generate([prompt(n) for n in names], params,
                                             predictions=preds), names):
        validate(out, SCHEMAS[name])


def test_plain_requests_in_a_constrained_batch_are_unchanged(bpe_engine):
    plain = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    alone = bpe_engine.generate(["hello there"], plain)[0].token_ids
    mixed = bpe_engine.generate(
        ["hello there", prompt("order")],
        [plain, SamplingParams(max_tokens=300, temperature=0.0,
                               response_format=schema_format(SCHEMAS["order"]))])
    assert mixed[0].token_ids == alone
    validate(mixed[1], SCHEMAS["order"])


def test_preempted_requests_keep_their_grammar_state(bpe_ckpt, greedy_reference):
    from vibekit import Engine

    path, _, _ = bpe_ckpt
    small = Engine.from_pretrained(path, page_size=8, num_pages=20, max_model_len=300,
                                   max_num_seqs=8, grammar_backend="xgrammar")
    names = ["order", "refs", "payment", "contact", "login", "sentiment"]
    params = [SamplingParams(max_tokens=120, temperature=0.0,
                             response_format=schema_format(SCHEMAS[n])) for n in names]
    outs = small.generate([prompt(n) for n in names], params)
    assert small.scheduler.num_preemptions > 0
    for name, out in zip(names, outs):
        assert out.token_ids == greedy_reference[name].token_ids, name
