"""`vibekit serve` (engine core process, and engine thread) vs `vllm serve`, side by side.

Every server runs as its own `serve` command (its own processes), on the same model and
machine, all started up front; a load generator in its own process streams completions over
loopback: c clients send requests back to back until N are done (token-id prompts, greedy,
EOS ignored, a fixed max_tokens; tokens are counted from each stream's final usage chunk).
Every repeat visits every server at every concurrency in turn (interleaved); the table shows
medians of the repeats (output tok/s, TTFT p50, latency p50).

    python benchmarks/bench_serve_peers.py                       # zoo:code-edit-tiny, c 1 16 64
    python benchmarks/bench_serve_peers.py --quick               # vibekit only, seconds (CI)

vLLM comes from /work/venvs/vllm (scripts/install_peers.sh vllm; VENV_ROOT moves it); when it is
missing it is skipped with a message. vLLM runs with --skip-tokenizer-init (its tokenizer
classes do not load the zoo's byte-level tokenizer), so it does not detokenize while vibekit
does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

VENVS = Path(os.environ.get("VENV_ROOT", "/work/venvs"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_path(model: str) -> str:
    if model.startswith("zoo:"):
        from vibekit import zoo

        return str(zoo.path(model.removeprefix("zoo:")))
    return model


def server_commands(args: argparse.Namespace, name: str) -> dict[str, list[str]]:
    common = ["--max-model-len", str(args.max_model_len), "--log-level", "warning",
              "--no-prefix-caching", "--max-waiting", "4096"]
    if args.num_threads is not None:
        common += ["--num-threads", str(args.num_threads)]
    vibekit = [sys.executable, "-m", "vibekit.cli", "serve", args.model,
               "--served-model-name", name, *common]
    commands = {"vibekit-process": [*vibekit, "--engine-process"],
                "vibekit-thread": [*vibekit, "--no-engine-process"]}
    if "vllm" in args.servers:
        exe = VENVS / "vllm" / "bin" / "python"
        if exe.exists():
            # the module `vllm serve` runs (that venv's vllm has no dist metadata, which the
            # `vllm` command reads for --version)
            commands["vllm"] = [str(exe), "-m", "vllm.entrypoints.openai.api_server",
                                "--model", model_path(args.model),
                                "--served-model-name", name, "--dtype", "float32",
                                "--max-model-len", str(args.max_model_len),
                                "--skip-tokenizer-init", "--no-enable-prefix-caching",
                                "--uvicorn-log-level", "warning"]
        else:
            print(f"  skip vllm: {exe} missing (scripts/install_peers.sh vllm)")
    return {k: v for k, v in commands.items() if k.split("-")[0] in args.servers
            or k in args.servers}


def start(commands: dict[str, list[str]], log_dir: Path,
          timeout: float) -> dict[str, tuple[subprocess.Popen, str]]:
    procs = {}
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    for key, cmd in commands.items():
        port = free_port()
        log = open(log_dir / f"{key}.log", "w")
        procs[key] = (subprocess.Popen([*cmd, "--port", str(port)], stdout=log,
                                       stderr=subprocess.STDOUT, env=env),
                      f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    waiting = dict(procs)
    while waiting:
        for key, (proc, url) in list(waiting.items()):
            if proc.poll() is not None:
                print(f"  skip {key}: it exited ({proc.returncode}); see {log_dir}/{key}.log")
                del waiting[key], procs[key]
                continue
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    del waiting[key]
            except httpx.TransportError:
                pass
        if waiting and time.monotonic() > deadline:
            for key in list(waiting):
                print(f"  skip {key}: not healthy within {timeout:g} s")
                procs.pop(key)[0].kill()
            break
        time.sleep(0.5)
    return procs


async def one(client: httpx.AsyncClient, body: dict) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    ttft, tokens = 0.0, 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and not ttft:
                ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return time.perf_counter() - t0, ttft, tokens


def run_level(url: str, name: str, prompts: list[list[int]], max_tokens: int,
              concurrency: int) -> tuple[float, list[tuple[float, float, int]]]:
    async def main() -> tuple[float, list[tuple[float, float, int]]]:
        queue = list(reversed(prompts))
        results: list[tuple[float, float, int]] = []
        limits = httpx.Limits(max_connections=concurrency + 4)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            async def worker() -> None:
                while queue:
                    body = {"model": name, "prompt": queue.pop(), "max_tokens": max_tokens,
                            "temperature": 0, "ignore_eos": True, "stream": True,
                            "stream_options": {"include_usage": True}}
                    results.append(await one(client, body))

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0, results

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:code-edit-tiny")
    ap.add_argument("--servers", nargs="+", default=["vibekit", "vllm"],
                    help="vibekit (both modes), vibekit-process, vibekit-thread, vllm")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--num-requests", type=int, default=128, help="requests per level")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-threads", type=int, default=None, help="vibekit's torch threads")
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attach", nargs="+", default=[], metavar="NAME=URL",
                    help="measure servers already running (serving the model as `bench`) "
                         "instead of starting them, e.g. vllm=http://127.0.0.1:8001")
    ap.add_argument("--quick", action="store_true", help="vibekit only, tiny, for CI")
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.servers, args.concurrency = "dummy:tiny-llama", ["vibekit"], [1, 4]
        args.num_requests, args.max_tokens, args.repeats, args.max_model_len = 4, 8, 1, 256
    name = "bench"
    rng = random.Random(args.seed)
    vocab = 200  # ids every model here has (the zoo's byte-level vocabulary and dummy's)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_serve_peers"
    log_dir.mkdir(exist_ok=True)
    attached = dict(a.split("=", 1) for a in args.attach)
    commands = {k: v for k, v in server_commands(args, name).items() if k not in attached}
    print(f"bench_serve_peers: model {args.model}, servers {sorted([*commands, *attached])}, "
          f"{args.num_requests} requests per level of {args.prompt_tokens} prompt tokens, "
          f"max_tokens {args.max_tokens} (greedy, ignore_eos, streamed), concurrency "
          f"{args.concurrency}, medians of {args.repeats} interleaved repeats, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    procs = start(commands, log_dir, args.startup_timeout)
    servers = {key: url for key, (_, url) in procs.items()} | attached
    client = multiprocessing.get_context("spawn").Pool(1)
    try:
        for url in servers.values():  # warm up
            client.apply(run_level, (url, name, [[5, 6, 7]] * 4, 4, 2))
        print(f"{'conc':>4} {'server':>16} {'tok/s':>8} {'ttft50 ms':>9} {'p50 ms':>8}")
        for c in args.concurrency:
            prompts = [[rng.randrange(3, vocab) for _ in range(args.prompt_tokens)]
                       for _ in range(args.num_requests)]
            runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in servers}
            for rep in range(args.repeats):
                order = list(servers)
                order = order[rep % len(order):] + order[:rep % len(order)]
                for key in order:
                    wall, results = client.apply(run_level, (servers[key], name, prompts,
                                                             args.max_tokens, c))
                    tokens = sum(r[2] for r in results)
                    assert tokens == args.num_requests * args.max_tokens, (key, tokens)
                    runs[key].append((tokens / wall,
                                      statistics.median(r[1] for r in results) * 1e3,
                                      statistics.median(r[0] for r in results) * 1e3))
            for key, rows in runs.items():
                med = [statistics.median(col) for col in zip(*rows)]
                print(f"{c:>4} {key:>16} {med[0]:>8.1f} {med[1]:>9.1f} {med[2]:>8.1f}",
                      flush=True)
    finally:
        client.terminate()
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
