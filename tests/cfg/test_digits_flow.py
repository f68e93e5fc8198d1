"""The trained zoo model: loadable by name, its samples recognisable (a logistic regression
trained on the same digits agrees with the requested digit), guidance matters, and the CFG
cache passes the unified-image checker against full CFG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vibekit.zoo
from vibekit.cfg import CFGCachePolicy, FlowCFGSampler
from vibekit.models.unified import UnifiedFlowModel
from vibekit_agents.scenario import load_scenario

pytest.importorskip("sklearn")
pytest.importorskip("skimage")

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "unified-image"


def scenario_module(name: str):
    """Import one of the scenario's files (see Scenario.module)."""
    return load_scenario(SCENARIO).module(name)


def test_zoo_loads_by_name():
    assert "digits-flow" in vibekit.zoo.names()
    model = vibekit.zoo.load("zoo:digits-flow")
    assert isinstance(model, UnifiedFlowModel) and not model.training
    weights = Path(vibekit.zoo.digits_flow.__file__).parent / "model.safetensors"
    assert weights.stat().st_size <= 5 * 2**20


def test_unknown_zoo_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown zoo model .cats.; available: .*digits-flow"):
        vibekit.zoo.load("cats")


@pytest.fixture(scope="module")
def classifier():
    from vibekit.zoo.digits_flow import digit_classifier

    clf, held_out = digit_classifier()
    assert held_out > 0.9
    return clf


def agreement(model, classifier, scale: float, prompt_for) -> float:
    from vibekit.zoo.digits_flow import digit_prompt

    digits = [d for d in range(10) for _ in range(6)]
    prompts = [prompt_for(d, i, digit_prompt) for i, d in enumerate(digits)]
    images = FlowCFGSampler(model, num_steps=20, guidance_scale=scale).generate(
        prompts, seeds=1000).images
    pred = classifier.predict(images.reshape(len(images), -1).numpy())
    return float(np.mean(pred == np.array(digits)))


def test_samples_are_recognisable_and_guidance_matters(zoo_model, classifier):
    wording = lambda d, i, digit_prompt: digit_prompt(d, i)  # noqa: E731
    guided = agreement(zoo_model, classifier, 4.0, wording)
    unguided = agreement(zoo_model, classifier, 1.0, wording)
    unconditional = agreement(zoo_model, classifier, 1.0, lambda d, i, _: "")
    assert guided >= 0.95
    assert guided > unguided
    assert unconditional < 0.3  # the prompt, not luck, picks the digit


def test_cfg_cache_passes_the_scenario_checker(zoo_model):
    requests = scenario_module("workload").make_requests(0, 12, num_steps=50)
    references = scenario_module("reference").reference_outputs(requests, zoo_model)
    sampler = FlowCFGSampler(zoo_model, num_steps=50, guidance_scale=4.0,
                             policy=CFGCachePolicy.every(8, warmup_steps=5, extrapolate=True))
    out = sampler.generate([r["prompt"] for r in requests], [r["seed"] for r in requests])
    assert out.num_uncond_rows <= 0.25 * out.num_cond_rows
    verdict = scenario_module("checker").check(list(out.images.numpy()), references)
    assert verdict["passed"], verdict["details"]
    assert verdict["min_psnr_db"] >= 35.0 and verdict["min_ssim"] >= 0.98


def test_checker_fails_a_visibly_different_image(zoo_model):
    checker = scenario_module("checker")
    ref = [np.zeros((16, 16), np.float32), np.full((16, 16), 0.5, np.float32)]
    assert checker.check([r.copy() for r in ref], ref)["passed"]
    worse = [ref[0], ref[1] + np.float32(0.05)]  # 26 dB
    verdict = checker.check(worse, ref)
    assert not verdict["passed"] and [d["passed"] for d in verdict["details"]] == [True, False]
    assert not checker.check(ref[:1], ref)["passed"]


def test_workload_is_seeded_and_speaks_the_model_vocabulary(zoo_model):
    workload = scenario_module("workload")
    a, b = workload.make_requests(3, 20), workload.make_requests(3, 20)
    assert a == b and len(a) == 20
    assert {r["digit"] for r in a} == set(range(10))
    ids, _ = zoo_model.tokenizer.batch([r["prompt"] for r in a])  # no unknown words
    assert ids.shape[0] == 20
    assert torch.is_tensor(ids)


@pytest.mark.slow
def test_recognisability_at_the_default_step_count(zoo_model, classifier):
    """The numbers the training script reports: 20 samples per digit, 50 steps."""
    from vibekit.zoo.digits_flow import digit_prompt

    digits = [d for d in range(10) for _ in range(20)]
    prompts = [digit_prompt(d, i) for i, d in enumerate(digits)]
    rates = {}
    for scale in (4.0, 1.0):
        images = FlowCFGSampler(zoo_model, num_steps=50, guidance_scale=scale).generate(
            prompts, seeds=0).images
        pred = classifier.predict(images.reshape(len(images), -1).numpy())
        rates[scale] = float(np.mean(pred == np.array(digits)))
    assert rates[4.0] >= 0.98 and rates[1.0] < rates[4.0]
