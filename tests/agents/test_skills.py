"""Skills: every technique has an Agent Skills folder and a knob sidecar; unsupported knobs are
marked and explained, supported ones map onto plan knobs the engine accepts."""

from __future__ import annotations

import dataclasses

import pytest

from vibekit import config
from vibekit_agents.plan import PLAN_SECTIONS
from vibekit_agents.skills import load_skills

REQUIRED = ["paged-kv-prefix-caching", "predicted-outputs", "hybrid-prefix-caching",
            "grammar-masking-jump-forward", "cfg-cache", "batching-chunked-prefill",
            "cuda-graphs", "torch-compile", "dtype-quantization", "cpu-threads"]
ENGINE_FIELDS = {f.name for cls in (config.CacheConfig, config.SchedulerConfig,
                                    config.SpecConfig, config.EngineConfig)
                 for f in dataclasses.fields(cls)}


@pytest.fixture(scope="module")
def skills():
    return load_skills()


def test_every_technique_has_a_skill(skills):
    assert set(REQUIRED) <= set(skills)


@pytest.mark.parametrize("name", REQUIRED)
def test_skill_follows_the_agent_skills_format(skills, name):
    skill = skills[name]
    text = skill.text()
    assert text.startswith(f"---\nname: {name}\ndescription: ")
    assert len(skill.description) > 40
    for heading in ("## When it applies", "## How to compose it with vibekit", "## Knobs",
                    "## Pitfalls", "## How to verify"):
        assert heading in text, f"{name}: missing {heading}"
    assert skill.knobs, f"{name}: no knobs.toml sidecar"


def test_supported_knobs_are_plan_knobs_the_engine_knows(skills):
    for skill in skills.values():
        for knob in skill.knobs:
            assert knob.domain, knob.name
            if not knob.supported:
                assert knob.note, f"{knob.name}: unsupported knobs must say what is missing"
                continue
            section, _, key = knob.name.partition(".")
            assert section in PLAN_SECTIONS, knob.name
            if section == "engine":
                assert key in ENGINE_FIELDS, f"{knob.name} is not an engine option"
            elif PLAN_SECTIONS[section] is not None:
                assert key in PLAN_SECTIONS[section], knob.name


def test_applicability_follows_the_facts(skills):
    graphs = next(k for k in skills["cuda-graphs"].knobs if k.name == "engine.use_cuda_graphs")
    assert graphs.applies({"device.cuda": True}) and not graphs.applies({"device.cpu": True})
    threads = skills["cpu-threads"].knobs[0]
    assert threads.values({"cpu.count": 2}) == [1, 2]
