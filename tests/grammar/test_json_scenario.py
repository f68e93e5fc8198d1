"""scenarios/json: its requests run on vibekit and pass its own checker against its reference
(HF generate masked by the grammar vibekit compiles); a wrong output fails the checker, and the
grammar knobs are searchable engine options."""

from __future__ import annotations

from pathlib import Path

from vibekit import Engine, SamplingParams
from vibekit_agents.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2] / "scenarios" / "json"


def _module(name: str):
    """Import one of the scenario's files (see Scenario.module)."""
    return load_scenario(ROOT).module(name)


def test_json_scenario_outputs_pass_its_checker():
    source = f"dummy:{ROOT / 'model.json'}"
    requests = _module("workload").make_requests(seed=0, n=3, max_tokens=256)
    assert all(r["response_format"]["json_schema"]["strict"] for r in requests)
    references = _module("reference").reference_outputs(requests, model=source)
    engine = Engine.from_pretrained(source, max_model_len=1024)
    tok = engine.tokenizer
    prompts = [tok(tok.apply_chat_template(r["messages"], add_generation_prompt=True,
                                           tokenize=False), add_special_tokens=False)["input_ids"]
               for r in requests]
    outs = engine.generate(prompts, [SamplingParams(max_tokens=r["max_tokens"], temperature=0.0,
                                                    response_format=r["response_format"])
                                     for r in requests])
    outputs = [{"token_ids": o.token_ids, "text": o.text, "finish_reason": o.finish_reason}
               for o in outs]
    check = _module("checker").check
    verdict = check(outputs, references)
    assert verdict["passed"], verdict
    broken = [dict(o) for o in outputs]
    assert verdict["details"][0]["valid"]
    broken[0]["text"] = broken[0]["text"][:-1]
    verdict = check(broken, references)
    assert not verdict["passed"] and not verdict["details"][0]["valid"]


def test_grammar_knobs_are_searchable_engine_options():
    from vibekit_agents.skills import load_skills

    knobs = {k.name: k for k in load_skills()["grammar-masking-jump-forward"].knobs}
    for name in ("engine.grammar_backend", "engine.grammar_jump_forward",
                 "engine.grammar_overlap", "engine.grammar_whitespace"):
        assert knobs[name].supported, name
        Engine.from_pretrained(f"dummy:{ROOT / 'model.json'}", max_model_len=64,
                               **{name.split(".")[1]: knobs[name].domain[-1]})
