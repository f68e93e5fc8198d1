"""FlowCFGSampler: text-to-image with a unified flow model under classifier-free guidance.

One Euler step from t = step / N to (step + 1) / N per denoising step. Each step runs the cond rows
of every request, plus the uncond rows the `CFGCachePolicy` asks for, in ONE forward
(`batch_cfg=True`) or in two (`batch_cfg=False`, naive CFG). With `reuse_prompt_kv=True` the
prompt K/V of each distinct prompt (cond and negative) is computed once per `generate` call and
read by every step; otherwise every forward recomputes the prompt with the image tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vibekit.cfg.cache import CFGCache
from vibekit.cfg.policy import CFGCachePolicy
from vibekit.models.unified import PromptKV, UnifiedFlowModel

MAX_NUM_STEPS = 1000
MAX_GUIDANCE_SCALE = 20.0


def check_sampling_args(num_steps: int, guidance_scale: float) -> None:
    """Raise ValueError naming the limit when a step count or guidance scale is out of range."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise ValueError(f"num_steps must be an int, got {num_steps!r}")
    if not 1 <= num_steps <= MAX_NUM_STEPS:
        raise ValueError(f"num_steps {num_steps} is out of range; allowed 1..{MAX_NUM_STEPS}")
    if not 0.0 <= guidance_scale <= MAX_GUIDANCE_SCALE:
        raise ValueError(f"guidance_scale {guidance_scale} is out of range; allowed "
                         f"[0, {MAX_GUIDANCE_SCALE}] (1 = no guidance)")


def flow_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """The starting noise [B, *shape] float32 (CPU): row b drawn from a generator seeded with
    seeds[b], so a request's image does not depend on what it is batched with."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


def _seed_list(seeds: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seeds, int):
        return [seeds + i for i in range(n)]
    seeds = list(seeds)
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} prompts")
    return seeds


@dataclass
class ImageBatchOutput:
    """images: [B, H, W] float32 in [0, 1] (a CPU torch tensor; a numpy array from the MLX
    sampler). Counters over the whole call: forwards run, cond rows and uncond rows computed."""

    images: torch.Tensor
    num_steps: int
    num_forwards: int
    num_cond_rows: int
    num_uncond_rows: int


class FlowCFGSampler:
    """Generate images for text prompts with CFG (optionally cached) on a `UnifiedFlowModel`.

    Example::

        model = vibekit.zoo.load("digits-flow")
        sampler = FlowCFGSampler(model, num_steps=20, guidance_scale=4.0,
                                 policy=CFGCachePolicy.every(3, warmup_steps=5))
        out = sampler.generate(["a handwritten 7", "the digit three"], seeds=[0, 1])
        out.images.shape                                   # [2, 16, 16], values in [0, 1]
    """

    def __init__(self, model: UnifiedFlowModel, num_steps: int = 20, guidance_scale: float = 4.0,
                 policy: CFGCachePolicy | None = None, *, batch_cfg: bool = True,
                 reuse_prompt_kv: bool = True) -> None:
        policy = policy or CFGCachePolicy()
        check_sampling_args(num_steps, guidance_scale)
        policy.check(num_steps)
        self.model = model
        self.num_steps = num_steps
        self.guidance_scale = float(guidance_scale)
        self.policy = policy
        self.batch_cfg = batch_cfg
        self.reuse_prompt_kv = reuse_prompt_kv

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], seeds: int | Sequence[int] = 0,
                 negative_prompts: Sequence[str] | None = None) -> ImageBatchOutput:
        """Images for `prompts` (the uncond branch uses `negative_prompts`, default "")."""
        model, cfg = self.model, self.model.config
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts is empty")
        negatives = list(negative_prompts) if negative_prompts is not None else [""] * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        seeds = _seed_list(seeds, len(prompts))
        device = model.patch_in.weight.device
        dtype = model.patch_in.weight.dtype
        cond_ids, cond_mask = (t.to(device) for t in model.tokenizer.batch(prompts))
        neg_ids, neg_mask = (t.to(device) for t in model.tokenizer.batch(negatives))
        cond_kv = neg_kv = None
        if self.reuse_prompt_kv:
            cond_kv = _encode_unique(model, prompts, cond_ids, cond_mask)
            neg_kv = _encode_unique(model, negatives, neg_ids, neg_mask)

        batch = len(prompts)
        x = flow_noise(seeds, (cfg.num_patches, cfg.patch_dim)).to(device=device, dtype=dtype)
        cache = CFGCache(self.policy, self.num_steps, self.guidance_scale, batch,
                         to_grid=model.unpatchify, from_grid=model.patchify)
        num_forwards = 0
        dt = 1.0 / self.num_steps
        for step in range(self.num_steps):
            t = torch.full((batch,), step * dt, device=device, dtype=dtype)
            rows = cache.uncond_rows(step)
            idx = torch.tensor(rows, dtype=torch.int64, device=device)
            uncond = None
            if self.batch_cfg and rows:
                x_all = torch.cat([x, x.index_select(0, idx)])
                t_all = torch.cat([t, t.index_select(0, idx)])
                if self.reuse_prompt_kv:
                    v = model.velocity(x_all, t_all, PromptKV.cat([cond_kv, neg_kv.index(idx)]))
                else:
                    ids = torch.cat([cond_ids, neg_ids.index_select(0, idx)])
                    mask = torch.cat([cond_mask, neg_mask.index_select(0, idx)])
                    v = model(ids, mask, x_all, t_all)
                cond, uncond = v[:batch], v[batch:]
                num_forwards += 1
            else:
                cond = self._forward(x, t, cond_kv, cond_ids, cond_mask)
                num_forwards += 1
                if rows:
                    uncond = self._forward(
                        x.index_select(0, idx), t.index_select(0, idx),
                        neg_kv.index(idx) if neg_kv is not None else None,
                        neg_ids.index_select(0, idx), neg_mask.index_select(0, idx))
                    num_forwards += 1
            x = x + dt * cache.guide(step, cond, uncond, rows)
        images = ((model.unpatchify(x)[:, 0].float() + 1) / 2).clamp(0, 1).cpu()
        return ImageBatchOutput(images, self.num_steps, num_forwards,
                                batch * self.num_steps, cache.num_uncond_rows)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, kv: PromptKV | None,
                 ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if kv is not None:
            return self.model.velocity(x, t, kv)
        return self.model(ids, mask, x, t)


def _encode_unique(model: UnifiedFlowModel, prompts: list[str], ids: torch.Tensor,
                   mask: torch.Tensor) -> PromptKV:
    """Prompt K/V for every row, running each distinct prompt through the model once."""
    first: dict[str, int] = {}
    for row, prompt in enumerate(prompts):
        first.setdefault(prompt, row)
    unique_rows = list(first.values())
    kv = model.encode_prompt(ids[unique_rows], mask[unique_rows])
    if len(unique_rows) == len(prompts):
        return kv
    slot = {prompt: i for i, prompt in enumerate(first)}
    return kv.index([slot[p] for p in prompts])
