"""What the harness measures about a candidate itself, never taking the candidate's word.

    new_request_id()   the one id scheme of every request a candidate sees (judge runs, warm-up,
                       timed benchmark requests): random, so no id tells a timed request from a
                       checked one
    clock              time.perf_counter bound when this module is imported, before any
                       candidate code runs (a candidate that rebinds time.perf_counter does not
                       change it)
    ForwardAudit       a forward pre-hook the harness installs on the model before the plan's
                       extension code runs. It counts forward calls, query tokens and a histogram
                       of the token ids that went in. A window of it must cover what the outputs
                       of that window need: every output token but the last of each request was
                       an input of some forward (a decode step or a verify block), plus at least
                       one prompt token per request. Counting ids (not just tokens) defeats
                       padding the count with junk forwards; checking the hook is still in place
                       and the engine still runs the audited module defeats removing it.
    usage_findings     the candidate's usage numbers must agree with the output it returned

Known limit: all of this runs in the candidate's process. A candidate that forwards the exact
output tokens in one cheap block (a replay dressed as a verify block) satisfies the histogram;
that is speculative decoding with the earlier output as the draft, which the checker and the
audit accept by design. The sandbox refuses writes outside a scratch folder, so no such draft
survives from one process to the next.
"""

from __future__ import annotations

import secrets
from collections import Counter
from time import perf_counter as clock
from typing import Any

__all__ = ["ForwardAudit", "clock", "new_request_id", "usage_findings"]


def new_request_id() -> str:
    return f"cmpl-{secrets.token_hex(12)}"


class ForwardAudit:
    """Counts what goes through `model`'s forward. Install it before any extension code runs."""

    def __init__(self, model: Any, vocab_size: int) -> None:
        import torch

        self.model = model
        self.vocab_size = int(vocab_size)
        self.calls = 0
        self.tokens = 0
        self.histogram = torch.zeros(self.vocab_size + 1, dtype=torch.int64)  # last: out of range
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, args: tuple) -> None:
        import torch

        self.calls += 1
        if not args or not hasattr(args[0], "reshape"):
            return
        ids = args[0].reshape(-1).to("cpu", torch.int64)
        self.tokens += int(ids.numel())
        ids = torch.where((ids >= 0) & (ids < self.vocab_size), ids, self.vocab_size)
        self.histogram += torch.bincount(ids, minlength=self.vocab_size + 1)

    def snapshot(self) -> tuple[int, int, Any]:
        return self.calls, self.tokens, self.histogram.clone()

    def intact(self, engine: Any) -> str | None:
        """Why the audit no longer sees the forward, or None when it still does."""
        if getattr(engine, "model", None) is not self.model:
            return "the engine's model was replaced after the harness installed its audit"
        runner = getattr(engine, "runner", None)
        if runner is not None and getattr(runner, "model", self.model) is not self.model:
            return "the model runner's model was replaced after the harness installed its audit"
        hooks = getattr(self.model, "_forward_pre_hooks", {})
        if self._handle.id not in hooks:
            return "the harness's forward hook was removed"
        return None

    def check_window(self, since: tuple[int, int, Any], outputs: list[dict], where: str,
                     engine: Any = None) -> list[str]:
        """Findings when the forwards since `since` cannot have produced `outputs`."""
        findings = []
        if engine is not None:
            why = self.intact(engine)
            if why:
                return [f"{where}: {why}"]
        calls0, tokens0, hist0 = since
        tokens = self.tokens - tokens0
        need_total = sum(len(o.get("token_ids") or []) for o in outputs)
        if tokens < need_total:
            findings.append(f"{where}: {tokens} tokens went through the model but the "
                            f"{len(outputs)} output(s) need at least {need_total}")
            return findings
        need = Counter()
        for o in outputs:
            need.update((o.get("token_ids") or [])[:-1])
        delta = (self.histogram - hist0).tolist()
        missing = sum(max(0, n - delta[t if 0 <= t < self.vocab_size else self.vocab_size])
                      for t, n in need.items())
        if missing:
            findings.append(f"{where}: {missing} output token(s) never went into the model's "
                            f"forward (an output served without computing it)")
        return findings


def usage_findings(output: Any, where: str) -> list[str]:
    """The reported usage must match the returned tokens (the metric counts token_ids)."""
    if not isinstance(output, dict):
        return []  # a pipeline's output (an image): no token accounting
    usage = output.get("usage") or {}
    ids = output.get("token_ids")
    n = usage.get("completion_tokens")
    if ids is not None and n is not None and n != len(ids):
        return [f"{where}: usage reports {n} completion tokens but the output has {len(ids)}"]
    return []
