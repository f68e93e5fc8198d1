"""Soak test of the OpenAI server: minutes of mixed traffic at concurrency 64 with random
disconnects, then a check that nothing leaked.

A load generator in its own process keeps `--concurrency` requests in flight, drawn at random
from a mix: plain and streamed completions and chats, n=2, stop strings, JSON-schema output, a
forced tool call, seeded sampling, bad bodies (400), an oversized body (413), a deadline too
short to meet (504), streams the client drops midway, and "poison" prompts on which the
model forward raises (an injected kernel fault: those must get a 500 naming it, and nobody else
may). Every response is checked against
what its kind allows (a 200 with a well-formed body or stream ending in [DONE], or the one
expected error). Afterwards the engine must be idle with every KV page free and no request in
flight; the server's RSS is sampled throughout.

    python benchmarks/bench_soak.py --minutes 10     # the full soak
    python benchmarks/bench_soak.py --quick          # a few seconds, for CI

Exit status 1 if any response was unexpected or anything leaked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import random
import socket
import threading
import time
from collections import Counter

import uvicorn

from vibekit import Engine
from vibekit.runtime.async_engine import AsyncEngine
from vibekit.serve import create_app

MODEL = "dummy:tiny-llama"
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                           "mood": {"enum": ["calm", "busy"]}},
          "required": ["ok", "mood"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "pick", "parameters": SCHEMA}}]
WORDS = "page cache token batch prefill decode kernel tensor stream latency".split()

# kind -> (endpoint, streamed, allowed statuses)
KINDS = {
    "completion": ("completions", False, {200}),
    "completion_stream": ("completions", True, {200}),
    "chat": ("chat/completions", False, {200}),
    "chat_stream": ("chat/completions", True, {200}),
    "n2_stop": ("completions", False, {200}),
    "json_schema": ("chat/completions", False, {200}),
    "tool_call": ("chat/completions", True, {200}),
    "seeded": ("completions", False, {200}),
    "bad_body": ("completions", False, {400}),
    "oversized": ("completions", False, {413}),
    "deadline": ("completions", False, {504}),
    "disconnect": ("completions", True, {200}),
    "poison": ("completions", False, {500}),
}
POISON = [258, 7, 258, 9, 258]  # a token pattern no other request sends (258: a special id)


def inject_faults(engine: Engine) -> None:
    """Make the model forward raise whenever a step holds a POISON prompt."""
    import torch

    model = engine.runner.model
    real_forward = model.forward
    pattern = torch.tensor(POISON)

    def forward(input_ids, *args, **kwargs):
        flat = input_ids.flatten()
        # a step shorter than the pattern cannot hold it (a sampled 258 in a small decode batch
        # made unfold raise, and the soak counted the harness's error as the server's)
        if flat.numel() >= len(POISON) and bool((flat == POISON[0]).any()):
            windows = flat.unfold(0, len(POISON), 1)
            if bool((windows == pattern.to(input_ids.device)).all(dim=1).any()):
                raise RuntimeError("injected kernel fault")
        return real_forward(input_ids, *args, **kwargs)

    model.forward = forward


def make_body(kind: str, rng: random.Random) -> dict | bytes:
    text = " ".join(rng.choices(WORDS, k=rng.randint(2, 30)))
    max_tokens = rng.randint(1, 48)
    base = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0}
    chat = [{"role": "user", "content": text}]
    if kind in ("completion", "completion_stream", "disconnect"):
        return {**base, "prompt": text, "stream": kind != "completion",
                **({"max_tokens": 200, "ignore_eos": True} if kind == "disconnect" else {})}
    if kind in ("chat", "chat_stream"):
        return {**base, "messages": chat, "stream": kind == "chat_stream",
                "stream_options": {"include_usage": True} if kind == "chat_stream" else None}
    if kind == "n2_stop":
        return {**base, "prompt": text, "n": 2, "stop": ["e", "a"], "temperature": 0.8}
    if kind == "json_schema":
        return {**base, "messages": chat, "max_tokens": 48, "response_format": {
            "type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}}
    if kind == "tool_call":
        return {**base, "messages": chat, "max_tokens": 48, "stream": True, "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {"name": "pick"}}}
    if kind == "seeded":
        return {**base, "prompt": text, "temperature": 1.0, "seed": rng.randint(0, 2**64 - 1)}
    if kind == "bad_body":
        return rng.choice([{**base, "prompt": text, "top_p": 7}, {**base, "prompt": []},
                           {**base, "prompt": text, "seed": 2**70}, b"{not json"])
    if kind == "oversized":
        return b'{"model": "x", "prompt": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    if kind == "poison":
        return {**base, "prompt": POISON + [ord(c) for c in text[:20]]}
    if kind == "deadline":
        return {**base, "prompt": text, "max_tokens": 400, "ignore_eos": True, "timeout": 0.05}
    raise ValueError(kind)


async def one(session, url: str, kind: str, rng: random.Random, stats: Counter,
              problems: list[str]) -> None:
    endpoint, streamed, allowed = KINDS[kind]
    body = make_body(kind, rng)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    stats[f"sent {kind}"] += 1
    try:
        async with session.post(f"{url}/v1/{endpoint}", data=data, headers=headers) as r:
            if r.status not in allowed:
                problems.append(f"{kind}: status {r.status}: {(await r.text())[:200]}")
                return
            if r.status != 200:
                payload = await r.json()
                assert set(payload["error"]) == {"message", "type", "param", "code"}
                if kind == "poison" and "injected kernel fault" not in payload["error"][
                        "message"]:
                    problems.append(f"{kind}: 500 without the cause: {payload}")
                    return
                stats[f"ok {kind}"] += 1
                return
            if not streamed:
                payload = await r.json()
                assert payload["choices"], payload
                if kind == "json_schema":
                    content = payload["choices"][0]["message"]["content"]
                    if payload["choices"][0]["finish_reason"] == "stop":
                        json.loads(content)
                stats[f"ok {kind}"] += 1
                return
            stop_after = rng.randint(1, 8) if kind == "disconnect" else None
            events = 0
            last = None
            async for line in r.content:
                if not line.startswith(b"data: "):
                    continue
                events += 1
                last = line[6:].strip()
                if last != b"[DONE]" and b'"error"' in last[:12]:
                    problems.append(f"{kind}: in-band error {last[:200]!r}")
                    return
                if stop_after is not None and events >= stop_after:
                    stats["dropped streams"] += 1
                    stats[f"ok {kind}"] += 1
                    return  # leaving the context closes the connection midway
            if last != b"[DONE]":
                problems.append(f"{kind}: stream ended without [DONE] (last {last!r})")
                return
            stats[f"ok {kind}"] += 1
    except Exception as exc:  # noqa: BLE001 - every surprise is reported, not raised
        problems.append(f"{kind}: {type(exc).__name__}: {exc}")


async def load(url: str, seconds: float, concurrency: int, seed: int,
               faults: bool = True) -> dict:
    import aiohttp

    rng = random.Random(seed)
    stats: Counter = Counter()
    problems: list[str] = []
    kinds = list(KINDS)
    weights = [6, 6, 4, 4, 2, 2, 2, 2, 1, 1, 1, 3, 1 if faults else 0]
    deadline = time.monotonic() + seconds

    async def worker(session) -> None:
        while time.monotonic() < deadline:
            await one(session, url, rng.choices(kinds, weights)[0], rng, stats, problems)

    connector = aiohttp.TCPConnector(limit=concurrency + 8)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"stats": dict(stats), "problems": problems}


def load_sync(url: str, seconds: float, concurrency: int, seed: int,
              faults: bool = True) -> dict:
    return asyncio.run(load(url, seconds, concurrency, seed, faults))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    ap.add_argument("--no-faults", action="store_true",
                    help="leave out the poison requests (no injected step failures)")
    args = ap.parse_args(argv)
    seconds = 4.0 if args.quick else args.minutes * 60
    concurrency = 16 if args.quick else args.concurrency
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print("bench_soak: skipped (the load generator needs aiohttp)")
        return 0
    engine = Engine.from_pretrained(MODEL, max_model_len=2048, num_pages=2048, seed=args.seed)
    if not args.no_faults:
        inject_faults(engine)
    logging.getLogger("vibekit").setLevel(logging.CRITICAL)  # the faults log every time
    async_engine = AsyncEngine(engine, start=False, max_waiting=256)
    app = create_app(async_engine, MODEL, max_body_bytes=1024 * 1024, request_timeout=60)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server failed to start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(f"bench_soak: {MODEL}, {seconds:.0f} s of mixed requests at concurrency "
          f"{concurrency}, seed {args.seed}, {len(KINDS)} kinds incl. dropped streams, 400, "
          f"413, 504{'' if args.no_faults else ', injected step failures'}; load generator "
          f"aiohttp in its own process; machine shared")
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        pool.apply(load_sync, (url, 1.0, 4, args.seed + 1, False))  # warm up both sides
        rss0 = rss_mb()
        samples = [rss0]
        pending = pool.apply_async(load_sync, (url, seconds, concurrency, args.seed,
                                               not args.no_faults))
        t0 = time.monotonic()
        while not pending.ready():
            pending.wait(min(10.0, max(seconds / 10, 0.5)))
            samples.append(rss_mb())
        result = pending.get()
        elapsed = time.monotonic() - t0
        idle_deadline = time.monotonic() + 30
        while True:  # dropped streams are aborted once the server sees the disconnect
            stats = async_engine.stats()
            idle = (stats["num_running"] == 0 and stats["num_waiting"] == 0
                    and stats["num_in_flight"] == 0)
            if idle or time.monotonic() > idle_deadline:
                break
            time.sleep(0.05)
    finally:
        pool.terminate()
        server.should_exit = True
        thread.join(30)
    counts = result["stats"]
    problems = result["problems"]
    sent = sum(v for k, v in counts.items() if k.startswith("sent "))
    ok = sum(v for k, v in counts.items() if k.startswith("ok "))
    used_pages = engine.cache.manager.pool.num_used_pages
    print(f"requests: {sent} sent, {ok} as expected, {counts.get('dropped streams', 0)} streams "
          f"dropped by the client, {sent / elapsed:.1f} req/s over {elapsed:.0f} s")
    print("by kind: " + ", ".join(f"{k}={counts.get('ok ' + k, 0)}/{counts.get('sent ' + k, 0)}"
                                  for k in KINDS))
    print(f"engine: {stats['num_completion_tokens']} completion tokens, "
          f"finished stop={stats['num_finished_stop']} length={stats['num_finished_length']} "
          f"abort={stats['num_finished_abort']} deadline={stats['num_finished_deadline']} "
          f"error={stats['num_finished_error']}, step failures {stats['num_step_failures']}")
    print(f"unexpected errors: {len(problems)}")
    for p in problems[:10]:
        print(f"  {p}")
    print(f"leaked pages: {used_pages} of {engine.num_pages} (kv_usage {stats['kv_usage']}); "
          f"requests left in flight: {stats['num_in_flight']}, running {stats['num_running']}, "
          f"waiting {stats['num_waiting']}")
    print(f"server RSS: {rss0:.0f} MB after warm-up, {samples[-1]:.0f} MB at the end, max "
          f"{max(samples):.0f} MB (growth {samples[-1] - rss0:+.0f} MB)")
    leaked = used_pages or stats["num_in_flight"] or stats["num_running"] or stats["num_waiting"]
    return 1 if problems or leaked else 0


if __name__ == "__main__":
    raise SystemExit(main())
