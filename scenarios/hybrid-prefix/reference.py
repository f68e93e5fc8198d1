"""hybrid-prefix reference: HF transformers `generate` (greedy, one request at a time, no
padding) on the same seeded weights as vibekit's dummy model."""

from __future__ import annotations

from typing import Any


def reference_outputs(requests: list[dict[str, Any]], model: str = "dummy:model.json",
                      seed: int = 0, **_: Any) -> list[dict[str, Any]]:
    """One {"token_ids": [...]} per request."""
    import torch

    from vibekit.models.hybrid_dummy import hybrid_dummy_hf_model

    if not model.startswith("dummy:"):
        raise ValueError(f"reference expects a 'dummy:' hybrid model source, got {model!r}")
    hf = hybrid_dummy_hf_model(model[len("dummy:"):], seed)
    # The requests set ignore_eos: EOS is an ordinary token (min_new_tokens would mask it out).
    hf.generation_config.eos_token_id = None
    outputs = []
    with torch.no_grad():
        for req in requests:
            ids = torch.tensor([req["prompt"]])
            n = req["max_tokens"]
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                              max_new_tokens=n, do_sample=False, pad_token_id=0)
            outputs.append({"token_ids": out[0, ids.shape[1]:].tolist()})
    return outputs
