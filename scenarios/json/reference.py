"""Reference for json: HF transformers greedy `generate`, one request at a time, on the same
weights (the dummy model written out as an HF checkpoint) and the same chat template, with a
logits processor that masks with the grammar vibekit compiles for the schema (the backend that
`grammar_backend="auto"` picks: llguidance or xgrammar; plain libraries admit some invalid
strings, see vibekit/grammar/workarounds.py and benchmarks/bench_maskbench.py)."""

from __future__ import annotations

import tempfile
from typing import Any


class _GrammarLogitsProcessor:
    """HF logits processor over a vibekit RequestGrammar: accept the last generated token, then
    set every token the grammar forbids to -inf (batch 1)."""

    def __init__(self, grammar: Any, prompt_len: int, vocab_size: int) -> None:
        import torch

        self.grammar = grammar
        self.prompt_len = prompt_len
        self.bitmask = torch.empty(1, -(-vocab_size // 32), dtype=torch.int32)

    def __call__(self, input_ids, scores):
        from vibekit.ops.token_bitmask import apply_token_bitmask

        if input_ids.shape[1] > self.prompt_len:
            self.grammar.advance(int(input_ids[0, -1]))
        self.bitmask.fill_(-1)
        self.grammar.fill_bitmask(self.bitmask, 0, ())
        return apply_token_bitmask(scores, self.bitmask.to(scores.device))


def reference_outputs(requests: list[dict[str, Any]], model: str, dtype: str = "float32",
                      device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vibekit.grammar import GrammarBackend
    from vibekit.grammar.stop_ids import resolve_stop_token_ids
    from vibekit.models.dummy import save_dummy_checkpoint

    if not model.startswith("dummy:"):
        raise ValueError("this reference writes dummy weights out for HF; got " + model)
    with tempfile.TemporaryDirectory() as path:
        save_dummy_checkpoint(model[len("dummy:"):], path, seed=seed)
        tok = AutoTokenizer.from_pretrained(path)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    if device == "mlx":  # the MLX variant (scenarios/json-mlx): HF runs on the host CPU
        device = "cpu"
    hf = hf.to(device)
    eos = hf.config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    stop_ids = resolve_stop_token_ids(tok, [e for e in eos if e is not None])
    grammars = GrammarBackend(tok, hf.config.vocab_size, stop_ids)
    outputs = []
    for req in requests:
        text = tok.apply_chat_template(req["messages"], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids], device=device)
        fmt = req["response_format"]
        grammar = grammars.request_grammar({**fmt, "jump_forward": False})
        with torch.no_grad():
            out = hf.generate(input_ids=x, attention_mask=torch.ones_like(x),
                              max_new_tokens=req["max_tokens"], do_sample=False,
                              logits_processor=[_GrammarLogitsProcessor(
                                  grammar, len(ids), hf.config.vocab_size)],
                              eos_token_id=list(stop_ids),
                              pad_token_id=tok.eos_token_id)
        new = out[0, len(ids):].tolist()
        outputs.append({"token_ids": new, "text": tok.decode(new, skip_special_tokens=True),
                        "schema": fmt["json_schema"]["schema"]})
    return outputs
