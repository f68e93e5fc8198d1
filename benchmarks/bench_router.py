"""Cache-aware routing vs round-robin across 2 vibekit replicas on Ray Serve, on a
shared-prefix workload: prefix-cache hit rate and throughput, side by side, interleaved.

    python benchmarks/bench_router.py              # a 38M random llama, 3 rounds per router
    python benchmarks/bench_router.py --quick      # tiny model, one small round (CI)

Two Ray Serve applications run at once on a local cluster (127.0.0.1): /prefix
(PrefixAwareRequestRouter: consistent hashing with bounded loads on the first KV pages) and /rr
(RoundRobinRequestRouter), each with 2 replicas on the same weights. Each round sends both the
same requests (G groups x R requests; a group shares a long prefix, each request adds its own
question), in one shuffled order, C at a time; the routers alternate which goes first. Each
round uses new prefixes, so neither starts with a warm cache. Hit rate: cached prompt tokens /
prompt tokens, from the replicas' usage reports; affinity: the share of a group's requests its
most used replica served (1.0: every group stayed on one replica). Greedy outputs are checked
equal across the two routers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import tempfile
import time
from collections import Counter

import httpx

from vibekit.config import ModelConfig
from vibekit.models.dummy import hf_config_dict

try:
    import ray
    from ray import serve

    from vibekit.serve.ray import REPLICA_HEADER, build_app, deploy
except ImportError as exc:  # pragma: no cover
    ray = None
    _MISSING = str(exc)

ROUTERS = {"prefix": "/prefix", "round_robin": "/rr"}
# A 38M-parameter llama shape (150 MB in float32, 4 replicas fit a shared machine's memory)
# whose prefill of a few hundred tokens costs far more than the HTTP and Ray hops.
MID = ModelConfig(model_type="llama", vocab_size=512, hidden_size=512, intermediate_size=1536,
                  num_layers=12, num_qo_heads=8, num_kv_heads=4, head_dim=64,
                  max_position_embeddings=2048, eos_token_ids=(256,))


def make_round(seed: int, groups: int, per_group: int, prefix_chars: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz     "
    prompts = []
    for g in range(groups):
        prefix = f"[{seed}:{g}] " + "".join(rng.choice(alphabet) for _ in range(prefix_chars))
        prompts += [prefix + f"\nQ{i}: " + "".join(rng.choice(alphabet) for _ in range(24))
                    for i in range(per_group)]
    rng.shuffle(prompts)
    return prompts


async def run_round(url: str, model: str, prompts: list[str], concurrency: int,
                    max_tokens: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    results: list[dict] = [{} for _ in prompts]

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with sem:
            res = await client.post(url + "/v1/completions", json={
                "model": model, "prompt": prompts[i], "max_tokens": max_tokens,
                "temperature": 0.0, "ignore_eos": True})
            res.raise_for_status()
            body = res.json()
            results[i] = {"replica": res.headers[REPLICA_HEADER], "text": body["choices"][0]
                          ["text"], **{k: body["usage"][k] for k in ("prompt_tokens",
                                                                      "completion_tokens")},
                          "cached": body["usage"]["prompt_tokens_details"]["cached_tokens"]}

    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(len(prompts))))
        wall = time.perf_counter() - t0
    prompt_tokens = sum(r["prompt_tokens"] for r in results)
    # Affinity: the share of each group's requests that its most used replica served.
    groups: dict[str, Counter] = {}
    for prompt, r in zip(prompts, results):
        groups.setdefault(prompt.split("]", 1)[0], Counter())[r["replica"]] += 1
    affinity = statistics.mean(max(c.values()) / sum(c.values()) for c in groups.values())
    return {"wall_s": wall, "req_per_s": len(prompts) / wall,
            "out_tok_per_s": sum(r["completion_tokens"] for r in results) / wall,
            "hit_rate": sum(r["cached"] for r in results) / prompt_tokens,
            "affinity": affinity,
            "per_replica": sorted(Counter(r["replica"] for r in results).values()),
            "texts": [r["text"] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny model, one small round (CI)")
    ap.add_argument("--model", default="mid",
                    help="a model source, or mid: random weights of a 38M llama shape")
    ap.add_argument("--groups", type=int, default=8, help="distinct shared prefixes per round")
    ap.add_argument("--per-group", type=int, default=4, help="requests sharing each prefix")
    ap.add_argument("--prefix-chars", type=int, default=160)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-pages", type=int, default=512,
                    help="KV pages of 16 tokens per replica; small = cache pressure")
    ap.add_argument("--load-factor", type=float, default=1.25,
                    help="the prefix router's bounded-load factor")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if ray is None:
        print(f"skipped: Ray Serve is not installed ({_MISSING})")
        return
    if args.quick:
        args.model, args.groups, args.per_group, args.rounds = "dummy:tiny-llama", 2, 3, 1
        args.prefix_chars, args.max_tokens, args.concurrency = 64, 2, 2
    if args.model == "mid":
        folder = tempfile.mkdtemp(prefix="bench_router_")
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(hf_config_dict(MID), f)
        args.model = f"dummy:{folder}/config.json"
    engine_options = dict(max_model_len=1024, seed=0, num_threads=1, num_pages=args.num_pages)
    print(f"model {args.model}, 2 replicas per router (1 torch thread each), {args.groups} "
          f"groups x {args.per_group} requests per round, ~{args.prefix_chars}-char shared "
          f"prefixes, {args.max_tokens} output tokens, concurrency {args.concurrency}, "
          f"{args.rounds} rounds, KV pages per replica: {args.num_pages}, "
          f"load factor {args.load_factor}; "
          f"CPUs on this machine: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's memory monitor kills workers when the whole machine passes 95% of its memory; on a
    # shared machine that is other people's jobs, and it killed the Serve controller here.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(address="local", num_cpus=5, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for router, prefix in ROUTERS.items():
            extra = {"load_factor": args.load_factor} if router == "prefix" else {}
            deploy(build_app(args.model, 2, engine_options=engine_options, router=router,
                             **extra), name=router, route_prefix=prefix)
        base = f"http://127.0.0.1:{port}"
        rows: dict[str, list[dict]] = {r: [] for r in ROUTERS}
        for rnd in range(args.rounds):
            prompts = make_round(1000 + rnd, args.groups, args.per_group, args.prefix_chars)
            order = list(ROUTERS) if rnd % 2 == 0 else list(ROUTERS)[::-1]
            for router in order:
                res = asyncio.run(run_round(base + ROUTERS[router], args.model, prompts,
                                            args.concurrency, args.max_tokens))
                rows[router].append(res)
                print(f"round {rnd} {router:11s} hit rate {res['hit_rate']:.3f}  "
                      f"affinity {res['affinity']:.2f}  "
                      f"{res['req_per_s']:.2f} req/s  {res['out_tok_per_s']:.1f} out tok/s  "
                      f"requests per replica {res['per_replica']}")
            a, b = (rows[r][-1]["texts"] for r in ROUTERS)
            assert a == b, "the two routers' greedy outputs differ"
    finally:
        ray.shutdown()
    summary = {}
    for router, rs in rows.items():
        summary[router] = {k: statistics.median(r[k] for r in rs)
                           for k in ("hit_rate", "affinity", "req_per_s", "out_tok_per_s",
                                     "wall_s")}
    p, r = summary["prefix"], summary["round_robin"]
    print(f"median hit rate: prefix-aware {p['hit_rate']:.3f} vs round-robin "
          f"{r['hit_rate']:.3f}; throughput {p['req_per_s']:.2f} vs {r['req_per_s']:.2f} req/s "
          f"(x{p['req_per_s'] / r['req_per_s']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "summary": summary,
                       "rounds": {k: [{x: y for x, y in row.items() if x != "texts"}
                                      for row in v] for k, v in rows.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
