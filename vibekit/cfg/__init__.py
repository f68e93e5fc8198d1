"""Classifier-free guidance: cond and uncond in one batched forward, the CFG cache (run the
unconditional branch on some steps only and reuse the cached guidance delta in between:
every-k, FasterCache reweighting, gates as in Adaptive Guidance), prompt K/V reused across
steps, and text CFG for LLMs on the same mechanism (inside the engine: SamplingParams
guidance_scale / negative_prompt / guidance_cache; see vibekit.cfg.guidance).

The MLX versions live in `vibekit.cfg.mlx` (imported lazily; needs `mlx`).
"""

from vibekit.cfg.cache import CFGCache, cfg_combine_ref, frequency_reweight_ref
from vibekit.cfg.guidance import GuidanceProcessor, TextGuidance
from vibekit.cfg.image import (
    MAX_GUIDANCE_SCALE,
    MAX_NUM_STEPS,
    FlowCFGSampler,
    ImageBatchOutput,
    check_sampling_args,
    flow_noise,
)
from vibekit.cfg.policy import CFGCachePolicy

__all__ = [
    "MAX_GUIDANCE_SCALE", "MAX_NUM_STEPS", "CFGCache", "CFGCachePolicy", "FlowCFGSampler",
    "GuidanceProcessor", "ImageBatchOutput", "TextGuidance", "cfg_combine_ref",
    "check_sampling_args", "flow_noise", "frequency_reweight_ref",
]
