"""Structured output: constrained vs unconstrained tokens/s, jump-forward, vibekit vs HF + xgrammar.

Side by side in one run on one random-weight llama whose folder holds a byte-level BPE tokenizer
trained here (on stdlib source and JSON), so HF and vibekit load the same files:

  1. overhead: tokens/s of constrained decoding (a JSON schema the output cannot finish within
     max_tokens, jump-forward off) against unconstrained, batch 1 and 16; also with the masks
     always filled on the worker thread during the forward (the default decides by fill time)
  2. jump-forward: a schema with many fixed keys, greedy, on vs off (identical tokens)
  3. vibekit (defaults) vs HF `generate` with xgrammar's logits processor, same grammar, greedy
  4. the bandwidth roofline at batch 1 (weights read once per step), measured in the same run
  5. the apply-mask op: every available backend on [rows, vocab] logits (median microseconds)

Ratios are medians over repeats of rates measured back to back (the machine is shared); tok/s
are the best repeat.

    python benchmarks/bench_grammar.py            # BPE 8k, hidden 256, 4 layers (~8M params)
    python benchmarks/bench_grammar.py --quick    # tiny model, seconds (CI)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from xgrammar.contrib.hf import LogitsProcessor

from vibekit import Engine, SamplingParams
from vibekit.grammar import parse_response_format
from vibekit.ops.token_bitmask import apply_token_bitmask

SIZES = {"full": dict(vocab=8192, hidden=256, layers=4, text_mb=1),
         "quick": dict(vocab=1024, hidden=64, layers=2, text_mb=0.3)}
ENUM = {"enum": ["alpha", "beta", "gamma", "delta"]}
NUM = {"type": "integer", "minimum": 0, "maximum": 999}
# Many fixed keys: the keys and punctuation are forced, the values are the model's.
FIXED_KEYS = {"type": "object", "required": [f"field_{i}" for i in range(12)],
              "properties": {f"field_{i}": (ENUM if i % 2 else NUM) for i in range(12)}}
# Output that cannot finish within max_tokens: constrained and plain emit the same count.
RECORDS = {"type": "array", "minItems": 200, "maxItems": 200,
           "items": {"type": "object", "required": ["id", "tag", "ok"],
                     "properties": {"id": NUM, "tag": ENUM, "ok": {"type": "boolean"}}}}


def train_text(megabytes: float) -> list[str]:
    text, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunk = path.read_text(encoding="utf-8", errors="replace")
        text.append(chunk)
        size += len(chunk)
        if size > megabytes * 1e6:
            break
    text += [json.dumps(FIXED_KEYS), json.dumps(RECORDS)] * 50
    return text


def build_checkpoint(path: str, vocab: int, hidden: int, layers: int, text_mb: float) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(train_text(text_mb), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                     pad_token="<|endoftext|>")
    eos = hf_tok.eos_token_id
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, bos_token_id=None, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # std-1 embeddings: varied greedy output, not one repeated token
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.lm_head.weight.normal_(0.0, 0.125)
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)


def fmt(schema: dict, jump_forward: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema},
            "jump_forward": jump_forward}


def timed(engine: Engine, prompts: list, params: SamplingParams):
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    return outs, time.perf_counter() - t0


def paired(rates: dict[str, list[float]], base: str) -> dict[str, float]:
    """Median over repeats of each rate / the base rate measured next to it in time."""
    return {k: statistics.median(x / b for x, b in zip(v, rates[base]))
            for k, v in rates.items() if k != base}


def overhead(engine: Engine, batch: int, max_tokens: int, repeats: int) -> dict:
    prompts = [f"Record set {i}:" for i in range(batch)]
    plain = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    constrained = SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                 response_format=fmt(RECORDS, jump_forward=False))
    masker = engine.grammar_masker
    rates: dict[str, list[float]] = {"plain": [], "constrained": [], "thread_masks": []}
    timed(engine, prompts, constrained)  # warm-up: compile, tokenizer vocabulary
    for _ in range(repeats):  # interleaved: the machine is shared and noisy
        for name, params in (("plain", plain), ("constrained", constrained),
                             ("thread_masks", constrained)):
            masker.overlap = True if name == "thread_masks" else None
            outs, dt = timed(engine, prompts, params)
            assert all(len(o.token_ids) == max_tokens for o in outs)
            rates[name].append(batch * max_tokens / dt)
            if name == "plain":
                distinct = statistics.mean(len(set(o.token_ids)) / max_tokens for o in outs)
    masker.overlap = None
    ratio = paired(rates, "plain")
    return {"batch": batch, **{f"{k}_tok_s": round(max(v), 1) for k, v in rates.items()},
            "overhead": round(1 - ratio["constrained"], 3),
            "overhead_thread_masks": round(1 - ratio["thread_masks"], 3),
            "distinct_token_ratio": round(distinct, 3)}


def jump_forward(engine: Engine, batch: int, repeats: int) -> dict:
    prompts = [f"Fill the form {i}:" for i in range(batch)]
    timed(engine, prompts, SamplingParams(max_tokens=8, response_format=fmt(FIXED_KEYS)))
    rates: dict[str, list[float]] = {"off": [], "on": []}
    steps, ids = {}, {}
    for _ in range(repeats):
        for key in ("off", "on"):
            params = SamplingParams(max_tokens=400, temperature=0.0,
                                    response_format=fmt(FIXED_KEYS, jump_forward=key == "on"))
            before = engine.num_steps
            outs, dt = timed(engine, prompts, params)
            assert all(o.finish_reason == "stop" for o in outs)
            rates[key].append(sum(len(o.token_ids) for o in outs) / dt)
            steps[key], ids[key] = engine.num_steps - before, [o.token_ids for o in outs]
    assert ids["on"] == ids["off"], "jump-forward changed the output"
    return {"batch": batch, "off_tok_s": round(max(rates["off"]), 1),
            "on_tok_s": round(max(rates["on"]), 1),
            "speedup": round(paired(rates, "off")["on"], 2), "steps_off": steps["off"],
            "steps_on": steps["on"], "tokens_per_request": len(ids["on"][0])}


@torch.inference_mode()
def versus_hf(engine: Engine, model, tokenizer, batch: int, repeats: int) -> dict:
    base = tokenizer("Fill the form")["input_ids"]
    prompts = [base + [100 + i] for i in range(batch)]  # equal lengths: HF needs no padding
    spec = parse_response_format(fmt(FIXED_KEYS))
    compiled = engine.grammars.cache.get(spec, engine.grammars.tokenizer).grammar
    params = SamplingParams(max_tokens=400, temperature=0.0, response_format=fmt(FIXED_KEYS))
    ids = torch.tensor(prompts)
    rates: dict[str, list[float]] = {"hf": [], "vibekit": []}
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                   do_sample=False, pad_token_id=tokenizer.eos_token_id)  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        hf = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                            max_new_tokens=400, do_sample=False,
                            logits_processor=[LogitsProcessor(compiled)],
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.eos_token_id)
        dt_hf = time.perf_counter() - t0
        outs, dt_vk = timed(engine, prompts, params)
        tokens = sum(len(o.token_ids) for o in outs)
        rates["hf"].append(tokens / dt_hf)
        rates["vibekit"].append(tokens / dt_vk)
    eos = tokenizer.eos_token_id
    same = all(o.token_ids == [t for t in row if t != eos] + [eos]
               for o, row in zip(outs, hf[:, ids.shape[1]:].tolist()))
    return {"batch": batch, "hf_xgrammar_tok_s": round(max(rates["hf"]), 1),
            "vibekit_tok_s": round(max(rates["vibekit"]), 1),
            "ratio": round(paired(rates, "hf")["vibekit"], 2), "same_token_ids": same}


def roofline(engine: Engine, model, plain_tok_s: float) -> dict:
    x = torch.ones((256 << 20) // 4)
    best = min(_time(x.sum) for _ in range(5))
    bandwidth = x.numel() * 4 / best
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    limit = bandwidth / weight_bytes
    return {"bandwidth_gb_s": round(bandwidth / 1e9, 1), "weight_mb": round(weight_bytes / 1e6, 1),
            "limit_tok_s_batch1": round(limit), "fraction_of_limit": round(plain_tok_s / limit, 3)}


def mask_backends(vocabs: list[int], rows: list[int]) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backends = ["ref", "torch", "xgrammar"] + (["triton"] if device == "cuda" else [])
    out = []
    for vocab in vocabs:
        for n in rows:
            g = torch.Generator().manual_seed(0)
            logits = torch.randn(n, vocab, generator=g).to(device)
            bitmask = torch.randint(-2**31, 2**31 - 1, (n, -(-vocab // 32)), generator=g,
                                    dtype=torch.int32).to(device)
            row = {"rows": n, "vocab": vocab}
            for backend in backends:
                times = []
                for _ in range(21):
                    x = logits.clone()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    apply_token_bitmask(x, bitmask, backend=backend)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                row[f"{backend}_us"] = round(statistics.median(times[1:]) * 1e6, 1)
            out.append(row)
    return out


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny model, few tokens (CI)")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--grammar-backend", default="xgrammar",
                    choices=["xgrammar", "llguidance", "auto"],
                    help="vibekit's grammar backend (the HF baseline is xgrammar's processor, "
                         "so 'same token ids' needs xgrammar)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: steadier on shared machines)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = SIZES["quick" if args.quick else "full"]
    max_tokens, repeats = (24, 1) if args.quick else (args.max_tokens, args.repeats)
    batches = [1, 4] if args.quick else [int(b) for b in args.batches.split(",")]
    print(f"settings: {size} max_tokens={max_tokens} repeats={repeats} batches={batches} "
          f"threads={torch.get_num_threads()} xgrammar {importlib.metadata.version('xgrammar')} "
          f"grammar_backend={args.grammar_backend}")
    with tempfile.TemporaryDirectory() as path:
        build_checkpoint(path, **size)
        model = transformers.LlamaForCausalLM.from_pretrained(path).eval()
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
        engine = Engine.from_pretrained(path, max_model_len=1024, max_num_seqs=max(batches),
                                        grammar_backend=args.grammar_backend)
        results: dict = {"settings": {**size, "max_tokens": max_tokens}}
        results["overhead"] = [overhead(engine, b, max_tokens, repeats) for b in batches]
        for r in results["overhead"]:
            print(f"overhead   batch {r['batch']:>2}: plain {r['plain_tok_s']} tok/s, constrained "
                  f"{r['constrained_tok_s']} ({r['overhead']:+.1%} overhead; always filling on the "
                  f"worker thread {r['overhead_thread_masks']:+.1%}), distinct-token ratio "
                  f"{r['distinct_token_ratio']}")
        results["jump_forward"] = [jump_forward(engine, b, repeats) for b in batches]
        for r in results["jump_forward"]:
            print(f"jump-fwd   batch {r['batch']:>2}: off {r['off_tok_s']} tok/s, on "
                  f"{r['on_tok_s']} tok/s ({r['speedup']}x; steps {r['steps_off']} -> "
                  f"{r['steps_on']}, {r['tokens_per_request']} tokens/request)")
        results["vs_hf"] = [versus_hf(engine, model, tokenizer, b, repeats) for b in batches]
        for r in results["vs_hf"]:
            print(f"vs HF      batch {r['batch']:>2}: HF generate + xgrammar "
                  f"{r['hf_xgrammar_tok_s']} tok/s, vibekit {r['vibekit_tok_s']} tok/s "
                  f"({r['ratio']}x), same token ids: {r['same_token_ids']}")
        results["roofline"] = roofline(engine, model, results["overhead"][0]["plain_tok_s"])
        r = results["roofline"]
        print(f"roofline   {r['bandwidth_gb_s']} GB/s / {r['weight_mb']} MB weights = "
              f"{r['limit_tok_s_batch1']} tok/s at batch 1; plain decode reaches "
              f"{r['fraction_of_limit']:.1%}")
        vocabs = [size["vocab"]] + ([] if args.quick else [32000, 128256])
        results["mask_backends"] = mask_backends(vocabs, [1, max(batches)])
        for r in results["mask_backends"]:
            timings = ", ".join(f"{k[:-3]} {v}" for k, v in r.items() if k.endswith("_us"))
            print(f"apply mask [{r['rows']:>2}, {r['vocab']:>6}] us: {timings}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
