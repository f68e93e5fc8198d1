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
`abort`, `activate`, `stream` and `run` (LLMStack's versions show the contract;
`run_closed_loop` implements `run` for any stack). Its knobs live in the plan's [stack] section
(`plan.get("stack.<name>")`). A scenario stack has no token forward audit (the harness audits
LLM Engines only); its checker judges every timed output.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vibekit_agents.audit import ForwardAudit, new_request_id
from vibekit_agents.plan import Plan

__all__ = ["LLMStack", "StepEvent", "build_stack", "output_dict", "run_closed_loop"]

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
    """Plan -> Engine, and workload requests -> engine calls (through vibekit.serve's own
    OpenAI request mapping, so the stack and the rendered server.py read a request alike)."""

    def __init__(self, plan: Plan, workspace: Any = None, audit: bool = False) -> None:
        import torch

        global _DEFAULT_THREADS
        if _DEFAULT_THREADS is None:
            _DEFAULT_THREADS = torch.get_num_threads()
        self.plan = plan
        self.audit: ForwardAudit | None = None

        def install(engine: Any) -> None:  # before the plan's extension code runs
            if audit and hasattr(engine.model, "register_forward_pre_hook"):
                self.audit = ForwardAudit(engine.model, engine.model_config.vocab_size)

        self.engine = plan.build_engine(workspace, before_extension=install)

    def activate(self) -> None:
        import torch

        want = self.plan.num_threads or _DEFAULT_THREADS
        if want and torch.get_num_threads() != want:
            torch.set_num_threads(want)

    # -- requests -----------------------------------------------------------------------------

    def engine_args(self, request: dict[str, Any]) -> tuple[Any, Any, Any]:
        """(prompt ids, SamplingParams, prediction) for one OpenAI-shaped request, mapped the
        way vibekit.serve maps an HTTP body (defaults, max_tokens, chat template)."""
        from vibekit.serve import prompts
        from vibekit.serve.prepare import render_request
        from vibekit.serve.protocol import ChatCompletionRequest, CompletionRequest
        from vibekit.serve.serving import sampling_params

        body = {"model": "scenario", **request}
        pred = body.get("prediction")
        token_pred = None
        if isinstance(pred, dict) and "content_token_ids" in pred:
            # A scenario extension of the OpenAI shape: the prediction as token ids (random-
            # weight models emit ids that are not valid text). serve takes text only.
            token_pred = list(pred["content_token_ids"])
            body.pop("prediction")
        tok, engine = self.engine.tokenizer, self.engine
        if "messages" in body:
            req: Any = ChatCompletionRequest.model_validate(body)
            text = render_request(tok, req)
            ids = prompts.encode(tok, text, add_special_tokens=False)
            param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            max_tokens = req.requested_max_tokens
        else:
            req = CompletionRequest.model_validate(body)
            if len(req.prompts) != 1:
                raise ValueError("a workload request must carry one prompt")
            ids = prompts.encode(tok, req.prompts[0], vocab_size=engine.model_config.vocab_size)
            param, max_tokens = "max_tokens", req.max_tokens
        req.check_supported()
        if req.n != 1:
            raise ValueError(f"a workload request must have n = 1, got {req.n}")
        budget = prompts.resolve_max_tokens(len(ids), max_tokens, engine.config.max_model_len,
                                            param)
        params = sampling_params(req, budget, 0, req.structured_format)
        prediction = token_pred if token_pred is not None else (
            req.prediction.text if req.prediction else None)
        return ids, params, prediction

    def add(self, request: dict[str, Any], request_id: str) -> None:
        prompt, params, prediction = self.engine_args(request)
        # The engine drops the prediction itself when the plan turns predictions off.
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

    def stream(self, request: dict[str, Any], request_id: str | None = None
               ) -> Iterator[StepEvent]:
        """Yield this request's events as steps advance it (the last one is finished)."""
        request_id = request_id or new_request_id()
        self.add(request, request_id)
        while True:
            for ev in self.step():
                if ev.request_id == request_id:
                    yield ev
                    if ev.finished:
                        return

    def run(self, requests: list[dict[str, Any]], concurrency: int = 1) -> list[dict[str, Any]]:
        """Run requests closed-loop at `concurrency`; outputs in request order."""
        return run_closed_loop(self, requests, concurrency)


def run_closed_loop(stack: Any, requests: list[dict[str, Any]], concurrency: int = 1
                    ) -> list[dict[str, Any]]:
    """Any stack's requests closed-loop at `concurrency`, each under a fresh random id."""
    outputs: dict[int, dict[str, Any]] = {}
    pending = list(enumerate(requests))
    in_flight: dict[str, int] = {}
    while pending or in_flight:
        while pending and len(in_flight) < concurrency:
            i, req = pending.pop(0)
            rid = new_request_id()
            stack.add(req, rid)
            in_flight[rid] = i
        for ev in stack.step():
            if ev.finished and ev.request_id in in_flight:
                outputs[in_flight.pop(ev.request_id)] = ev.output
    return [outputs[i] for i in range(len(requests))]


def build_stack(plan: Plan, scenario: Any = None, workspace: Any = None,
                audit: bool = False) -> Any:
    """The scenario's own stack (stack.py: build_stack) if it has one, else an LLMStack. With
    `audit`, an LLMStack carries a ForwardAudit installed before the plan's extension runs."""
    if scenario is not None and scenario.has_module("stack"):
        return scenario.module("stack").build_stack(plan, scenario, workspace)
    return LLMStack(plan, workspace, audit=audit)
