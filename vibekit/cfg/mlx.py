"""MLX versions of the CFG cache and the flow sampler (same policy, same math as the torch path).
Imported lazily: `import vibekit.cfg` never needs mlx.

    model = vibekit.zoo.load("digits-flow", backend="mlx")
    sampler = MLXFlowCFGSampler(model, num_steps=20, guidance_scale=4.0,
                                policy=CFGCachePolicy.every(3, warmup_steps=5))
    out = sampler.generate(["a handwritten 7"], seeds=[0])    # out.images: numpy [1, 16, 16]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np

from vibekit.cfg.image import ImageBatchOutput, _seed_list, check_sampling_args, flow_noise
from vibekit.cfg.policy import CFGCachePolicy
from vibekit.models.unified.mlx import MLXPromptKV, MLXUnifiedFlowModel


def frequency_reweight_mlx(delta: mx.array, w_low: float, w_high: float,
                           radius: float) -> mx.array:
    """`frequency_reweight_ref` on MLX: delta [B, C, H, W] -> [B, C, H, W]."""
    h, w = delta.shape[-2:]
    r = max(1, int(radius * min(h, w)))
    fy = np.fft.fftfreq(h, d=1.0 / h)
    fx = np.fft.fftfreq(w, d=1.0 / w)
    gain = np.where(fy[:, None] ** 2 + fx[None, :] ** 2 <= r * r, w_low, w_high)
    spectrum = mx.fft.fft2(delta) * mx.array(gain.astype(np.float32))
    return mx.real(mx.fft.ifft2(spectrum))


class MLXCFGCache:
    """`CFGCache` on MLX arrays: same policy decisions, same guided output."""

    def __init__(self, policy: CFGCachePolicy, num_steps: int, guidance_scale: float,
                 batch_size: int, to_grid: Callable[[mx.array], mx.array] | None = None,
                 from_grid: Callable[[mx.array], mx.array] | None = None) -> None:
        policy.check(num_steps)
        if policy.reweights and (to_grid is None or from_grid is None):
            raise ValueError("FasterCache reweighting needs to_grid/from_grid")
        self.policy = policy
        self.num_steps = num_steps
        self.scale = float(guidance_scale)
        self.batch_size = batch_size
        self.to_grid, self.from_grid = to_grid, from_grid
        self.delta: mx.array | None = None
        self.prev_delta: mx.array | None = None
        self.last_step: list[int] = [-1] * batch_size
        self.prev_step: list[int | None] = [None] * batch_size
        self.gated = [False] * batch_size
        self.num_uncond_rows = 0

    def uncond_rows(self, step: int) -> list[int]:
        """Rows that must run the unconditional branch at `step`. No side effects."""
        if self.scale == 1.0:
            return []
        return [b for b in range(self.batch_size) if self.policy.runs_uncond(step, self.gated[b])]

    def guide(self, step: int, cond: mx.array, uncond: mx.array | None,
              rows: list[int]) -> mx.array:
        assert rows == self.uncond_rows(step), "rows must be uncond_rows(step)"
        if self.scale == 1.0:
            return cond
        bshape = (self.batch_size,) + (1,) * (cond.ndim - 1)
        fresh_rows = np.zeros(self.batch_size, dtype=bool)
        fresh_rows[rows] = True
        if rows:
            assert uncond is not None and uncond.shape[0] == len(rows)
            # Scatter the fresh deltas of `rows` into a [B, ...] array.
            pos = np.zeros(self.batch_size, dtype=np.int32)
            pos[rows] = np.arange(len(rows))
            fresh = cond - uncond[mx.array(pos)]
            keep = mx.array(fresh_rows).reshape(bshape)
            if self.policy.extrapolate and self.delta is not None:
                prev = self.delta if self.prev_delta is None else self.prev_delta
                self.prev_delta = mx.where(keep, self.delta, prev)
            for b in rows:
                self.prev_step[b] = self.last_step[b] if self.last_step[b] >= 0 else None
                self.last_step[b] = step
            self.delta = fresh if self.delta is None else mx.where(keep, fresh, self.delta)
            self.num_uncond_rows += len(rows)
            if self.policy.gate_cos is not None:
                c = cond[mx.array(rows)].reshape(len(rows), -1)
                u = uncond.reshape(len(rows), -1)
                cos = (c * u).sum(-1) / mx.maximum(
                    mx.sqrt((c * c).sum(-1)) * mx.sqrt((u * u).sum(-1)), 1e-8)
                for b, value in zip(rows, cos.tolist()):
                    if value >= self.policy.gate_cos:
                        self.gated[b] = True
        assert self.delta is not None, "step 0 must run the unconditional branch"
        delta = self.delta
        coeffs = [self.policy.extrapolation(step, self.last_step[b], self.prev_step[b])
                  for b in range(self.batch_size)]
        if any(coeffs):
            c = mx.array(np.array(coeffs, dtype=np.float32)).reshape(bshape)
            delta = delta + c * (delta - self.prev_delta)
        if len(rows) < self.batch_size and self.policy.reweights:
            w_low, w_high = self.policy.delta_weights(step, self.num_steps)
            if (w_low, w_high) != (1.0, 1.0):
                reused = self.from_grid(frequency_reweight_mlx(
                    self.to_grid(delta), w_low, w_high, self.policy.freq_radius))
                delta = mx.where(mx.array(fresh_rows).reshape(bshape), delta, reused)
        guided = cond + (self.scale - 1.0) * delta
        dropped = np.array([b not in rows and self.policy.drops(step, self.gated[b])
                            for b in range(self.batch_size)])
        if dropped.any():
            guided = mx.where(mx.array(dropped).reshape(bshape), cond, guided)
        return guided


class MLXFlowCFGSampler:
    """`FlowCFGSampler` on an `MLXUnifiedFlowModel`: same arguments, same noise (drawn with torch
    from the same seeds), images returned as a numpy array [B, H, W] in [0, 1]."""

    def __init__(self, model: MLXUnifiedFlowModel, num_steps: int = 20,
                 guidance_scale: float = 4.0, policy: CFGCachePolicy | None = None, *,
                 batch_cfg: bool = True, reuse_prompt_kv: bool = True) -> None:
        policy = policy or CFGCachePolicy()
        check_sampling_args(num_steps, guidance_scale)
        policy.check(num_steps)
        self.model = model
        self.num_steps = num_steps
        self.guidance_scale = float(guidance_scale)
        self.policy = policy
        self.batch_cfg = batch_cfg
        self.reuse_prompt_kv = reuse_prompt_kv

    def generate(self, prompts: Sequence[str], seeds: int | Sequence[int] = 0,
                 negative_prompts: Sequence[str] | None = None) -> ImageBatchOutput:
        model, cfg = self.model, self.model.config
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts is empty")
        negatives = list(negative_prompts) if negative_prompts is not None else [""] * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        seeds = _seed_list(seeds, len(prompts))
        cond_ids, cond_mask = (t.numpy() for t in model.tokenizer.batch(prompts))
        neg_ids, neg_mask = (t.numpy() for t in model.tokenizer.batch(negatives))
        cond_kv = neg_kv = None
        if self.reuse_prompt_kv:
            cond_kv = model.encode_prompt(cond_ids, cond_mask)
            neg_kv = model.encode_prompt(neg_ids, neg_mask)
        batch = len(prompts)
        x = mx.array(flow_noise(seeds, (cfg.num_patches, cfg.patch_dim)).numpy())
        cache = MLXCFGCache(self.policy, self.num_steps, self.guidance_scale, batch,
                            to_grid=model.unpatchify, from_grid=model.patchify)
        num_forwards = 0
        dt = 1.0 / self.num_steps
        for step in range(self.num_steps):
            t = mx.full((batch,), step * dt, dtype=mx.float32)
            rows = cache.uncond_rows(step)
            idx = mx.array(rows, dtype=mx.int32) if rows else None
            uncond = None
            if self.batch_cfg and rows:
                x_all = mx.concatenate([x, x[idx]])
                t_all = mx.concatenate([t, t[idx]])
                if self.reuse_prompt_kv:
                    v = model.velocity(x_all, t_all, MLXPromptKV.cat([cond_kv, neg_kv.index(rows)]))
                else:
                    v = model(np.concatenate([cond_ids, neg_ids[rows]]),
                              np.concatenate([cond_mask, neg_mask[rows]]), x_all, t_all)
                cond, uncond = v[:batch], v[batch:]
                num_forwards += 1
            else:
                cond = self._forward(x, t, cond_kv, cond_ids, cond_mask)
                num_forwards += 1
                if rows:
                    uncond = self._forward(x[idx], t[idx],
                                           neg_kv.index(rows) if neg_kv is not None else None,
                                           neg_ids[rows], neg_mask[rows])
                    num_forwards += 1
            x = x + dt * cache.guide(step, cond, uncond, rows)
            mx.eval(x)
        images = mx.clip((model.unpatchify(x)[:, 0] + 1) / 2, 0.0, 1.0)
        return ImageBatchOutput(np.array(images), self.num_steps, num_forwards,
                                batch * self.num_steps, cache.num_uncond_rows)

    def _forward(self, x: mx.array, t: mx.array, kv: MLXPromptKV | None, ids: np.ndarray,
                 mask: np.ndarray) -> mx.array:
        if kv is not None:
            return self.model.velocity(x, t, kv)
        return self.model(ids, mask, x, t)
