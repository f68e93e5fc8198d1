"""vibekit on MLX (device="mlx") vs mlx-lm, side by side on the same weights, one request at a time.

The workload is the paper's scenario E in small: edit a JSON config file under a JSON schema
(greedy). Model: zoo:code-edit-tiny (a 4.5M llama trained here to edit code; it copies its input
well and edits rarely, so predictions are mostly accepted). Three comparisons, per request:

  plain        unconstrained, fixed length (ignore EOS): the engines' per-token cost
  json         JSON-schema constrained: vibekit (grammar mask on MLX, jump-forward) vs mlx-lm
               `generate_step` with an xgrammar logits processor (xgrammar's own
               `apply_token_bitmask_mlx`), the same compiled grammar
  json+pred    the same, vibekit also given the current file as the prediction (predicted
               outputs); mlx-lm has no equivalent, so its run is the json one

Both reuse the prompt's KV across repeats: vibekit its automatic prefix cache, mlx-lm its prompt
cache (`make_prompt_cache`, prefilled once per prompt, deep-copied per run outside the timer).
Runs are interleaved (vibekit, mlx-lm, vibekit+pred per request per repeat), ratios are medians
of per-request tok/s ratios. Greedy token ids are compared between the engines.

NOTE: on Linux this is mlx[cpu] (reference BLAS, no Metal): the ratios are not Apple Silicon
ratios, and absolute tok/s say nothing about a Mac.

    python benchmarks/bench_mlx.py                 # 6 files x 5 repeats
    python benchmarks/bench_mlx.py --quantization mlx-q8
    python benchmarks/bench_mlx.py --agreement     # greedy agreement of mlx-q8 / mlx-q4
    python benchmarks/bench_mlx.py --matmul-layout # x @ w.T (HF layout) vs x @ w ([in, out])
    python benchmarks/bench_mlx.py --block-cost    # one forward of 1 / 8 / 64 tokens, both engines
    python benchmarks/bench_mlx.py --quick         # seconds (CI)
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import statistics
import sys
import time

import mlx.core as mx
import mlx.nn as nn

from vibekit import Engine, SamplingParams, zoo
from vibekit.grammar import parse_response_format
from vibekit.models.mlx.loader import QUANT_GROUP_SIZE, QUANTIZATIONS
from vibekit.zoo.code_edit import make_edit_prompt

FILES = [
    {"name": "vibekit", "version": "0.1.0", "port": 8000, "debug": False, "workers": 4,
     "tags": ["serve", "llm"]},
    {"name": "gateway", "version": "2.3.1", "port": 443, "debug": True, "workers": 16,
     "tags": ["edge", "tls", "http2"]},
    {"name": "indexer", "version": "0.9.12", "port": 9200, "debug": False, "workers": 2,
     "tags": ["search"]},
    {"name": "billing", "version": "1.0.0", "port": 5432, "debug": False, "workers": 8,
     "tags": ["db", "payments", "eu"]},
    {"name": "notifier", "version": "3.1.4", "port": 2525, "debug": True, "workers": 1,
     "tags": ["mail", "sms"]},
    {"name": "scheduler", "version": "0.4.0", "port": 7077, "debug": False, "workers": 12,
     "tags": ["cron", "queue"]},
]
INSTRUCTIONS = ["set debug to true", "add the tag `prod`", "bump the version",
                "set workers to 32", "change the port to 8080", "rename the service to `cron`"]
SCHEMA = {"type": "object", "additionalProperties": False,
          "required": ["name", "version", "port", "debug", "workers", "tags"],
          "properties": {"name": {"type": "string", "maxLength": 32},
                         "version": {"type": "string", "maxLength": 16},
                         "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                         "debug": {"type": "boolean"},
                         "workers": {"type": "integer", "minimum": 1, "maximum": 64},
                         "tags": {"type": "array", "maxItems": 8,
                                  "items": {"type": "string", "maxLength": 16}}}}
# "free" whitespace: the model writes the file's indented layout (compact would force it off).
FORMAT = {"type": "json_schema", "json_schema": {"name": "config", "schema": SCHEMA,
                                                 "strict": True}, "whitespace": "free"}


class XGrammarProcessor:
    """An mlx-lm logits processor over an xgrammar matcher, the way a Mac user combines them
    (after xgrammar.contrib.mlxlm, fixed to accept only generated tokens)."""

    def __init__(self, compiled, vocab_size: int) -> None:
        import xgrammar as xgr
        from xgrammar.kernels.apply_token_bitmask_mlx import apply_token_bitmask_mlx

        self.apply = apply_token_bitmask_mlx
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size
        self.num_calls = 0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self.num_calls:  # the first call sees only the prompt
            assert self.matcher.accept_token(int(tokens[-1].item()))
        self.num_calls += 1
        if self.matcher.is_terminated():
            return logits
        self.matcher.fill_next_token_bitmask(self.bitmask)
        return self.apply(mx.array(self.bitmask.numpy()), logits, self.vocab_size)


def mlx_lm_run(model, prompt: list[int], prompt_cache, max_tokens: int, eos: set[int],
               processor=None) -> tuple[list[int], tuple[float, float]]:
    """mlx-lm greedy decoding over a copy of the prompt's cache: (token ids, (wall seconds,
    CPU seconds of this process))."""
    from mlx_lm.generate import generate_step

    cache = copy.deepcopy(prompt_cache)  # outside the timer
    t0, c0 = time.perf_counter(), time.process_time()
    out: list[int] = []
    for token, _ in generate_step(mx.array(prompt[-1:]), model, max_tokens=max_tokens,
                                  prompt_cache=cache,
                                  logits_processors=[processor] if processor else None):
        out.append(int(token))
        if eos and out[-1] in eos:
            break
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def vibekit_run(engine: Engine, prompt: list[int], params: SamplingParams,
                prediction: str | None = None):
    t0, c0 = time.perf_counter(), time.process_time()
    out = engine.generate([prompt], params, predictions=[prediction])[0]
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def agreement(prompts: list[list[int]], max_tokens: int) -> dict:
    """Greedy agreement of mlx-q8 / mlx-q4 with the float model on the workload's prompts
    (plain, ignore EOS): the fraction of each output before the first differing token, and the
    fraction of positions whose argmax agrees when both read the float model's output."""
    import numpy as np

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    ref = Engine.from_pretrained("zoo:code-edit-tiny", device="mlx")
    ref_ids = [o.token_ids for o in ref.generate(prompts, params)]
    teacher = [p + ids for p, ids in zip(prompts, ref_ids)]
    out = {}
    for quant in sorted(QUANTIZATIONS):
        q = Engine.from_pretrained("zoo:code-edit-tiny", device="mlx", quantization=quant)
        ids = [o.token_ids for o in q.generate(prompts, params)]
        prefix = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), len(r)) / len(r)
                  for r, g in zip(ref_ids, ids)]
        top1 = []
        for seq, p in zip(teacher, prompts):  # teacher-forced: argmax at every output position
            lf, lq = (_all_logits(e.model, seq) for e in (ref, q))
            top1.append(float(np.mean(lf[len(p) - 1:-1].argmax(-1) == lq[len(p) - 1:-1]
                                      .argmax(-1))))
        out[quant] = {"identical_outputs": sum(r == g for r, g in zip(ref_ids, ids)),
                      "of": len(prompts),
                      "mean_prefix_agreement": round(statistics.mean(prefix), 3),
                      "teacher_forced_top1": round(statistics.mean(top1), 3)}
    return out


def _all_logits(model, ids: list[int]):
    """Logits [len(ids), V] of one sequence in one forward (its own scratch KV pages)."""
    import numpy as np

    from vibekit.kvcache.mlx import MLXPagedKVCache
    from vibekit.ops.mlx import AttentionPlan

    page_size = 16
    pages = -(-len(ids) // page_size)
    cache = MLXPagedKVCache(model.cache_spec().kv, pages, page_size)
    plan = AttentionPlan.build([len(ids)], [len(ids)], [list(range(pages))], page_size)
    logits = model(mx.array(ids), plan, mx.arange(len(ids)), cache.kv_caches)
    return np.array(logits)


def block_cost(engine: Engine, peer, prompt: list[int], repeats: int) -> dict:
    """CPU ms of one forward of T = 1, 8, 64 new tokens after `prompt` (its KV cached), logits at
    every new position (what a verify block needs), evaluated: vibekit's MLX model over its paged
    cache vs mlx-lm's model over a deep copy of its prompt cache. Medians of interleaved runs."""
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    from vibekit.kvcache.mlx import MLXPagedKVCache
    from vibekit.ops.mlx import AttentionPlan

    model, page_size = engine.model, 16
    pages = list(range(-(-(len(prompt) + 64) // page_size)))
    cache = MLXPagedKVCache(model.cache_spec().kv, len(pages), page_size)
    plan = AttentionPlan.build([len(prompt)], [len(prompt)], [pages], page_size)
    mx.eval(model(mx.array(prompt), plan, mx.arange(len(prompt)), cache.kv_caches),
            *cache.arrays())
    prompt_cache = make_prompt_cache(peer)
    mx.eval(peer(mx.array(prompt)[None], cache=prompt_cache))
    out = {}
    for tokens in (1, 8, 64):
        new = mx.array(np.arange(1, tokens + 1, dtype=np.int32))
        times: dict[str, list[float]] = {"vibekit": [], "mlx_lm": []}
        for _ in range(repeats):
            c0 = time.process_time()
            plan = AttentionPlan.build([tokens], [len(prompt) + tokens], [pages], page_size)
            mx.eval(model(new, plan, mx.arange(tokens), cache.kv_caches), *cache.arrays())
            times["vibekit"].append(time.process_time() - c0)
            peer_cache = copy.deepcopy(prompt_cache)  # outside the timer
            c0 = time.process_time()
            mx.eval(peer(new[None], cache=peer_cache))
            times["mlx_lm"].append(time.process_time() - c0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        out[f"T={tokens}"] = {**{k: round(v, 2) for k, v in med.items()},
                              "ratio": round(med["mlx_lm"] / med["vibekit"], 2)}
    return out


def matmul_layout(repeats: int) -> dict:
    """CPU ms of one projection of the zoo model's shapes as HF stores it (`x @ w.T`, w [out, in],
    what mlx.nn.Linear computes), as vibekit.models.mlx.linear packs it (`x @ w_t`, w_t [in, out]
    contiguous) and 8-bit quantized (`mx.quantized_matmul`, group 64: mlx-q8), for 1, 8 and 64
    tokens: medians of interleaved runs."""
    shapes = {"qkv 256->768": (768, 256), "gate_up 256->1536": (1536, 256),
              "down 768->256": (256, 768), "head 256->4096": (4096, 256)}
    out: dict = {}
    for name, (o, i) in shapes.items():
        w = mx.random.normal((o, i))
        w_t = mx.contiguous(w.T)
        wq, scales, biases = mx.quantize(w, group_size=QUANT_GROUP_SIZE, bits=8)
        mx.eval(w, w_t, wq, scales, biases)
        for tokens in (1, 8, 64):
            x = mx.random.normal((tokens, i))
            mx.eval(x)
            times: dict[str, list[float]] = {"x @ w.T": [], "x @ w_t": [], "q8": []}
            for _ in range(repeats):
                for key in times:
                    c0 = time.process_time()
                    if key == "q8":
                        mx.eval(mx.quantized_matmul(x, wq, scales, biases, transpose=True,
                                                    group_size=QUANT_GROUP_SIZE, bits=8))
                    else:
                        mx.eval(x @ (w.T if key == "x @ w.T" else w_t))
                    times[key].append(time.process_time() - c0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            out[f"{name} T={tokens}"] = {**{k: round(v, 3) for k, v in med.items()},
                                         "speedup": round(med["x @ w.T"] / med["x @ w_t"], 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 file, 1 repeat, short outputs (CI)")
    ap.add_argument("--files", type=int, default=len(FILES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--plain-tokens", type=int, default=96)
    ap.add_argument("--quantization", choices=sorted(QUANTIZATIONS), default=None,
                    help="quantize both engines' weights the same way (mx.quantize, group 64)")
    ap.add_argument("--num-draft-tokens", type=int, default=None,
                    help="vibekit's first draft length for predictions (default: the engine's)")
    ap.add_argument("--agreement", action="store_true",
                    help="only the greedy agreement of mlx-q8 / mlx-q4 with float32")
    ap.add_argument("--matmul-layout", action="store_true",
                    help="only time x @ w.T against x @ w_t ([in, out]) on the model's shapes")
    ap.add_argument("--block-cost", action="store_true",
                    help="only time one forward of 1 / 8 / 64 tokens on each engine")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.files, args.repeats, args.plain_tokens = 1, 1, 16
    if args.matmul_layout:
        result = matmul_layout(3 if args.quick else 50)
        print(f"bench_mlx --matmul-layout on {mx.default_device()} (CPU ms, medians; load average "
              f"{os.getloadavg()[0]:.1f}, shared machine):")
        for key, row in result.items():
            print(f"  {key:24s} {row}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
        return
    try:
        import xgrammar  # noqa: F401
        from mlx_lm import load as mlx_lm_load
        from mlx_lm.models.cache import make_prompt_cache
    except ImportError as e:
        print(f"SKIP: the peer is not installed ({e}); pip install mlx-lm xgrammar")
        return

    if args.agreement:
        tok = Engine.from_pretrained("zoo:code-edit-tiny", device="mlx").tokenizer
        prompts = [tok(make_edit_prompt(INSTRUCTIONS[i % len(INSTRUCTIONS)],
                                        json.dumps(f, indent=2) + "\n"))["input_ids"]
                   for i, f in enumerate(FILES[:args.files])]
        result = agreement(prompts, args.plain_tokens)
        print(f"bench_mlx --agreement: {len(prompts)} prompts x {args.plain_tokens} tokens: "
              f"{json.dumps(result)}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
        return
    path = str(zoo.path("code-edit-tiny"))
    drafting = ({} if args.num_draft_tokens is None else
                {"num_draft_tokens": args.num_draft_tokens,
                 "max_draft_tokens": max(64, args.num_draft_tokens)})
    engine = Engine.from_pretrained("zoo:code-edit-tiny", device="mlx",
                                    quantization=args.quantization, grammar_backend="xgrammar",
                                    page_size=16, **drafting)
    peer, _ = mlx_lm_load(path)
    if args.quantization:
        nn.quantize(peer, group_size=QUANT_GROUP_SIZE, bits=QUANTIZATIONS[args.quantization],
                    class_predicate=lambda _, m: isinstance(m, (nn.Linear, nn.Embedding))
                    and m.weight.shape[-1] % QUANT_GROUP_SIZE == 0)
    tok = engine.tokenizer
    eos = set(engine.eos_token_ids)
    compiled = engine.grammars.cache.get(parse_response_format(FORMAT),
                                      engine.grammars.tokenizer).grammar
    vocab = engine.model_config.vocab_size
    files = [json.dumps(f, indent=2) for f in FILES[:args.files]]
    prompts = [tok(make_edit_prompt(INSTRUCTIONS[i % len(INSTRUCTIONS)], f + "\n"))["input_ids"]
               for i, f in enumerate(files)]
    if args.block_cost:
        result = block_cost(engine, peer, prompts[0], 3 if args.quick else 30)
        print(f"bench_mlx --block-cost: {len(prompts[0])}-token prompt cached, CPU ms, medians "
              f"(load average {os.getloadavg()[0]:.1f}, shared machine): {json.dumps(result)}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
        return
    print(f"bench_mlx: zoo:code-edit-tiny on MLX {mx.__version__} ({mx.default_device()}), "
          f"mlx-lm {importlib.metadata.version('mlx-lm')}, quantization {args.quantization}, "
          f"num_draft_tokens {engine.config.spec.num_draft_tokens}, "
          f"{len(prompts)} files x {args.repeats} repeats, load average "
          f"{os.getloadavg()[0]:.1f} (shared machine)")

    caches = []
    for p in prompts:  # mlx-lm's prompt cache: the prompt but its last token, once
        cache = make_prompt_cache(peer)
        mx.eval(peer(mx.array(p[:-1])[None], cache=cache))
        caches.append(cache)
    plain = SamplingParams(max_tokens=args.plain_tokens, temperature=0.0, ignore_eos=True)
    constrained = SamplingParams(max_tokens=256, temperature=0.0, response_format=FORMAT)
    # Warm-up: vibekit's prefix cache and grammar, both engines' first calls.
    for p, c in zip(prompts, caches):
        vibekit_run(engine, p, plain)
        vibekit_run(engine, p, constrained)
        mlx_lm_run(peer, p, c, 4, set())

    # Per request: tok/s by wall clock and by this process's CPU seconds (all its threads: the
    # engines' and MLX's). On a loaded shared machine the wall clock also counts waiting for a
    # core; the CPU-time ratio is the steadier measure of the work each engine does per token.
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}

    def record(name: str, n_vk: int, t_vk, n_peer: int, t_peer) -> None:
        for clock, i in (("wall", 0), ("cpu", 1)):
            rates.setdefault(f"{name}_vibekit_{clock}", []).append(n_vk / t_vk[i])
            rates.setdefault(f"{name}_mlx_lm_{clock}", []).append(n_peer / t_peer[i])
            ratios.setdefault(f"{name}_{clock}", []).append((n_vk / t_vk[i])
                                                            / (n_peer / t_peer[i]))

    same = {"plain": True, "json": True, "json_pred": True}
    accepted, valid = [], True
    for _ in range(args.repeats):
        for p, c, f in zip(prompts, caches, files):
            out, t = vibekit_run(engine, p, plain)
            ids, t_peer = mlx_lm_run(peer, p, c, args.plain_tokens, set())
            same["plain"] &= out.token_ids == ids
            record("plain", len(out.token_ids), t, len(ids), t_peer)

            out, t = vibekit_run(engine, p, constrained)
            ids, t_peer = mlx_lm_run(peer, p, c, 256, eos, XGrammarProcessor(compiled, vocab))
            same["json"] &= out.token_ids == ids
            record("json", len(out.token_ids), t, len(ids), t_peer)
            try:
                json.loads(out.text)
            except ValueError:
                valid = False

            pred, t_pred = vibekit_run(engine, p, constrained, prediction=f)
            same["json_pred"] &= pred.token_ids == ids
            record("json_pred", len(pred.token_ids), t_pred, len(ids), t_peer)
            accepted.append(pred.usage.accepted_prediction_tokens / max(1, len(pred.token_ids)))

    results = {
        "model": "zoo:code-edit-tiny", "quantization": args.quantization,
        "num_draft_tokens": engine.config.spec.num_draft_tokens,
        "mlx": mx.__version__, "mlx_lm": importlib.metadata.version("mlx-lm"),
        "device": str(mx.default_device()), "platform": sys.platform,
        "files": len(prompts), "repeats": args.repeats,
        "median_tok_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "ratio_vs_mlx_lm": {k: round(statistics.median(v), 2) for k, v in ratios.items()},
        "ratio_range": {k: [round(min(v), 2), round(max(v), 2)] for k, v in ratios.items()},
        "same_token_ids": same, "outputs_parse": valid,
        "accepted_prediction_fraction": round(statistics.median(accepted), 3),
        "load_average": round(os.getloadavg()[0], 1),
    }
    for key in ("plain", "json", "json_pred"):
        r, rng = results["ratio_vs_mlx_lm"], results["ratio_range"]
        print(f"  {key:10s} vibekit-MLX / mlx-lm: CPU time x{r[key + '_cpu']:.2f} (per-request "
              f"range {rng[key + '_cpu']}), wall x{r[key + '_wall']:.2f} (range "
              f"{rng[key + '_wall']}); same token ids: {same[key]}")
    print(f"  median tok/s: {results['median_tok_s']}")
    print(f"  predictions accepted (median fraction of output): "
          f"{results['accepted_prediction_fraction']}; outputs parse: {valid}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
