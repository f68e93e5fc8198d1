"""scenarios/streaming-asr: its stack, fed at real-time pace, gives the reference's (HF
generate's) final transcripts, and its checker catches a wrong one."""

from __future__ import annotations

from pathlib import Path

import pytest

from vibekit_agents.scenario import load_scenario
from vibekit_agents.stack import run_closed_loop

ROOT = Path(__file__).resolve().parents[2] / "scenarios" / "streaming-asr"


class _Plan:
    num_threads = 1

    def __init__(self, **stack):
        self.stack = stack

    def get(self, key, default=None):
        return self.stack.get(key.removeprefix("stack."), default)


@pytest.mark.slow  # real-time pace plus HF generate: ~30 s on a loaded 2-core machine
def test_stack_transcripts_equal_the_reference_and_the_checker_catches_a_change():
    sc = load_scenario(ROOT)
    workload, reference, checker = (sc.module(n) for n in ("workload", "reference", "checker"))
    requests = workload.make_requests(0, 3, audio_seconds=0.4, chunk_seconds=0.08, max_tokens=5)
    refs = reference.reference_outputs(requests, model=sc.resolved_model()[0])
    stack = sc.module("stack").build_stack(_Plan(max_num_seqs=2, min_encode_seconds=0.16), sc)
    outputs = run_closed_loop(stack, requests, concurrency=3)
    verdict = checker.check(outputs, refs)
    assert verdict["passed"], verdict
    assert verdict["chunk_ttft_p50_s"] is not None
    assert sum(len(o["chunk_ttft_s"]) for o in outputs) == 3 * 5  # every chunk got a first token
    bad = [dict(outputs[0], token_ids=outputs[0]["token_ids"][:-1])] + outputs[1:]
    assert not checker.check(bad, refs)["passed"]
