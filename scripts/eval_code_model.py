"""Evaluate `zoo:code-edit-tiny` on edit tasks from held-out stdlib files (greedy decoding).

Metrics, over --per-kind tasks of each edit kind (seeded; files never seen in training):
  copy   of the expected output's tokens outside the edited region (the longest common token
         prefix and suffix of the original and the expected edit), the fraction the model
         reproduces in place: matched prefix + matched suffix, token-weighted over all tasks
  exact  how often the whole output equals the expected edited code
With each "all" number, a 95% interval from resampling the tasks (bootstrap): how much another
draw of tasks could move it (200 tasks leave a few points either way).

    python scripts/eval_code_model.py [--model vibekit/zoo/code-edit-tiny] [--per-kind 40]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer

from vibekit import Engine, SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_code_model import KINDS, encode_task, sample_task, split_files, stdlib_files  # noqa: E402

from vibekit.zoo.code_edit import EOS_TOKEN  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def copy_counts(original: list[int], expected: list[int], got: list[int]) -> tuple[int, int]:
    """(unchanged tokens reproduced in place, unchanged tokens) for one task."""
    pre = common_prefix(original, expected)
    suf = common_prefix(original[::-1], expected[::-1])
    suf = min(suf, len(expected) - pre, len(original) - pre)
    matched = min(common_prefix(got, expected), pre)
    matched += min(common_prefix(got[::-1], expected[::-1]), suf)
    return matched, pre + suf


def bootstrap(rows: list[tuple[int, int, int]], rounds: int = 2000,
              seed: int = 0) -> tuple[tuple[float, float], tuple[float, float]]:
    """95% intervals of (copy, exact) over tasks resampled with replacement; rows are
    (matched, unchanged, exact) per task."""
    rng = random.Random(seed)
    copies, exacts = [], []
    for _ in range(rounds):
        sample = [rows[rng.randrange(len(rows))] for _ in rows]
        copies.append(sum(r[0] for r in sample) / max(1, sum(r[1] for r in sample)))
        exacts.append(sum(r[2] for r in sample) / len(sample))
    lo, hi = int(0.025 * rounds), int(0.975 * rounds) - 1
    copies.sort()
    exacts.sort()
    return (copies[lo], copies[hi]), (exacts[lo], exacts[hi])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "vibekit/zoo/code-edit-tiny")
    p.add_argument("--per-kind", type=int, default=40)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--show", type=int, default=0, help="print this many failed tasks")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    eos = tok.token_to_id(EOS_TOKEN)
    # vibekit's greedy output equals HF transformers' on this folder (tests/zoo); the engine
    # batches all tasks, which is much faster on CPU than one HF generate call per task.
    engine = Engine.from_pretrained(args.model, dtype="float32", device="cpu", max_num_seqs=32)
    _, held = split_files(stdlib_files())
    print(f"model {args.model.name}; {len(held)} held-out files; {args.per_kind} tasks per kind; "
          f"seed {args.seed}; greedy", flush=True)

    tasks = []
    for kind in KINDS:
        rng = random.Random(f"{args.seed}-{kind}")
        tasks += [sample_task(held, rng, tok, kind) for _ in range(args.per_kind)]
    encoded = [encode_task(task, tok) for task in tasks]
    t0 = time.time()
    outs = engine.generate(
        [ids[:prompt_len] for ids, prompt_len in encoded],
        [SamplingParams(max_tokens=len(ids) - prompt_len + 32, temperature=0.0)
         for ids, prompt_len in encoded],
    )
    totals = {k: [0, 0, 0] for k in KINDS}  # matched, unchanged, exact
    rows = []
    shown = 0
    for task, (ids, prompt_len), out in zip(tasks, encoded, outs):
        expected = ids[prompt_len:-1]
        got = [t for t in out.token_ids if t != eos]
        original = tok.encode(task.original).ids
        matched, unchanged = copy_counts(original, expected, got)
        exact = got == expected
        rows.append((matched, unchanged, int(exact)))
        for i, v in enumerate(rows[-1]):
            totals[task.kind][i] += v
        if not exact and shown < args.show:
            shown += 1
            print(f"--- {task.instruction}\n{tok.decode(got)}", flush=True)
    print(f"\n{'kind':8} {'copy':>7} {'exact':>7}")
    for kind, (matched, unchanged, exact) in totals.items():
        print(f"{kind:8} {matched / max(1, unchanged):7.1%} {exact / args.per_kind:7.1%}")
    matched = sum(t[0] for t in totals.values())
    unchanged = sum(t[1] for t in totals.values())
    exact = sum(t[2] for t in totals.values())
    num_tasks = args.per_kind * len(KINDS)
    (c_lo, c_hi), (e_lo, e_hi) = bootstrap(rows)
    print(f"{'all':8} {matched / max(1, unchanged):7.1%} {exact / num_tasks:7.1%}"
          f"   ({time.time() - t0:.0f}s)")
    print(f"95% interval over tasks (bootstrap): copy {c_lo:.1%}-{c_hi:.1%}, "
          f"exact {e_lo:.1%}-{e_hi:.1%}")


if __name__ == "__main__":
    main()
