"""The MLX model and CFG cache match the torch path: velocities within 1e-5 and images within
1e-4 (float32 on both sides; the gap is rounding, as the torch batched-vs-single gap is)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vibekit.cfg import CFGCachePolicy, FlowCFGSampler, flow_noise

mx = pytest.importorskip("mlx.core")

from vibekit.cfg.mlx import MLXFlowCFGSampler, frequency_reweight_mlx  # noqa: E402
from vibekit.models.unified.mlx import MLXUnifiedFlowModel  # noqa: E402

PROMPTS = ["a handwritten 7", "the digit three", "", "a picture of the number nine"]
SEEDS = [5, 6, 7, 8]
IMAGE_ATOL = 1e-4
VELOCITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def mlx_tiny(tiny_model):
    return MLXUnifiedFlowModel(tiny_model.config, tiny_model.state_dict())


def test_mlx_velocity_matches_torch(tiny_model, mlx_tiny):
    ids, mask = tiny_model.tokenizer.batch(PROMPTS)
    x = flow_noise(SEEDS, (16, 16))
    t = torch.tensor([0.0, 0.25, 0.5, 0.95])
    with torch.no_grad():
        expected = tiny_model.velocity(x, t, tiny_model.encode_prompt(ids, mask)).numpy()
        expected_plain = tiny_model(ids, mask, x, t).numpy()
    xm, tm = mx.array(x.numpy()), mx.array(t.numpy())
    got = np.array(mlx_tiny.velocity(xm, tm, mlx_tiny.encode_prompt(ids.numpy(), mask.numpy())))
    got_plain = np.array(mlx_tiny(ids.numpy(), mask.numpy(), xm, tm))
    np.testing.assert_allclose(got, expected, atol=VELOCITY_ATOL, rtol=0)
    np.testing.assert_allclose(got_plain, expected_plain, atol=VELOCITY_ATOL, rtol=0)


POLICIES = {
    "full": CFGCachePolicy.full(),
    "every": CFGCachePolicy.every(3, warmup_steps=2, extrapolate=True),
    "fastercache": CFGCachePolicy.fastercache(interval=2, alpha_low=1.2, alpha_high=1.3),
    "gate-drop": CFGCachePolicy.gate(gate_step=5),
    "gate-cos": CFGCachePolicy.gate(gate_cos=0.2, after_gate="reuse"),
}


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("batch_cfg, reuse_prompt_kv", [(True, True), (False, False)])
def test_mlx_sampler_matches_torch(tiny_model, mlx_tiny, name, batch_cfg, reuse_prompt_kv):
    kwargs = dict(num_steps=8, guidance_scale=3.0, policy=POLICIES[name], batch_cfg=batch_cfg,
                  reuse_prompt_kv=reuse_prompt_kv)
    ref = FlowCFGSampler(tiny_model, **kwargs).generate(PROMPTS, SEEDS)
    got = MLXFlowCFGSampler(mlx_tiny, **kwargs).generate(PROMPTS, SEEDS)
    assert got.num_uncond_rows == ref.num_uncond_rows
    assert got.num_forwards == ref.num_forwards
    np.testing.assert_allclose(got.images, ref.images.numpy(), atol=IMAGE_ATOL, rtol=0)


def test_mlx_frequency_reweight_matches_torch():
    from vibekit.cfg import frequency_reweight_ref

    x = torch.randn(2, 1, 16, 16)
    got = np.array(frequency_reweight_mlx(mx.array(x.numpy()), 1.3, 0.6, 0.2))
    np.testing.assert_allclose(got, frequency_reweight_ref(x, 1.3, 0.6, 0.2).numpy(), atol=1e-5)


def test_mlx_zoo_model_matches_torch(zoo_model):
    import vibekit.zoo

    mlx_model = vibekit.zoo.load("digits-flow", backend="mlx")
    kwargs = dict(num_steps=20, guidance_scale=4.0, policy=CFGCachePolicy.every(4, 2, True))
    ref = FlowCFGSampler(zoo_model, **kwargs).generate(PROMPTS, SEEDS)
    got = MLXFlowCFGSampler(mlx_model, **kwargs).generate(PROMPTS, SEEDS)
    np.testing.assert_allclose(got.images, ref.images.numpy(), atol=IMAGE_ATOL, rtol=0)
