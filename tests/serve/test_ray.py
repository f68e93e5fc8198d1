"""vibekit.serve.ray on a local Ray cluster started here (127.0.0.1, 3 CPUs): two
dummy:tiny-llama replicas behind the OpenAI ingress. Outputs are compared with Engine.generate
on the same weights; the test that kills a replica runs last."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import defaultdict

import httpx
import openai
import pytest

ray = pytest.importorskip("ray", reason="the `ray` extra (ray[serve]) is not installed")
serve = pytest.importorskip("ray.serve")

from vibekit import Engine, SamplingParams  # noqa: E402
from vibekit.serve.ray import REPLICA_HEADER, build_app, deploy, replica_actor  # noqa: E402

MODEL = "dummy:tiny-llama"
PAGE_SIZE = 16
ENGINE_OPTIONS = dict(max_model_len=1536, num_pages=1024, page_size=PAGE_SIZE, seed=0,
                      num_threads=1)
LONG = 1200  # tokens: several seconds of decoding, so the kill lands mid-way


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's memory monitor kills workers when the whole machine passes 95% of its memory: on a
    # shared machine that is other people's jobs (it killed the Serve controller here).
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(address="local", num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy(build_app(MODEL, 2, engine_options=ENGINE_OPTIONS, num_prefix_pages=4),
               name="vibekit-test")
        yield f"http://127.0.0.1:{port}"
    finally:
        ray.shutdown()  # takes Serve with it, without draining every replica


@pytest.fixture(scope="module")
def reference():
    return Engine.from_pretrained(MODEL, **ENGINE_OPTIONS)


def complete(url: str, prompt: str, max_tokens: int = 4, client: httpx.Client | None = None,
             **extra) -> httpx.Response:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            **extra}
    post = client.post if client is not None else httpx.post
    return post(url + "/v1/completions", json=body, timeout=60)


def shared_prefix(group: int) -> str:
    # ~6 pages of bytes (the dummy tokenizer is byte-level): the route key covers 4 of them.
    return f"group {group:02d}: " + "".join(chr(97 + (group * 7 + i) % 26) for i in range(90))


def test_requests_sharing_a_prefix_land_on_one_replica_and_hit_its_cache(cluster):
    by_group: dict[int, set[str]] = defaultdict(set)
    cached: dict[str, int] = defaultdict(int)
    prompt_tokens: dict[str, int] = defaultdict(int)
    for group in range(12):
        for i in range(3):
            res = complete(cluster, shared_prefix(group) + f" question {i}?")
            assert res.status_code == 200, res.text
            replica = res.headers[REPLICA_HEADER]
            by_group[group].add(replica)
            usage = res.json()["usage"]
            if i > 0:  # the first request of a group warmed the replica's cache
                assert usage["prompt_tokens_details"]["cached_tokens"] >= 4 * PAGE_SIZE
                cached[replica] += usage["prompt_tokens_details"]["cached_tokens"]
                prompt_tokens[replica] += usage["prompt_tokens"]
    assert all(len(replicas) == 1 for replicas in by_group.values()), by_group
    # 12 keys on a 2-replica ring: both replicas own some (all on one: p = 2 ** -11).
    assert len(set().union(*by_group.values())) == 2
    hit_rate = {r: cached[r] / prompt_tokens[r] for r in prompt_tokens}
    print(f"repeat-request prefix hit rate per replica: {hit_rate}")
    assert all(rate > 0.5 for rate in hit_rate.values())


def test_the_official_openai_client_works_through_the_ingress(cluster, reference):
    client = openai.OpenAI(base_url=cluster + "/v1", api_key="unused", max_retries=0,
                           timeout=60)
    assert [m.id for m in client.models.list().data] == [MODEL]
    prompt = shared_prefix(40) + " complete this"
    ref = reference.generate([prompt], SamplingParams(max_tokens=12, temperature=0.0,
                                                      ignore_eos=True))[0]
    res = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0.0,
                                    extra_body={"ignore_eos": True})
    assert res.choices[0].text == ref.text
    assert res.usage.completion_tokens == 12

    messages = [{"role": "user", "content": shared_prefix(41)}]
    chat_prompt = reference.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                          tokenize=False)
    ref = reference.generate([chat_prompt], SamplingParams(max_tokens=10, temperature=0.0,
                                                           ignore_eos=True))[0]
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10,
                                            temperature=0.0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ref.text
    assert chunks[-1].usage.completion_tokens == 10
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="nope", prompt="hi", max_tokens=1)


@pytest.mark.slow  # each failed start imports torch again: 8 s idle, 50 s on a loaded machine
def test_a_replica_that_cannot_start_fails_the_deployment_with_its_error(cluster):
    app = build_app("dummy:no-such-preset", 1, max_constructor_retry_count=1,
                    replica_num_cpus=0.1)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="unknown dummy preset|no-such-preset") as info:
        deploy(app, name="broken", route_prefix="/broken")
    print(info.value)
    assert time.monotonic() - t0 < 60
    serve.delete("broken")


def test_a_killed_replicas_requests_are_retried_on_the_other(cluster, reference):
    group = 50
    doomed = complete(cluster, shared_prefix(group) + " warm").headers[REPLICA_HEADER]
    prompts = [shared_prefix(group) + f" long answer {i}" for i in range(6)]
    refs = reference.generate(prompts, SamplingParams(max_tokens=LONG, temperature=0.0,
                                                      ignore_eos=True))
    results: dict[int, httpx.Response] = {}

    # Clients made here: making one (its SSL context) in the thread took long enough on a
    # loaded machine that requests reached the router only after the kill (never retried).
    clients = [httpx.Client() for _ in prompts]

    def send(i: int) -> None:
        results[i] = complete(cluster, prompts[i], max_tokens=LONG, client=clients[i],
                              ignore_eos=True)

    # A stream on the doomed replica (its owner: the ring is idle but for the warm request).
    body = {"model": MODEL, "prompt": shared_prefix(group) + " streamed", "max_tokens": LONG,
            "temperature": 0.0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", cluster + "/v1/completions", json=body, timeout=60) as stream:
        assert stream.headers[REPLICA_HEADER] == doomed
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["text"] is not None
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(prompts))]
        # The six go out 20 ms apart, so that each is routed on the loads the ones before it
        # left (a burst is routed on one snapshot and can miss the doomed replica entirely);
        # about half of them land there. Then the kill, 0.5 s after the last went out (so all
        # have been routed) and while the stream and they still run (LONG tokens: seconds):
        # a fixed time, not a number of events (events carry more tokens the faster the
        # engine runs).
        started = time.monotonic()
        for i, t in enumerate(threads):
            while time.monotonic() - started < 0.02 * i:
                next(lines)
            t.start()
        while time.monotonic() - started < 0.02 * len(threads) + 0.5:
            next(lines)
        t0 = time.monotonic()
        ray.kill(replica_actor(doomed), no_restart=False)
        rest = [line for line in lines if line.startswith("data: ")]
        print(f"stream ended {time.monotonic() - t0:.1f}s after the kill, {len(rest)} events")
    for t in threads:
        t.join(timeout=90)
    for c in clients:
        c.close()
    print(f"all retried requests done {time.monotonic() - t0:.1f}s after the kill")
    # The stream had sent chunks: it cannot be replayed, it ends with an in-band error.
    assert rest[-1] == "data: [DONE]"
    error = json.loads(rest[-2][6:])["error"]
    assert error["code"] == "replica_died"
    # Every other request completed, exactly, on the surviving replica after retries.
    assert sorted(results) == list(range(len(prompts)))
    for i, res in results.items():
        assert res.status_code == 200, res.text
        assert res.json()["choices"][0]["text"] == refs[i].text
        assert res.headers[REPLICA_HEADER] != doomed
    assert any(int(res.headers["x-vibekit-attempts"]) > 1 for res in results.values())


def test_the_cli_refuses_a_bad_replica_count_before_starting_ray():
    from vibekit.cli import main

    with pytest.raises(ValueError, match="num_replicas=0 must be >= 1"):
        main(["serve", MODEL, "--replicas", "0"])


@pytest.mark.slow
def test_vibekit_serve_replicas_serves_and_stops_on_sigint(tmp_path):
    import signal
    import subprocess
    import sys

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "vibekit.cli", "serve", MODEL, "--replicas",
                             "2", "--port", str(port), "--num-threads", "1", "--replica-cpus",
                             "0.5", "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        res = complete(f"http://127.0.0.1:{port}", "hello there", max_tokens=3)
        assert res.status_code == 200 and res.json()["usage"]["completion_tokens"] == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
