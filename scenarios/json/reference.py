"""Reference for json: HF transformers greedy `generate` with xgrammar's HF logits processor, one
request at a time, on the same weights (the dummy model written out as an HF checkpoint) and the
same chat template. The processor masks with the grammar vibekit compiles for the schema (plain
xgrammar admits some invalid strings; see vibekit/grammar/workarounds.py)."""

from __future__ import annotations

import tempfile
from typing import Any


def reference_outputs(requests: list[dict[str, Any]], model: str, dtype: str = "float32",
                      device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from xgrammar.contrib.hf import LogitsProcessor

    from vibekit.grammar import GrammarBackend, parse_response_format
    from vibekit.models.dummy import save_dummy_checkpoint

    if not model.startswith("dummy:"):
        raise ValueError("this reference writes dummy weights out for HF; got " + model)
    with tempfile.TemporaryDirectory() as path:
        save_dummy_checkpoint(model[len("dummy:"):], path, seed=seed)
        tok = AutoTokenizer.from_pretrained(path)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    hf = hf.to(device)
    eos = hf.config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    grammars = GrammarBackend(tok, hf.config.vocab_size, sorted(set(eos) | {tok.eos_token_id}))
    outputs = []
    for req in requests:
        text = tok.apply_chat_template(req["messages"], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids], device=device)
        fmt = req["response_format"]
        compiled = grammars.cache.get(parse_response_format(fmt), grammars.tokenizer).grammar
        with torch.no_grad():
            out = hf.generate(input_ids=x, attention_mask=torch.ones_like(x),
                              max_new_tokens=req["max_tokens"], do_sample=False,
                              logits_processor=[LogitsProcessor(compiled)],
                              eos_token_id=grammars.stop_token_ids,
                              pad_token_id=tok.eos_token_id)
        new = out[0, len(ids):].tolist()
        outputs.append({"token_ids": new, "text": tok.decode(new, skip_special_tokens=True),
                        "schema": fmt["json_schema"]["schema"]})
    return outputs
