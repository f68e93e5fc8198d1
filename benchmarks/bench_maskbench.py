"""MaskBench: does each grammar backend accept exactly the valid instances of real-world schemas?

Reads ../shared/data/maskbench-dev.jsonl (or --data): JSON schemas from MaskBench
(guidance-ai/jsonschemabench, arXiv 2501.10868), each with valid and invalid instances. Every
instance is written as compact JSON, tokenized with the model's tokenizer, and fed token by token:
at each step the backend fills the token mask, the instance's next token must be allowed, then it
is accepted; after the last token a stop token must be allowed. A schema passes when every valid
instance is accepted and every invalid one rejected; it is refused when the backend will not
compile it (an error the user sees, never a wrong grammar); otherwise it is wrong, counted as
valid instances rejected and invalid instances accepted.

Backends, side by side on the same tokens:
  xgrammar (direct)    xgrammar.GrammarCompiler.compile_json_schema, compact separators
  llguidance (direct)  llguidance.LLMatcher on grammar_from_json_schema, compact separators
  vibekit[xgrammar]    vibekit's grammar layer forced to xgrammar (its workarounds, strict)
  vibekit[llguidance]  vibekit forced to llguidance (strict)
  vibekit[auto]        vibekit's per-schema choice (strict)
Also per backend: mask-fill time per token (p50, p99) and compile time per schema (p50, p99),
at the zoo tokenizer's vocabulary (zoo:code-edit-tiny, 4096) and at a 128k-token byte-level BPE
trained here on Python sources (cached in ~/.cache/vibekit/). Compile times are as each library
reports ready: llguidance builds its lexer lazily, so part of its compile lands in the first masks.
Last, the decode overhead: constrained vs plain generation on the SmolLM-135M shape (dummy
weights, a 49152-token BPE trained here), batch 1 and 16, per backend, side by side.

    python benchmarks/bench_maskbench.py                  # every schema, both vocabularies
    python benchmarks/bench_maskbench.py --quick          # 12 schemas, small vocabulary (CI)
    python benchmarks/bench_maskbench.py --overhead-only  # only the decode overhead
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sysconfig
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "maskbench-dev.jsonl"
CACHE = Path.home() / ".cache" / "vibekit"
BACKENDS = ("xgrammar (direct)", "llguidance (direct)", "vibekit[xgrammar]",
            "vibekit[llguidance]", "vibekit[auto]")


def load_rows(path: Path, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def large_tokenizer(vocab: int):
    """A byte-level BPE with `vocab` tokens trained on the Python installation's .py sources."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = CACHE / f"bpe-{vocab}.json"
    if not path.exists():
        files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))[:20000]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(
            (f.read_text(encoding="utf-8", errors="replace") for f in files),
            trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        CACHE.mkdir(parents=True, exist_ok=True)
        tok.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>")


class Direct:
    """One library called the way its docs show, for comparison with vibekit's layer."""

    def __init__(self, lib: str, tokenizer, vocab_size: int, eos: int) -> None:
        self.lib, self.eos = lib, eos
        if lib == "xgrammar":
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                      stop_token_ids=[eos])
            self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
            self.xgr = xgr
        else:
            import llguidance
            import llguidance.hf

            self.llg = llguidance
            self.info = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)

    def compile(self, schema: dict):
        """A factory of fresh matchers, or raises (refused)."""
        text = json.dumps(schema)
        if self.lib == "xgrammar":
            compiled = self.compiler.compile_json_schema(text, any_whitespace=False,
                                                         separators=(",", ":"))
            return lambda: _XgrMatcher(self.xgr.GrammarMatcher(compiled))
        llg = self.llg.LLMatcher
        grammar = llg.grammar_from_json_schema(text, defaults={"whitespace_flexible": False})
        proto = llg(self.info, grammar, log_level=0)
        if proto.is_error():
            raise ValueError(proto.get_error())
        return lambda: _LlgMatcher(proto.deep_copy())


class _XgrMatcher:
    def __init__(self, m) -> None:
        self.m = m

    def fill(self, bitmask):
        self.m.fill_next_token_bitmask(bitmask, 0)

    def advance(self, token):
        self.m.accept_token(token)


class _LlgMatcher:
    def __init__(self, m) -> None:
        self.m = m

    def fill(self, bitmask):
        self.m.unsafe_compute_mask_ptr(bitmask[0].data_ptr(), bitmask.shape[1] * 4)

    def advance(self, token):
        self.m.consume_token(token)


class Vibekit:
    """vibekit's grammar layer (GrammarBackend -> RequestGrammar), as the engine drives it."""

    def __init__(self, backend: str, tokenizer, vocab_size: int, eos: int) -> None:
        from vibekit.grammar import GrammarBackend, GrammarCache

        self.grammars = GrammarBackend(tokenizer, vocab_size, [eos], backend=backend)
        for name in ("llguidance", "xgrammar") if backend == "auto" else (backend,):
            self.grammars.tokenizer_for(name)  # built once per engine, like Direct's, untimed
        self.cache_type = GrammarCache
        self.eos = eos
        self.chosen: dict[str, str] = {}

    def compile(self, schema: dict):
        from vibekit.grammar import parse_response_format

        rf = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
        self.grammars.cache = self.cache_type()  # time a real compile, not a cache hit
        name, _ = self.grammars.compile(parse_response_format(rf))
        self.last_choice = name
        return lambda: _VibekitMatcher(self.grammars.request_grammar(rf))


class _VibekitMatcher:
    def __init__(self, g) -> None:
        self.g = g

    def fill(self, bitmask):
        self.g.fill_bitmask(bitmask, 0, ())

    def advance(self, token):
        self.g.advance(token)


def allowed(bitmask: torch.Tensor, token: int) -> bool:
    return bool((int(bitmask[0, token >> 5]) >> (token & 31)) & 1)


def feed(make, ids: list[int], eos: int, bitmask: torch.Tensor, fill_s: list[float]) -> bool:
    """True when every token of `ids`, then the stop token, is allowed by the masks."""
    m = make()
    for token in ids + [eos]:
        t0 = time.perf_counter()
        m.fill(bitmask)
        fill_s.append(time.perf_counter() - t0)
        if not allowed(bitmask, token):
            return False
        if token != eos:
            m.advance(token)
    return True


def run(rows: list[dict], tokenizer, vocab_size: int, names: tuple[str, ...]) -> dict:
    eos = tokenizer.eos_token_id
    runners = {}
    for name in names:
        if name.endswith("(direct)"):
            lib = name.split()[0]
            try:
                importlib.metadata.version(lib)
            except importlib.metadata.PackageNotFoundError:
                print(f"  {name}: not installed, skipped")
                continue
            runners[name] = Direct(lib, tokenizer, vocab_size, eos)
        else:
            runners[name] = Vibekit(name[len("vibekit["):-1], tokenizer, vocab_size, eos)
    instances = [[(tokenizer.encode(json.dumps(t["data"], separators=(",", ":"),
                                               ensure_ascii=False), add_special_tokens=False),
                   t["valid"]) for t in row["tests"]] for row in rows]
    bitmask = torch.zeros(1, -(-vocab_size // 32), dtype=torch.int32)
    out = {}
    for name, runner in runners.items():  # schemas interleaved per backend would thrash caches
        stats = dict(passed=0, wrong=0, refused=0, valid_rejected=0, invalid_accepted=0)
        compile_s, fill_s, wrong, choices = [], [], [], {}
        for row, tests in zip(rows, instances):
            t0 = time.perf_counter()
            try:
                make = runner.compile(row["schema"])
            except Exception:  # noqa: BLE001 (any refusal counts as refused)
                stats["refused"] += 1
                continue
            compile_s.append(time.perf_counter() - t0)
            if isinstance(runner, Vibekit):
                choices[runner.last_choice] = choices.get(runner.last_choice, 0) + 1
            bad_valid = bad_invalid = 0
            for ids, valid in tests:
                accepted = feed(make, ids, eos, bitmask, fill_s)
                bad_valid += valid and not accepted
                bad_invalid += accepted and not valid
            if bad_valid or bad_invalid:
                stats["wrong"] += 1
                wrong.append(row["name"])
            else:
                stats["passed"] += 1
            stats["valid_rejected"] += bad_valid
            stats["invalid_accepted"] += bad_invalid
        out[name] = {**stats, **_pcts("compile_ms", compile_s), **_pcts("fill_us", fill_s, 1e6),
                     "tokens": len(fill_s), "wrong_schemas": wrong, "choices": choices}
    return out


def _pcts(key: str, values: list[float], scale: float = 1e3) -> dict:
    if not values:
        return {f"{key}_p50": None, f"{key}_p99": None}
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return {f"{key}_p50": round(statistics.median(values) * scale, 2),
            f"{key}_p99": round(p99 * scale, 2)}


RECORDS = {"type": "array", "minItems": 200, "maxItems": 200,
           "items": {"type": "object", "additionalProperties": False,
                     "required": ["id", "tag", "ok"],
                     "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                                    "tag": {"enum": ["alpha", "beta", "gamma"]},
                                    "ok": {"type": "boolean"}}}}


def engine_overhead(batches: list[int], max_tokens: int, repeats: int) -> list[dict]:
    """Constrained vs plain decoding on the SmolLM-135M shape (dummy weights, a 49152-token BPE
    trained here), per backend: tok/s ratio side by side, and the masker's fill time per step
    against the measured step time. The schema cannot finish within max_tokens and jump-forward
    is off, so both modes emit the same number of tokens."""
    import dataclasses
    import tempfile

    from vibekit import Engine, SamplingParams
    from vibekit.models.dummy import dummy_config, save_dummy_checkpoint

    tokenizer = large_tokenizer(49152)
    config = dataclasses.replace(dummy_config("smollm-135m"),
                                 eos_token_ids=(tokenizer.eos_token_id,))
    rf = {"type": "json_schema", "json_schema": {"name": "r", "schema": RECORDS},
          "jump_forward": False}
    out = []
    with tempfile.TemporaryDirectory() as path:
        save_dummy_checkpoint(config, path)
        tokenizer.save_pretrained(path)
        for backend in ("llguidance", "xgrammar"):
            engine = Engine.from_pretrained(path, max_model_len=512, max_num_seqs=max(batches),
                                            grammar_backend=backend, num_threads=1)
            masker = engine.runner.grammar_masker
            for batch in batches:
                prompts = [[10 + i, 20, 30, 40] for i in range(batch)]
                plain = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
                constrained = SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                             response_format=rf)
                engine.generate(prompts, constrained)  # warm-up: compile, first masks
                ratios, steps, fills = [], [], []
                for _ in range(repeats):  # interleaved: the machine is shared
                    t0 = time.perf_counter()
                    engine.generate(prompts, plain)
                    t1 = time.perf_counter()
                    outs = engine.generate(prompts, constrained)
                    t2 = time.perf_counter()
                    assert all(len(o.token_ids) == max_tokens for o in outs)
                    ratios.append((t2 - t1) / (t1 - t0))
                    steps.append((t1 - t0) / max_tokens)
                    fills.append(masker.fill_seconds)
                step = statistics.median(steps)
                out.append({"backend": backend, "batch": batch,
                            "plain_step_ms": round(step * 1e3, 2),
                            "overhead": round(statistics.median(ratios) - 1, 4),
                            "fill_us_per_step": round(statistics.median(fills) * 1e6, 1),
                            "fill_fraction_of_step": round(statistics.median(fills) / step, 4)})
    return out


def print_table(title: str, results: dict, num_schemas: int) -> None:
    print(f"\n{title}: {num_schemas} schemas")
    print(f"{'backend':<22}{'pass':>6}{'wrong':>7}{'valid rej':>11}{'invalid acc':>13}"
          f"{'refused':>9}{'fill p50/p99 us':>18}{'compile p50/p99 ms':>21}")
    for name, r in results.items():
        print(f"{name:<22}{r['passed']:>6}{r['wrong']:>7}{r['valid_rejected']:>11}"
              f"{r['invalid_accepted']:>13}{r['refused']:>9}"
              f"{str(r['fill_us_p50']) + ' / ' + str(r['fill_us_p99']):>18}"
              f"{str(r['compile_ms_p50']) + ' / ' + str(r['compile_ms_p99']):>21}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--quick", action="store_true", help="12 schemas, small vocabulary (CI)")
    ap.add_argument("--limit", type=int, help="first N schemas only")
    ap.add_argument("--large-vocab", type=int, default=128000)
    ap.add_argument("--large-limit", type=int, help="first N schemas at the large vocabulary")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--large-only", action="store_true",
                    help="only the large-vocabulary pass (with --large-limit)")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only the constrained-vs-plain decode overhead on the SmolLM shape")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found (MaskBench sample; see ../shared/data/README.md)")
        return
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    import vibekit.zoo

    rows = load_rows(args.data, 12 if args.quick else args.limit)
    versions = {lib: _version(lib) for lib in ("xgrammar", "llguidance")}
    print(f"settings: {len(rows)} schemas, {sum(len(r['tests']) for r in rows)} instances, "
          f"{versions}, torch threads {torch.get_num_threads()}")
    small = AutoTokenizer.from_pretrained(vibekit.zoo.path("code-edit-tiny"))
    results: dict = {"settings": {"schemas": len(rows), **versions}}
    if not args.overhead_only and not args.large_only:
        results["small"] = run(rows, small, 4096, BACKENDS)
        print_table("zoo:code-edit-tiny tokenizer (vocab 4096)", results["small"], len(rows))
    if not args.quick and not args.overhead_only:
        large = large_tokenizer(args.large_vocab)
        large_rows = rows[:args.large_limit] if args.large_limit else rows
        results["large"] = run(large_rows, large, len(large), BACKENDS)
        print_table(f"byte-level BPE (vocab {len(large)})", results["large"], len(large_rows))
    if not args.quick and not args.large_only:
        results["overhead"] = engine_overhead([1, 16], max_tokens=24, repeats=3)
        print("\nconstrained vs plain decode, dummy:smollm-135m shape with a 49152-token BPE, "
              "1 thread, jump-forward off:")
        for r in results["overhead"]:
            print(f"  {r['backend']:<11} batch {r['batch']:>2}: plain step {r['plain_step_ms']} "
                  f"ms, constrained/plain time {r['overhead']:+.1%}, mask fill "
                  f"{r['fill_us_per_step']} us/step = {r['fill_fraction_of_step']:.2%} of a step")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _version(lib: str) -> str | None:
    try:
        return importlib.metadata.version(lib)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
