"""unified-image reference: full CFG on vibekit's plain path, every optimisation off (the uncond
branch on every step, as a separate forward, the prompt recomputed in every forward), one request
at a time."""

from __future__ import annotations

from typing import Any

import numpy as np


def reference_outputs(requests: list[dict[str, Any]], model: Any = None,
                      **_: Any) -> list[list[list[float]]]:
    """One float32 image [16, 16] in [0, 1] per request, as nested lists (JSON). `model` is a
    loaded model, or the scenario's source ("zoo:digits-flow"), or None."""
    import vibekit.zoo
    from vibekit.cfg import CFGCachePolicy, FlowCFGSampler

    if model is None or isinstance(model, str):
        name = model[len("zoo:"):] if isinstance(model, str) and model.startswith("zoo:") \
            else "digits-flow"
        model = vibekit.zoo.load(name)
    outputs = []
    for req in requests:
        sampler = FlowCFGSampler(model, num_steps=req["num_inference_steps"],
                                 guidance_scale=req["guidance_scale"],
                                 policy=CFGCachePolicy.full(), batch_cfg=False,
                                 reuse_prompt_kv=False)
        out = sampler.generate([req["prompt"]], seeds=[req["seed"]],
                               negative_prompts=[req["negative_prompt"]])
        outputs.append(np.asarray(out.images[0], dtype=np.float32).tolist())
    return outputs
