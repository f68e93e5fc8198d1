"""Greedy agreement of vibekit's quantized linear layers with the float model, on the zoo code
model's edit workload (real prompts, a trained model): per request, whether the whole output is
identical, and the share of output tokens before the first difference.

    python benchmarks/quant_agreement.py                       # 16 requests, int8 and w8a8
    python benchmarks/quant_agreement.py --quick               # 2 requests (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scenarios" / "code-edit"))

from workload import make_requests  # noqa: E402

from vibekit import Engine, SamplingParams  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:code-edit-tiny")
    ap.add_argument("--num-requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--quantizations", default="int8,w8a8")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.num_requests, args.max_tokens, args.dtypes = 2, 24, "float32"
        args.quantizations = "w8a8"
    reqs = make_requests(0, args.num_requests, mode="file", max_tokens=args.max_tokens,
                         model=args.model, num_lines=12)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    prompts = [r["prompt"] for r in reqs]
    print(f"model={args.model} requests={len(prompts)} max_tokens={args.max_tokens}")
    print("| dtype | quantization | identical outputs | tokens before the first difference |")
    print("|---|---|---:|---:|")
    for dtype in args.dtypes.split(","):
        full = [o.token_ids for o in Engine.from_pretrained(
            args.model, dtype=dtype).generate(prompts, params)]
        for quant in args.quantizations.split(","):
            got = [o.token_ids for o in Engine.from_pretrained(
                args.model, dtype=dtype, quantization=quant).generate(prompts, params)]
            same = sum(a == b for a, b in zip(full, got))
            prefix = sum(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                              min(len(a), len(b))) for a, b in zip(full, got))
            print(f"| {dtype} | {quant} | {same}/{len(full)} | "
                  f"{prefix / sum(map(len, full)):.1%} |", flush=True)


if __name__ == "__main__":
    main()
