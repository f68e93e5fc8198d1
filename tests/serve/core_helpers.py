"""Engine factories for the engine core process in tests (module level: the core process
imports them by name)."""

from __future__ import annotations

import time

from vibekit import Engine

POISON = 200  # a token id no other prompt in these tests contains


def poisoned_engine(model: str, **options) -> Engine:
    """An engine whose model forward raises whenever the POISON token is in the batch."""
    engine = Engine.from_pretrained(model, **options)
    model_ = engine.runner.model
    real_forward = model_.forward

    def forward(input_ids, *args, **kwargs):
        if POISON in input_ids.tolist():
            raise RuntimeError("simulated kernel fault in the core")
        return real_forward(input_ids, *args, **kwargs)

    model_.forward = forward
    return engine


def slow_engine(model: str, **options) -> Engine:
    """An engine whose steps take at least 10 ms (so requests overlap predictably)."""
    engine = Engine.from_pretrained(model, **options)
    real_step = engine.step

    def slow_step():
        time.sleep(0.01)
        return real_step()

    engine.step = slow_step
    return engine


def broken_engine(model: str, **options) -> Engine:
    raise ValueError(f"cannot build {model}: simulated bad checkpoint")


HANG = 201  # a prompt with this token makes the forward sleep forever (a hung kernel)
SLOW = 202  # ... sleep 0.6 s once per step (slower than a heartbeat, not a stall)


def hanging_engine(model: str, **options) -> Engine:
    """An engine whose steps take at least 10 ms, whose forward never returns when the HANG
    token is in the batch, and takes 0.6 s more when the SLOW token is."""
    engine = slow_engine(model, **options)
    model_ = engine.runner.model
    real_forward = model_.forward

    def forward(input_ids, *args, **kwargs):
        ids = input_ids.tolist()
        if HANG in ids:
            while True:
                time.sleep(3600)
        if SLOW in ids:
            time.sleep(0.6)
        return real_forward(input_ids, *args, **kwargs)

    model_.forward = forward
    return engine


HANG_SCHEMA = "hang-forever"  # a response_format whose json_schema has this name never compiles


def slow_grammar_engine(model: str, **options) -> Engine:
    """An engine whose grammar compile never returns for a json_schema named HANG_SCHEMA (a
    pathological schema); every other format compiles as usual."""
    engine = Engine.from_pretrained(model, **options)
    grammars = engine.grammars
    real = grammars.request_grammar

    def request_grammar(response_format):
        if (response_format or {}).get("json_schema", {}).get("name") == HANG_SCHEMA:
            while True:
                time.sleep(3600)
        return real(response_format)

    grammars.request_grammar = request_grammar
    return engine
