"""The code-edit workload side by side: vibekit plain and with predicted outputs vs the
speculation each peer offers on the same weights — HF prompt lookup, vLLM CPU n-gram speculation,
llama.cpp prompt lookup — and their plain decoding.

Workload: scenarios/code-edit in file mode on zoo:code-edit-tiny (a 4.5M llama trained here to
edit code): each prompt asks for an edit of a stdlib snippet; vibekit gets the snippet as its
prediction, the peers' n-gram / prompt-lookup drafters search the same prompt (which holds the
snippet), so every engine has the same text to copy from. Batch 1 (one request at a time), greedy.
Every engine generates exactly the tokens vibekit's plain greedy decoding gives for that request
before its EOS (a fixed length, EOS ignored), and every engine's outputs are checked against them:
a row whose tokens differ is marked. The peers' speculation runs with k = 10 draft tokens and
their default n-gram sizes (vLLM 5..5, HF 2, llama-cpp-python 2).

Each engine runs in its own process (benchmarks/peer_worker.py; peers under their venvs, built by
scripts/install_peers.sh; a missing peer is skipped with a message), loaded once and warmed up;
every repeat visits every request on every engine in a rotated order; a cell is the median of the
per-request tok/s (prefill included) over requests and repeats.

    python benchmarks/bench_code_edit_peers.py                 # 6 requests x 3 repeats, 1 thread
    python benchmarks/bench_code_edit_peers.py --threads 2
    python benchmarks/bench_code_edit_peers.py --quick         # vibekit + HF, seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "scenarios" / "code-edit"))

from bench_peers import VENVS, Worker, gguf_file  # noqa: E402
from workload import make_requests  # noqa: E402

LOOKUP = 10  # draft tokens per step for the peers' n-gram / prompt lookup (as in issue 15)


def workers(args, model: Path, work: Path) -> list[Worker]:
    worker = str(HERE / "peer_worker.py")
    me, threads = sys.executable, str(args.threads)
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads}
    out = []

    def add(label, python, engine, path, opts=None, penv=None):
        argv = [str(python), worker, engine, str(path), "float32", threads]
        if opts is not None:
            argv.append(json.dumps(opts))
        out.append(Worker(label, argv, 0, penv or env))

    names = args.engines.split(",")
    if "vibekit" in names:
        add("vibekit plain", me, "vibekit", model)
        add("vibekit predicted", me, "vibekit", model)
        add("vibekit predicted (num_draft_tokens 64)", me, "vibekit", model,
            {"num_draft_tokens": 64})
    if "hf" in names:
        add("HF plain", me, "hf", model)
        add(f"HF prompt lookup (k={LOOKUP})", me, "hf", model,
            {"prompt_lookup_num_tokens": LOOKUP})
    peer_env = {"OMP_NUM_THREADS": threads}
    if "vllm" in names:
        python = VENVS / "vllm" / "bin" / "python"
        if python.is_file():
            add("vLLM CPU plain", python, "vllm", model, {}, peer_env)
            add(f"vLLM CPU n-gram (k={LOOKUP})", python, "vllm", model,
                {"speculative_config": {"method": "ngram", "num_speculative_tokens": LOOKUP}},
                peer_env)
        else:
            print(f"  skip vLLM: {python} missing (scripts/install_peers.sh vllm)")
    if "llamacpp" in names:
        python = VENVS / "llamacpp" / "bin" / "python"
        gguf = gguf_file(model, "f32", work, python) if python.is_file() else None
        if gguf is not None:
            add("llama.cpp plain", python, "llamacpp", gguf, {}, peer_env)
            add(f"llama.cpp prompt lookup (k={LOOKUP})", python, "llamacpp", gguf,
                {"prompt_lookup": LOOKUP}, peer_env)
        elif not python.is_file():
            print(f"  skip llama.cpp: {python} missing (scripts/install_peers.sh llamacpp)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="vibekit,hf,vllm,llamacpp")
    ap.add_argument("--num-requests", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="vibekit + HF, 1 request, 1 repeat")
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "vibekit_peers"))
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.engines, args.num_requests, args.repeats, args.max_tokens = "vibekit,hf", 1, 1, 32
    import torch

    from vibekit import Engine, SamplingParams, zoo

    torch.set_num_threads(args.threads)
    model = Path(zoo.path("code-edit-tiny"))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    reqs = make_requests(seed=0, n=args.num_requests, mode="file", num_lines=12,
                         max_tokens=args.max_tokens)
    ref = Engine.from_pretrained("zoo:code-edit-tiny", num_threads=args.threads)
    tok = ref.tokenizer
    prompts = [tok(r["prompt"])["input_ids"] for r in reqs]
    preds = [tok(r["prediction"]["content"], add_special_tokens=False)["input_ids"] for r in reqs]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    eos = set(ref.eos_token_ids)
    # Plain greedy up to (not including) EOS: HF's min_new_tokens and vLLM's min_tokens, which
    # make the peers generate a fixed length, mask EOS, so no engine is asked to emit it.
    expected = [o.token_ids[:-1] if o.token_ids and o.token_ids[-1] in eos else o.token_ids
                for o in ref.generate(prompts, params)]
    del ref
    out_lens = [len(e) for e in expected]
    print(f"code-edit: zoo:code-edit-tiny float32, {len(reqs)} requests (outputs "
          f"{min(out_lens)}-{max(out_lens)} tokens), batch 1, {args.threads} thread(s), "
          f"{args.repeats} repeats, load average {os.getloadavg()[0]:.1f}")
    ws = [w for w in workers(args, model, work) if w.start(work)]
    rates: dict[str, list[float]] = {w.label: [] for w in ws}
    exact: dict[str, bool] = {w.label: True for w in ws}
    try:
        def job(w, i, check=False):
            pred = [preds[i]] if w.label.startswith("vibekit predicted") else None
            return w.run([prompts[i]], [out_lens[i]], predictions=pred, all=check)

        for w in ws:  # warm-up, and every output checked once
            for i in range(len(prompts)):
                res = job(w, i, check=True)
                exact[w.label] &= res["outputs"][0] == expected[i]
        for r in range(args.repeats):
            order = ws[r % len(ws):] + ws[:r % len(ws)]
            for i in range(len(prompts)):
                for w in order:
                    res = job(w, i)
                    rates[w.label].append(res["tokens"] / res["seconds"])
    finally:
        for w in ws:
            w.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    results = []
    for w in ws:
        v = rates[w.label]
        row = {"engine": w.label, "median_tok_s": round(med[w.label], 1),
               "min": round(min(v), 1), "max": round(max(v), 1), "same_tokens": exact[w.label]}
        results.append(row)
        print(f"  {w.label:42s} {row['median_tok_s']:8.1f} tok/s ({row['min']:.1f}.."
              f"{row['max']:.1f})  tokens {'identical' if row['same_tokens'] else 'DIFFER'}")
    pred = med.get("vibekit predicted (num_draft_tokens 64)")
    for peer in (f"vLLM CPU n-gram (k={LOOKUP})", f"llama.cpp prompt lookup (k={LOOKUP})",
                 f"HF prompt lookup (k={LOOKUP})"):
        if pred and peer in med:
            print(f"  vibekit predicted (64) / {peer}: {pred / med[peer]:.2f}x; default "
                  f"{med['vibekit predicted'] / med[peer]:.2f}x")
    if "vibekit plain" in med and "llama.cpp plain" in med:
        ratio = med["vibekit plain"] / med["llama.cpp plain"]
        print(f"  vibekit plain / llama.cpp plain: {ratio:.2f}x")
    print(f"  load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": results},
                                              indent=1))


if __name__ == "__main__":
    main()
