"""OpenAI server on loopback vs Engine.generate on the same requests, for a concurrency sweep.

For each concurrency c, c clients stream completions back to back over HTTP (SSE) until N
requests are done: throughput, p50/p99 latency and p50 time to first token (TTFT). The server
runs in two modes, side by side: the engine on a thread of the server process ("thread",
AsyncEngine) and the engine in a core process of its own ("process", EngineCoreClient). The
baselines, on the same prompts and params with max_num_seqs=c (the batch the server can form
at that concurrency): Engine.generate's throughput, and the engine's TTFT under the same
closed loop as the clients (c requests in flight, a new one added as one finishes, TTFT from
add_request to the step that returns its first token). Every repeat runs all of them in turn
(interleaved); the table shows medians over the repeats. cpu x: the server's CPU seconds
(both processes in process mode) over Engine.generate's, steadier than wall time on a shared
machine. The client runs in its own process
(as real clients do); on a small machine it still takes CPU the server could use. A second
table splits the CPU per token by process (microseconds of CPU per completion token; needs
psutil): the engine (Engine.generate), the server's engine core and HTTP process (thread mode:
one process), and the load generator. Decode is serial in the engine core, so the core's column
bounds the throughput; on a machine with fewer cores than busy processes, the sum of the
server's columns and the client's does too.

    python benchmarks/bench_server.py            # concurrency 1, 16, 64, both modes
    python benchmarks/bench_server.py --quick    # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import multiprocessing
import os
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
from vibekit.serve.engine_core import EngineCoreClient, load_engine
from vibekit.serve.tuning import tune_process

WORDS = ("page cache token batch prefill decode kernel tensor stream latency throughput "
         "scheduler prefix sample logits attention").split()


def make_prompts(rng: random.Random, n: int, tag: str) -> list[str]:
    # distinct leading text per level so no level is served from another's prefix cache
    return [f"{tag}-{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(3, 10))) for i in range(n)]


def start_server(engine: AsyncEngine | EngineCoreClient,
                 model: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (no Nagle)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    app = create_app(engine, model)
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


def client_init() -> None:
    """The load generator's process: its startup heap out of the collector's way, as the
    server's is (vibekit.serve.tuning), so its collections do not stall the streams it reads."""
    if importlib.util.find_spec("aiohttp"):
        import aiohttp  # noqa: F401 - imported before the freeze
    gc.collect()
    gc.freeze()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of process `pid` so far (0 without psutil or pid)."""
    if pid is None or not importlib.util.find_spec("psutil"):
        return 0.0
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _server_cpu(served: AsyncEngine | EngineCoreClient) -> float:
    """CPU seconds of the server so far: this process (HTTP, and the engine thread in thread
    mode) plus the engine core process in process mode (psutil; this process only without)."""
    core_pid = served.process.pid if isinstance(served, EngineCoreClient) else None
    return time.process_time() + _cpu_of(core_pid)


def engine_closed_loop(engine: Engine, prompts: list[str], params: SamplingParams,
                       concurrency: int) -> tuple[float, list[float], int]:
    """The clients' closed loop on the engine itself: (wall s, TTFTs s, tokens)."""
    queue = list(reversed(prompts))
    added: dict[str, float] = {}
    ttft: dict[str, float] = {}
    tokens = 0

    def add() -> None:
        added[engine.add_request(queue.pop(), params)] = time.perf_counter()

    t0 = time.perf_counter()
    for _ in range(min(concurrency, len(queue))):
        add()
    while engine.has_unfinished_requests():
        outs = engine.step()
        now = time.perf_counter()
        for out in outs:
            if out.request_id not in ttft and out.delta_token_ids:
                ttft[out.request_id] = now - added[out.request_id]
            if out.finished:
                tokens += len(out.token_ids)
                if queue:
                    add()
    return time.perf_counter() - t0, list(ttft.values()), tokens


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dummy:tiny-llama")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--num-requests", type=int, default=128, help="requests per level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3,
                    help="run the engine and every server mode in turn this often; medians")
    ap.add_argument("--modes", nargs="+", choices=["thread", "process"],
                    default=["thread", "process"], help="server modes to measure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-threads", type=int, default=None,
                    help="torch threads of every engine (default: torch's)")
    ap.add_argument("--client", choices=["aiohttp", "httpx"], default=None,
                    help="HTTP client of the load generator (default: aiohttp if installed)")
    ap.add_argument("--stream-interval", type=int, default=1,
                    help="the server's stream_interval (tokens per SSE chunk after the first)")
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
    if args.num_threads is not None:
        options["num_threads"] = args.num_threads
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    print(f"bench_server: model {args.model}, seed {args.seed}, {args.num_requests} requests "
          f"per level, max_tokens {args.max_tokens} (greedy, ignore_eos), prompts of 3-10 "
          f"words, prefix caching off, concurrency {args.concurrency}, modes {args.modes}, "
          f"medians of {args.repeats} interleaved repeats, client {args.client} SSE on "
          f"loopback in its own process, cpu with {torch.get_num_threads()} torch threads, "
          f"stream interval {args.stream_interval}")
    servers = {}
    for mode in args.modes:
        if mode == "thread":
            engine = Engine.from_pretrained(args.model, **options)
            engine.generate(make_prompts(rng, 4, "warm"), params)  # first calls are slow
            served: AsyncEngine | EngineCoreClient = AsyncEngine(
                engine, start=False, stream_interval=args.stream_interval)
        else:
            served = EngineCoreClient(load_engine, args.model,
                                      stream_interval=args.stream_interval, **options)
        servers[mode] = (served, *start_server(served, args.model))
    tune_process()  # as run_server does once it is set up
    client = multiprocessing.get_context("spawn").Pool(1, initializer=client_init)
    for _, _, _, url in servers.values():
        client.apply(run_level_sync, (url, args.model, make_prompts(rng, 4, "warm-http"), 4, 2,
                                      args.client))
    print(f"{'conc':>4} {'mode':>7} {'req/s':>7} {'tok/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'ttft50 ms':>9} {'engine tok/s':>12} {'eng ttft50':>10} {'tok/s x':>7} "
          f"{'ttft x':>6} {'cpu x':>6}")
    client_pid = client.apply(os.getpid)
    cpu_rows: list[str] = []
    try:
        for c in args.concurrency:
            prompts = make_prompts(rng, args.num_requests, f"c{c}")
            baseline = Engine.from_pretrained(args.model, max_num_seqs=c, **options)
            baseline.generate(make_prompts(rng, 2, "warm"), params)
            engine_tps, engine_ttft = [], []
            runs: dict[str, list[tuple[float, list[tuple[float, float, int]]]]] = {
                m: [] for m in servers}
            server_cpu: dict[str, list[float]] = {m: [] for m in servers}
            split: dict[str, list[tuple[float, float, float]]] = {m: [] for m in servers}
            engine_cpu, engine_us = [], []
            for _ in range(args.repeats):
                t0, cpu0 = time.perf_counter(), time.process_time()
                outs = baseline.generate(prompts, params)
                engine_cpu.append(time.process_time() - cpu0)
                engine_tokens = sum(len(o.token_ids) for o in outs)
                engine_us.append(engine_cpu[-1] / engine_tokens)
                engine_tps.append(engine_tokens / (time.perf_counter() - t0))
                _, ttfts, loop_tokens = engine_closed_loop(baseline, prompts, params, c)
                assert loop_tokens == engine_tokens, "the closed loop lost tokens"
                engine_ttft.append(statistics.median(ttfts) * 1e3)
                for mode, (served, _, _, url) in servers.items():
                    core_pid = (served.process.pid if isinstance(served, EngineCoreClient)
                                else None)
                    cpu0, core0 = _server_cpu(served), _cpu_of(core_pid)
                    client0, http0 = _cpu_of(client_pid), time.process_time()
                    run = client.apply(run_level_sync, (url, args.model, prompts,
                                                        args.max_tokens, c, args.client))
                    runs[mode].append(run)
                    server_cpu[mode].append(_server_cpu(served) - cpu0)
                    split[mode].append(((_cpu_of(core_pid) - core0) / engine_tokens,
                                        (time.process_time() - http0) / engine_tokens,
                                        (_cpu_of(client_pid) - client0) / engine_tokens))
            eng_tps, eng_ttft = statistics.median(engine_tps), statistics.median(engine_ttft)
            for mode, mode_runs in runs.items():
                tps, rps, p50, p99, ttft50 = [], [], [], [], []
                for wall, results in mode_runs:
                    tokens = sum(r[2] for r in results)
                    assert len(results) == len(prompts) and tokens == engine_tokens, (
                        "lost tokens")
                    lat = [r[0] * 1e3 for r in results]
                    tps.append(tokens / wall)
                    rps.append(len(results) / wall)
                    p50.append(statistics.median(lat))
                    p99.append(pct(lat, 0.99))
                    ttft50.append(statistics.median(r[1] * 1e3 for r in results))
                med = statistics.median
                print(f"{c:>4} {mode:>7} {med(rps):>7.1f} {med(tps):>8.1f} {med(p50):>8.1f} "
                      f"{med(p99):>8.1f} {med(ttft50):>9.1f} {eng_tps:>12.1f} "
                      f"{eng_ttft:>10.1f} {med(tps) / eng_tps:>6.2f}x "
                      f"{med(ttft50) / eng_ttft:>5.2f}x "
                      f"{med(server_cpu[mode]) / med(engine_cpu):>5.2f}x", flush=True)
                core_us, http_us, client_us = (med(x[i] for x in split[mode]) * 1e6
                                               for i in range(3))
                cpu_rows.append(f"{c:>4} {mode:>7} {med(engine_us) * 1e6:>7.1f} "
                                f"{'-' if mode == 'thread' else f'{core_us:.1f}':>7} "
                                f"{http_us:>7.1f} {client_us:>7.1f}")
        if importlib.util.find_spec("psutil"):
            print("CPU us per completion token: engine (Engine.generate), the server's core "
                  "and HTTP process (thread mode: both in one), the load generator")
            print(f"{'conc':>4} {'mode':>7} {'engine':>7} {'core':>7} {'http':>7} {'client':>7}")
            print("\n".join(cpu_rows), flush=True)
    finally:
        client.terminate()
        for served, server, thread, _ in servers.values():
            server.should_exit = True
            thread.join(30)
            served.shutdown(timeout=5.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
