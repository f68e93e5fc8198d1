"""`vibekit-synthesize --init DIR`: write a scenario skeleton to fill in.

The skeleton runs as written (a dummy Llama, a completion workload, exact greedy tokens against
vibekit's plain path), so `vibekit-synthesize DIR --rounds 1` works before any edit; each file
says what to change for your own model, workload and checker.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_skeleton"]

SCENARIO_TOML = '''\
name = "{name}"
description = """
Your scenario: say what the requests are and what the metric rewards.
"""

[model]
# An HF folder (config.json + safetensors + tokenizer files), relative to this folder or
# absolute; "zoo:<name>"; or "dummy:<preset>" / "dummy:config.json" (random weights).
source = "dummy:tiny-llama"
dtype = "float32"
device = "cpu"
seed = 0
max_model_len = 1024

[workload]
num_requests = 4            # measured requests
warmup_requests = 1         # generated first, used only to warm up
concurrency = [1, 4]        # load levels of the benchmark (closed loop)
seed = 0
max_tokens = 32             # any other key is passed to workload.make_requests

[metric]
kind = "throughput_tok_s"   # or "median_tok_s" (per request, at concurrency 1), "requests_per_s",
                            # "chunk_ttft_p50_s" (streamed input; vibekit_agents/metrics.py)
higher_is_better = true     # must match the kind (false for chunk_ttft_p50_s)
report = ["p50_latency_s", "p99_latency_s"]
min_improvement = 0.05      # a change must win by this much (outside the noise) to be kept

[checker]
kind = "exact_tokens"       # informative; "exact*" marks an exact checker
timeout_s = 300
memory_limit_mb = 6144

[search]
# Skill names (skills/<name>/) the search may use; empty: all that apply.
primitives = ["paged-kv-prefix-caching", "batching-chunked-prefill", "cpu-threads"]

# The plain stack a user would run without tuning: engine defaults, with the primitive you
# hope helps turned off, so the report shows what it buys.
[start.engine]
enable_prefix_caching = false
'''

WORKLOAD_PY = '''\
"""Workload: make_requests(seed, n, **params) -> n requests in the OpenAI request shape
(prompt or messages, max_tokens, temperature, ..., prediction, response_format).

Replace the prompts with your own traffic: read a log, sample from a dataset folder, or build
them as below. Keep it deterministic in `seed`."""

from __future__ import annotations

import random
from typing import Any

SYSTEM = "You answer questions about the inventory of a small hardware shop. " * 4


def make_requests(seed: int, n: int, max_tokens: int = 32, **_: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = ["hammers", "screws", "drills", "paint", "ladders", "nails", "saws", "glue"]
    return [{"prompt": SYSTEM + f"How many {rng.choice(items)} are left in aisle "
                       f"{rng.randrange(1, 20)}?",
             "max_tokens": max_tokens, "temperature": 0.0} for _ in range(n)]
'''

REFERENCE_PY = '''\
"""Reference: the trusted outputs. Here vibekit's plainest path (no caching, one request at a
time); for your own model, HF transformers `generate` is the stronger reference."""

from __future__ import annotations

from typing import Any


def reference_outputs(requests: list[dict[str, Any]], model: str, dtype: str = "float32",
                      device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    from vibekit import Engine, SamplingParams

    engine = Engine.from_pretrained(model, dtype=dtype, device=device, seed=seed,
                                    max_model_len=1024, enable_prefix_caching=False,
                                    max_num_seqs=1)
    outputs = []
    for req in requests:
        params = SamplingParams(max_tokens=req["max_tokens"], temperature=0.0)
        out = engine.generate([req["prompt"]], params)[0]
        outputs.append({"token_ids": list(out.token_ids), "text": out.text})
    return outputs
'''

CHECKER_PY = '''\
"""Checker: check(outputs, references, **thresholds) -> {"passed", "summary", "details"}.
It sees only outputs and references (never candidate code). Exact greedy tokens here; a
tolerant metric (PSNR, edit distance, a JSON schema) goes here for other workloads."""

from __future__ import annotations

from typing import Any


def check(outputs: list[dict[str, Any]], references: list[dict[str, Any]],
          **_: Any) -> dict[str, Any]:
    if len(outputs) != len(references):
        return {"passed": False, "summary": f"{len(outputs)} outputs for {len(references)}"}
    same = [list(o.get("token_ids", [])) == list(r["token_ids"])
            for o, r in zip(outputs, references)]
    return {"passed": all(same), "summary": f"{sum(same)}/{len(same)} outputs identical",
            "details": [{"request": i, "identical": s} for i, s in enumerate(same)]}
'''


def write_skeleton(folder: str | Path) -> list[Path]:
    """Write scenario.toml, workload.py, reference.py and checker.py into `folder` (which must
    not hold a scenario already); returns the files written."""
    folder = Path(folder)
    if (folder / "scenario.toml").exists():
        raise FileExistsError(f"{folder / 'scenario.toml'} exists; --init writes a new scenario")
    folder.mkdir(parents=True, exist_ok=True)
    files = {"scenario.toml": SCENARIO_TOML.format(name=folder.resolve().name),
             "workload.py": WORKLOAD_PY, "reference.py": REFERENCE_PY, "checker.py": CHECKER_PY}
    written = []
    for name, text in files.items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written
