"""Concurrency, client disconnects and /metrics."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from .conftest import MODEL, greedy

NUM_CONCURRENT = 64


def test_concurrent_streams_all_complete_with_the_reference_text(server, reference):
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    prompts = [f"Request {i}: " + " ".join(rng.choices(words, k=rng.randint(1, 12)))
               for i in range(NUM_CONCURRENT)]
    max_tokens = [rng.randint(4, 20) for _ in prompts]
    refs = reference.generate(prompts, [greedy(m, ignore_eos=True) for m in max_tokens])

    async def one(client: openai.AsyncOpenAI, prompt: str, n: int) -> tuple[str, list[int], str]:
        stream = await client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=n, temperature=0, stream=True,
            extra_body={"ignore_eos": True, "return_token_ids": True})
        text, ids, finish = "", [], None
        async for chunk in stream:
            choice = chunk.choices[0]
            text += choice.text
            ids += choice.model_extra["token_ids"]
            finish = choice.finish_reason or finish
        return text, ids, finish

    async def run() -> list[tuple[str, list[int], str]]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0,
                                      timeout=120) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(one(client, p, n) for p, n in zip(prompts, max_tokens))), 120)

    before = server.engine.stats()
    results = asyncio.run(run())
    assert len(results) == NUM_CONCURRENT
    for (text, ids, finish), ref in zip(results, refs):
        assert ids == ref.token_ids
        assert text == ref.text
        assert finish == "length"
    after = server.wait_idle()
    assert after["num_finished_length"] - before["num_finished_length"] == NUM_CONCURRENT
    assert after["num_completion_tokens"] - before["num_completion_tokens"] == sum(max_tokens)


def _abort_count(server) -> float:
    return server.engine.stats()["num_finished_abort"]


def test_client_that_disconnects_mid_stream_frees_its_pages(server, http):
    aborted = _abort_count(server)
    body = {"model": MODEL, "prompt": "Tell me a very long story.", "max_tokens": 900,
            "temperature": 0, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert server.engine.stats()["kv_usage"] > 0  # the request holds pages right now
    stats = server.wait_idle()
    assert stats["num_finished_abort"] == aborted + 1
    assert _metric(http, "vibekit_kv_cache_usage_ratio") == 0.0
    assert _metric(http, "vibekit_num_requests_running") == 0.0


def test_openai_client_closing_a_stream_aborts_the_request(server, client):
    aborted = _abort_count(server)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "go on and on"}], max_tokens=900,
        temperature=0, stream=True, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert server.wait_idle()["num_finished_abort"] == aborted + 1


def test_non_streaming_client_that_times_out_is_aborted(server):
    aborted = _abort_count(server)
    body = {"model": MODEL, "prompt": "wait for me", "max_tokens": 1000, "temperature": 0,
            "ignore_eos": True, "n": 2}
    start = time.monotonic()
    try:
        # NOTE: 0.1 s: with the CPU attention kernel 2 x 1000 tiny-llama tokens can finish in
        # under 0.5 s, and max_model_len (1024) caps max_tokens.
        httpx.post(server.base_url + "/completions", json=body, timeout=0.1)
    except httpx.TimeoutException:
        pass
    else:
        raise AssertionError("a 1000-token request finished in under 0.1 s; raise max_tokens")
    stats = server.wait_idle()
    assert stats["num_finished_abort"] == aborted + 2
    assert time.monotonic() - start < 10


def _metric(http, name: str) -> float:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


def test_metrics_parse_as_prometheus_text(client, http, server):
    client.completions.create(model=MODEL, prompt="count me", max_tokens=3, temperature=0,
                              extra_body={"ignore_eos": True})
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name, kind in [("vibekit_requests", "counter"), ("vibekit_prompt_tokens", "counter"),
                       ("vibekit_generation_tokens", "counter"),
                       ("vibekit_num_requests_running", "gauge"),
                       ("vibekit_num_requests_waiting", "gauge"),
                       ("vibekit_kv_cache_usage_ratio", "gauge"),
                       ("vibekit_prefix_cache_hit_rate", "gauge")]:
        assert families[name].type == kind, name
    by_reason = {s.labels["finish_reason"]: s.value for s in families["vibekit_requests"].samples}
    assert set(by_reason) == {"stop", "length", "abort", "deadline", "error"}
    assert by_reason["length"] >= 1
    stats = server.engine.stats()
    assert families["vibekit_generation_tokens"].samples[0].value >= 3
    assert 0.0 <= families["vibekit_prefix_cache_hit_rate"].samples[0].value <= 1.0
    assert by_reason["length"] <= stats["num_finished_length"]
    assert families["vibekit_engine_healthy"].samples[0].value == 1.0
