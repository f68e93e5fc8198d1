"""streaming-asr stack: audio streams fed at real-time pace to vibekit.SpeechEngine, behind the
stack protocol of vibekit_agents.stack (add, step, has_unfinished, abort, activate, stream,
run).

`add` takes a workload request (its audio by seed, its chunk size) and starts the stream's
clock: chunk k is due chunk_seconds * k after the add, and is appended only once due; after
the last chunk the stream ends. `step` appends what is due, steps the engine (or sleeps until
the next chunk when nothing else can run) and reports one event per stream whose transcript
grew; the finished output carries token_ids, text, the per-chunk latencies (from a chunk's due
time to the first token of a hypothesis covering it) and the audio seconds.

Knobs (plan section [stack], the streaming-asr skill):
    max_num_seqs        hypotheses decoded together per step
    min_encode_seconds  new audio a stream buffers before it is encoded and re-decoded (0: every
                        chunk; larger: fewer re-decodes, later first tokens)
    page_size           KV page size of both pools
    max_num_batched_frames  new 5 ms frames encoded per step over all streams, oldest stream
                        first (0: no limit); the encoder's batch limit
Threads come from the plan's [runtime] num_threads (the cpu-threads skill). None of these
changes a transcript.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Feed:
    audio: Any  # float32 [n]
    chunk: int
    start: float
    sent: int = 0  # samples appended to the engine
    due_times: list[float] = field(default_factory=list)
    ended: bool = False
    ids: list[int] = field(default_factory=list)


class ASRStack:
    def __init__(self, plan: Any, scenario: Any = None) -> None:
        import torch

        from vibekit import SpeechEngine

        source = scenario.resolved_model()[0] if scenario is not None else \
            "dummy:moonshine-streaming-micro"
        self.threads = plan.num_threads or torch.get_num_threads()
        self.min_encode = float(plan.get("stack.min_encode_seconds", 0.0) or 0.0)
        frames = int(plan.get("stack.max_num_batched_frames", 0) or 0)
        self.engine = SpeechEngine.from_pretrained(
            source, max_num_seqs=int(plan.get("stack.max_num_seqs", 64)),
            page_size=int(plan.get("stack.page_size", 16)), max_tokens=64,
            max_num_batched_frames=frames or None)
        self.workload = scenario.module("workload") if scenario is not None else None
        self.feeds: dict[str, _Feed] = {}

    def activate(self) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def add(self, request: dict, request_id: str) -> None:
        for key in ("audio", "chunk_seconds", "max_tokens"):
            if key not in request:
                raise ValueError(f"a streaming-asr request needs {key!r}")
        audio = self.workload.audio_for(request)
        rate = request["audio"]["sample_rate"]
        self.engine.add_request(stream=True, request_id=request_id, sample_rate=rate,
                                max_tokens=int(request["max_tokens"]))
        self.feeds[request_id] = _Feed(audio, max(1, int(request["chunk_seconds"] * rate)),
                                       time.monotonic())

    def _feed(self, now: float) -> float:
        """Append every due chunk; return the time the next chunk is due (inf: none)."""
        next_due = float("inf")
        for rid, f in self.feeds.items():
            if f.ended:
                continue
            num_due = min(len(f.audio), (int((now - f.start) / (f.chunk / 16000)) + 1) * f.chunk)
            buffered = num_due - f.sent
            whole = num_due >= len(f.audio)
            if buffered > 0 and (whole or buffered >= self.min_encode * 16000):
                while f.sent < num_due:  # chunk by chunk: each one's latency from its due time
                    due = f.start + (f.sent // f.chunk) * f.chunk / 16000
                    end = min(num_due, f.sent + f.chunk)
                    self.engine.append_audio(rid, f.audio[f.sent:end], arrived_at=due)
                    f.sent = end
            if f.sent >= len(f.audio):
                self.engine.end_audio(rid)
                f.ended = True
            else:
                next_due = min(next_due, f.start + (num_due // f.chunk) * f.chunk / 16000)
        return next_due

    def step(self) -> list:
        from vibekit_agents.stack import StepEvent

        next_due = self._feed(time.monotonic())
        busy = any(not s.hyp_done or s.num_pending >= self.engine.frame_len
                   or (s.ended and not s.flushed) for s in self.engine.streams.values())
        if not busy:
            wait = next_due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.05))
            return []
        events = []
        for out in self.engine.step():
            f = self.feeds.get(out.request_id)
            if f is None:
                continue
            f.due_times += out.chunk_latencies
            if out.finished:
                self.feeds.pop(out.request_id)
                output = {"token_ids": out.token_ids, "text": out.text,
                          "finish_reason": out.finish_reason, "error": out.error,
                          "chunk_ttft_s": f.due_times, "audio_seconds": out.audio_seconds}
                events.append(StepEvent(out.request_id, 0, True, output))
            else:
                events.append(StepEvent(out.request_id, 1 if out.delta_text or out.token_ids
                                        else 0, False, None, out.delta_text))
        return events

    def has_unfinished(self) -> bool:
        return bool(self.feeds)

    def abort(self, request_id: str) -> None:
        self.feeds.pop(request_id, None)
        self.engine.abort(request_id)

    def stream(self, request: dict, request_id: str | None = None):
        from vibekit_agents.audit import new_request_id

        request_id = request_id or new_request_id()
        self.add(request, request_id)
        while request_id in self.feeds:
            for ev in self.step():
                if ev.request_id == request_id:
                    yield ev
                    if ev.finished:
                        return

    def run(self, requests: list[dict], concurrency: int = 1) -> list:
        from vibekit_agents.stack import run_closed_loop

        return run_closed_loop(self, requests, concurrency)


def build_stack(plan: Any, scenario: Any = None, workspace: Any = None) -> ASRStack:
    return ASRStack(plan, scenario)
