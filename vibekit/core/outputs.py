"""What the engine returns: RequestOutput and Usage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    """Token counts in the OpenAI sense, plus what the caches and drafts saved."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class RequestOutput:
    """The state of one request after a step (cumulative), plus what changed in that step.

    token_ids / text: everything generated so far. delta_token_ids / delta_text: new in this step
    (for streaming; text that might still turn out to be part of a stop string is held back until
    it cannot). finish_reason: None while running, else "stop", "length" or "abort".
    """

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    usage: Usage
    delta_token_ids: list[int] = field(default_factory=list)
    delta_text: str = ""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @classmethod
    def snapshot(cls, request_id: str, prompt_token_ids: list[int], ids: list[int],
                 start: int, end: int, text: str, finish_reason: str | None, usage: Usage,
                 delta_token_ids: list[int], delta_text: str) -> RequestOutput:
        """An output whose token_ids is ids[start:end], copied only when it is first read.

        A stream reads the deltas of every output and rarely the cumulative ids; copying a
        request's whole output into every step's RequestOutput costs O(n) per step, O(n^2)
        per request (37 us per token at 16k tokens). The caller keeps `ids` append-only from
        here on (the engine's Request.token_ids and the server client's list are), so the
        slice read later is the one of this moment.
        """
        out = cls.__new__(cls)
        d = out.__dict__
        d["request_id"] = request_id
        d["prompt_token_ids"] = prompt_token_ids
        d["_ids"] = (ids, start, end)
        d["text"] = text
        d["finish_reason"] = finish_reason
        d["usage"] = usage
        d["delta_token_ids"] = delta_token_ids
        d["delta_text"] = delta_text
        return out

    def with_deltas(self, delta_token_ids: list[int], delta_text: str) -> RequestOutput:
        """This output with other deltas (a stream merging queued outputs), still lazy."""
        d = self.__dict__
        if type(self) is not RequestOutput:
            return dataclasses.replace(self, delta_token_ids=delta_token_ids,
                                       delta_text=delta_text)
        lazy = d.get("_ids")
        if lazy is None:
            return RequestOutput(self.request_id, self.prompt_token_ids, d["token_ids"],
                                 self.text, self.finish_reason, self.usage, delta_token_ids,
                                 delta_text)
        return RequestOutput.snapshot(self.request_id, self.prompt_token_ids, lazy[0], lazy[1],
                                      lazy[2], self.text, self.finish_reason, self.usage,
                                      delta_token_ids, delta_text)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: token_ids of a snapshot not read yet
        if name == "token_ids":
            # NOTE: set before the source is dropped, so a reader on another thread finds one
            d = self.__dict__
            lazy = d.get("_ids")
            if lazy is not None:
                ids, start, end = lazy
                value = d["token_ids"] = ids[start:end]
                d.pop("_ids", None)
                return value
            if "token_ids" in d:
                return d["token_ids"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        self.token_ids  # noqa: B018 - materialize: a pickle carries the slice, not the source
        return self.__dict__
