"""A stack: a plan's Engine behind the OpenAI request shape that workloads produce.

The judge and the evaluator drive every candidate through this protocol, so what they measure
is what the rendered server.py serves:

    stack.add(request, request_id)   queue one request (a workload dict: prompt or messages,
                                     max_tokens, temperature, ..., prediction)
    stack.step() -> [StepEvent]      run one engine step; one event per request that advanced
    stack.has_unfinished() -> bool
    stack.abort(request_id)          drop a request (the benchmark cuts hopeless arms short)
    stack.activate()                 re-apply process-wide settings (threads) before use
    stack.engine                     the vibekit Engine (judges instrument engine.model)

A scenario whose stack is not one LLM Engine (an image pipeline) ships `stack.py` with
`build_stack(plan, scenario, workspace)` returning an object with the same methods: `add`,
`step` (StepEvents; `output` is the finished request's JSON-able result, given to the
scenario's checker; `num_new_tokens` counts the units its metric counts), `has_unfinished`,
`abort`, `activate`, `stream` and `run` (LLMStack's versions show the contract). Its knobs
live in the plan's [stack] section (`plan.get("stack.<name>")`). If it exposes `engine.model`
as a torch module the judge audits the forward; otherwise the audit is skipped with a warning
and the checker alone decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vibekit_agents.plan import Plan

__all__ = ["LLMStack", "StepEvent", "build_stack", "output_dict"]

# NOTE: torch's own default thread count, captured once in this process before any plan
# changes it, so that a plan with num_threads = 0 really gets the default back.
_DEFAULT_THREADS: int | None = None


@dataclass
class StepEvent:
    request_id: str
    num_new_tokens: int
    finished: bool
    output: dict[str, Any] | None  # set when finished
    delta_text: str = ""


def output_dict(out: Any) -> dict[str, Any]:
    u = out.usage
    return {
        "token_ids": list(out.token_ids), "text": out.text, "finish_reason": out.finish_reason,
        "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                  "cached_prompt_tokens": u.cached_prompt_tokens,
                  "accepted_prediction_tokens": u.accepted_prediction_tokens,
                  "rejected_prediction_tokens": u.rejected_prediction_tokens},
    }


class LLMStack:
    """Plan -> Engine, and workload requests -> engine calls."""

    def __init__(self, plan: Plan, workspace: Any = None) -> None:
        import torch

        global _DEFAULT_THREADS
        if _DEFAULT_THREADS is None:
            _DEFAULT_THREADS = torch.get_num_threads()
        self.plan = plan
        self.engine = plan.build_engine(workspace)

    def activate(self) -> None:
        import torch

        want = self.plan.num_threads or _DEFAULT_THREADS
        if want and torch.get_num_threads() != want:
            torch.set_num_threads(want)

    # -- requests -----------------------------------------------------------------------------

    def engine_args(self, request: dict[str, Any]) -> tuple[Any, Any, Any]:
        """(prompt, SamplingParams, prediction) for one OpenAI-shaped request."""
        from vibekit import SamplingParams

        if "messages" in request:
            prompt = self._chat_ids(request["messages"])
        else:
            prompt = request["prompt"]
        fields = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos",
                  "response_format")
        kwargs = {k: request[k] for k in fields if request.get(k) is not None}
        kwargs.setdefault("max_tokens", 16)
        kwargs.setdefault("temperature", 1.0)  # the OpenAI default
        params = SamplingParams(**kwargs)
        prediction = None
        pred = request.get("prediction")
        if self.plan.use_predictions and isinstance(pred, dict):
            if "content_token_ids" in pred:
                prediction = list(pred["content_token_ids"])
            elif isinstance(pred.get("content"), list):  # OpenAI text parts
                prediction = "".join(p.get("text", "") for p in pred["content"])
            else:
                prediction = pred.get("content")
        return prompt, params, prediction

    def _chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        tok = self.engine.tokenizer
        text = tok.apply_chat_template(list(messages), add_generation_prompt=True,
                                       tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def add(self, request: dict[str, Any], request_id: str) -> None:
        prompt, params, prediction = self.engine_args(request)
        if prediction is None:
            self.engine.add_request(prompt, params, request_id=request_id)
        else:
            self.engine.add_request(prompt, params, request_id=request_id, prediction=prediction)

    def step(self) -> list[StepEvent]:
        events = []
        for out in self.engine.step():
            events.append(StepEvent(out.request_id, len(out.delta_token_ids), out.finished,
                                    output_dict(out) if out.finished else None, out.delta_text))
        return events

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished_requests()

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)

    def stream(self, request: dict[str, Any], request_id: str = "stream-0"
               ) -> Iterator[StepEvent]:
        """Yield this request's events as steps advance it (the last one is finished)."""
        self.add(request, request_id)
        while True:
            for ev in self.step():
                if ev.request_id == request_id:
                    yield ev
                    if ev.finished:
                        return

    def run(self, requests: list[dict[str, Any]], concurrency: int = 1,
            prefix: str = "r") -> list[dict[str, Any]]:
        """Run requests closed-loop at `concurrency`; outputs in request order."""
        outputs: dict[int, dict[str, Any]] = {}
        pending = list(enumerate(requests))
        in_flight: dict[str, int] = {}
        while pending or in_flight:
            while pending and len(in_flight) < concurrency:
                i, req = pending.pop(0)
                rid = f"{prefix}{i}"
                self.add(req, rid)
                in_flight[rid] = i
            for ev in self.step():
                if ev.finished and ev.request_id in in_flight:
                    outputs[in_flight.pop(ev.request_id)] = ev.output
        return [outputs[i] for i in range(len(requests))]


def build_stack(plan: Plan, scenario: Any = None, workspace: Any = None) -> Any:
    """The scenario's own stack (stack.py: build_stack) if it has one, else an LLMStack."""
    if scenario is not None and scenario.has_module("stack"):
        return scenario.module("stack").build_stack(plan, scenario, workspace)
    return LLMStack(plan, workspace)
