"""Reference for code-edit: plain greedy decoding on vibekit's plainest path - no prediction, no
prefix caching, one request at a time, each prompt prefilled in one step."""

from __future__ import annotations

from typing import Any

MAX_MODEL_LEN = 1024  # the scenario's max_model_len


def reference_outputs(requests: list[dict[str, Any]], model: str, dtype: str = "float32",
                      device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    from vibekit import Engine, SamplingParams

    engine = Engine.from_pretrained(
        model, dtype=dtype, device=device, seed=seed, max_model_len=MAX_MODEL_LEN,
        enable_prefix_caching=False, max_num_seqs=1, enable_chunked_prefill=False,
        max_num_batched_tokens=MAX_MODEL_LEN)
    outputs = []
    for req in requests:
        params = SamplingParams(max_tokens=req["max_tokens"], temperature=0.0,
                                ignore_eos=bool(req.get("ignore_eos", False)))
        out = engine.generate([req["prompt"]], params)[0]
        outputs.append({"token_ids": list(out.token_ids), "text": out.text,
                        "finish_reason": out.finish_reason})
    return outputs
