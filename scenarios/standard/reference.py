"""Reference for standard: HF transformers greedy `generate`, one request at a time, on the same
weights (the dummy model written out as an HF checkpoint) and the same chat template."""

from __future__ import annotations

import tempfile
from typing import Any


def reference_outputs(requests: list[dict[str, Any]], model: str, dtype: str = "float32",
                      device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vibekit.models.dummy import save_dummy_checkpoint

    if not model.startswith("dummy:"):
        raise ValueError("this reference writes dummy weights out for HF; got " + model)
    with tempfile.TemporaryDirectory() as path:
        save_dummy_checkpoint(model[len("dummy:"):], path, seed=seed)
        tok = AutoTokenizer.from_pretrained(path)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    outputs = []
    for req in requests:
        text = tok.apply_chat_template(req["messages"], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids], device=device)
        n = req["max_tokens"]
        extra = {"min_new_tokens": n} if req.get("ignore_eos") else {}
        with torch.no_grad():
            out = hf.to(device).generate(input_ids=x, attention_mask=torch.ones_like(x),
                                         max_new_tokens=n, do_sample=False,
                                         pad_token_id=tok.eos_token_id, **extra)
        new = out[0, len(ids):].tolist()
        outputs.append({"token_ids": new, "text": tok.decode(new)})
    return outputs
