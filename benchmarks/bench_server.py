"""OpenAI server on loopback vs Engine.generate on the same requests, for a concurrency sweep.

For each concurrency c, c clients stream completions back to back over HTTP (SSE, httpx) until
N requests are done: throughput and p50/p99 latency. The baseline is Engine.generate on the same
prompts and params with max_num_seqs=c (the batch the server can form at that concurrency);
the ratio server/engine is the serving overhead (HTTP, SSE, asyncio, the engine thread), as
wall time and as the server process's CPU time (steadier on a shared machine). The client runs
in its own process (as real clients do), so it does not hold the server's GIL; on a small
machine it still takes CPU the server could use.

    python benchmarks/bench_server.py            # concurrency 1, 16, 64
    python benchmarks/bench_server.py --quick    # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import random
import socket
import statistics
import threading
import time

import httpx
import torch
import uvicorn

from vibekit import Engine, SamplingParams
from vibekit.runtime.async_engine import AsyncEngine
from vibekit.serve import create_app

WORDS = ("page cache token batch prefill decode kernel tensor stream latency throughput "
         "scheduler prefix sample logits attention").split()


def make_prompts(rng: random.Random, n: int, tag: str) -> list[str]:
    # distinct leading text per level so no level is served from another's prefix cache
    return [f"{tag}-{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(3, 10))) for i in range(n)]


def start_server(engine: Engine, model: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (no Nagle)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    app = create_app(AsyncEngine(engine, start=False), model)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server failed to start"
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def one_request(client: httpx.AsyncClient, body: dict) -> tuple[float, float, int]:
    """(latency s, time to first token s, completion tokens) of one streamed completion."""
    t0 = time.perf_counter()
    ttft, num_tokens = 0.0, 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"]:
                num_tokens += len(chunk["choices"][0]["token_ids"])
                ttft = ttft or time.perf_counter() - t0
    return time.perf_counter() - t0, ttft, num_tokens


async def one_request_aiohttp(session, url: str, body: dict) -> tuple[float, float, int]:
    """one_request on aiohttp (its C HTTP parser costs the client far less CPU than httpx)."""
    t0 = time.perf_counter()
    ttft, num_tokens = 0.0, 0
    async with session.post(url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"]:
                num_tokens += len(chunk["choices"][0]["token_ids"])
                ttft = ttft or time.perf_counter() - t0
    return time.perf_counter() - t0, ttft, num_tokens


async def run_level(url: str, model: str, prompts: list[str], max_tokens: int,
                    concurrency: int, client_kind: str = "httpx",
                    ) -> tuple[float, list[tuple[float, float, int]]]:
    queue = list(reversed(prompts))
    results: list[tuple[float, float, int]] = []

    def body() -> dict:
        return {"model": model, "prompt": queue.pop(), "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True, "stream": True, "return_token_ids": True}

    if client_kind == "aiohttp":
        import aiohttp

        async def worker_aiohttp(session) -> None:
            while queue:
                results.append(await one_request_aiohttp(session, url, body()))

        connector = aiohttp.TCPConnector(limit=concurrency + 4)
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker_aiohttp(session) for _ in range(concurrency)))
            return time.perf_counter() - t0, results

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            results.append(await one_request(client, body()))

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - t0, results


def run_level_sync(url: str, model: str, prompts: list[str], max_tokens: int,
                   concurrency: int, client_kind: str = "httpx",
                   ) -> tuple[float, list[tuple[float, float, int]]]:
    """run_level in the client process (no torch threads needed there)."""
    return asyncio.run(run_level(url, model, prompts, max_tokens, concurrency, client_kind))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dummy:tiny-llama")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--num-requests", type=int, default=128, help="requests per level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternate engine and server runs this often; keep the best of each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-threads", type=int, default=None,
                    help="torch threads of both sides (default: torch's)")
    ap.add_argument("--client", choices=["aiohttp", "httpx"], default=None,
                    help="HTTP client of the load generator (default: aiohttp if installed)")
    ap.add_argument("--quick", action="store_true", help="tiny sweep for CI (a few seconds)")
    args = ap.parse_args(argv)
    if args.quick:
        args.concurrency, args.num_requests, args.max_tokens, args.repeats = [1, 4], 4, 8, 1
    if args.client is None:
        args.client = "aiohttp" if importlib.util.find_spec("aiohttp") else "httpx"
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    # no prefix caching: repeats must cost what the first run cost, on both sides
    options = dict(max_model_len=512, num_pages=1024, seed=args.seed,
                   enable_prefix_caching=False)
    engine = Engine.from_pretrained(args.model, **options)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    print(f"bench_server: model {args.model}, seed {args.seed}, {args.num_requests} requests "
          f"per level, max_tokens {args.max_tokens} (greedy, ignore_eos), prompts of 3-10 "
          f"words, prefix caching off, concurrency {args.concurrency}, best of {args.repeats}, "
          f"client {args.client} SSE on loopback in its own process, cpu with "
          f"{torch.get_num_threads()} torch threads")
    engine.generate(make_prompts(rng, 4, "warm"), params)  # first calls are slow
    server, thread, url = start_server(engine, args.model)
    client = multiprocessing.get_context("spawn").Pool(1)
    client.apply(run_level_sync, (url, args.model, make_prompts(rng, 4, "warm-http"), 4, 2,
                                  args.client))
    print(f"{'conc':>4} {'req/s':>7} {'tok/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'ttft50 ms':>9} {'engine tok/s':>12} {'wall x':>7} {'cpu x':>6}")
    try:
        for c in args.concurrency:
            prompts = make_prompts(rng, args.num_requests, f"c{c}")
            baseline = Engine.from_pretrained(args.model, max_num_seqs=c, **options)
            baseline.generate(make_prompts(rng, 2, "warm"), params)
            engine_s = engine_cpu = server_cpu = float("inf")
            best = None
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                outs = baseline.generate(prompts, params)
                engine_s = min(engine_s, time.perf_counter() - t0)
                engine_cpu = min(engine_cpu, time.process_time() - c0)
                c0 = time.process_time()
                run = client.apply(run_level_sync, (url, args.model, prompts, args.max_tokens, c,
                                                    args.client))
                server_cpu = min(server_cpu, time.process_time() - c0)
                best = run if best is None or run[0] < best[0] else best
            engine_tokens = sum(len(o.token_ids) for o in outs)
            wall, results = best
            tokens = sum(r[2] for r in results)
            assert len(results) == len(prompts) and tokens == engine_tokens, "lost tokens"
            lat = [r[0] * 1e3 for r in results]
            ttft = [r[1] * 1e3 for r in results]
            print(f"{c:>4} {len(results) / wall:>7.1f} {tokens / wall:>8.1f} "
                  f"{statistics.median(lat):>8.1f} {pct(lat, 0.99):>8.1f} "
                  f"{statistics.median(ttft):>9.1f} {engine_tokens / engine_s:>12.1f} "
                  f"{wall / engine_s:>6.2f}x {server_cpu / engine_cpu:>5.2f}x")
    finally:
        client.terminate()
        server.should_exit = True
        thread.join(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
