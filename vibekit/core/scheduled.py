"""ScheduledBatch: the work of one step, and the layout of its sampling rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from vibekit.core.request import Request


@dataclass(slots=True)
class SampleGroup:
    """The logits rows one request samples from in a step: `rows` = [start, start + num_rows),
    one row for a plain decode or the end of a prefill, `len(draft) + 1` for a verify block
    (row i predicts the token after draft[:i])."""

    index: int  # position of the request in ScheduledBatch.requests
    request: Request
    draft: list[int]
    start: int
    # Guidance: the row (and batch index) of the unconditional companion's logits, else -1.
    aux_row: int = -1
    aux_index: int = -1

    @property
    def num_rows(self) -> int:
        return len(self.draft) + 1

    @property
    def rows(self) -> range:
        return range(self.start, self.start + len(self.draft) + 1)


@dataclass
class ScheduledBatch:
    """Request i feeds `num_new_tokens[i]` query tokens starting at its num_computed_tokens: its
    own tokens followed by `drafts[i]` (a verify block). It samples afterwards when the step
    reaches the end of its tokens; `groups` lists those requests with their logits rows, in
    order (the one place the row layout is computed)."""

    requests: list[Request] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    drafts: list[list[int]] = field(default_factory=list)
    groups: list[SampleGroup] = field(default_factory=list)
    num_preempted: int = 0
    num_rows: int = 0

    def add(self, req: Request, num_new: int, draft: list[int]) -> None:
        index = len(self.requests)
        self.requests.append(req)
        self.num_new_tokens.append(num_new)
        self.drafts.append(draft)
        if req.num_computed_tokens + num_new - len(draft) == len(req.token_ids):
            self.groups.append(SampleGroup(index, req, draft, self.num_rows))
            self.num_rows += len(draft) + 1

    def add_aux(self, companion: Request, num_new: int) -> None:
        """Schedule `companion` (a guided request's unconditional sequence) right after the
        request it guides, which samples this step: its last row becomes that group's aux row."""
        group = self.groups[-1]
        assert group.index == len(self.requests) - 1 and not group.draft, \
            "a companion follows the sampling request it guides, which has no draft"
        group.aux_index = len(self.requests)
        group.aux_row = self.num_rows
        self.requests.append(companion)
        self.num_new_tokens.append(num_new)
        self.drafts.append([])
        self.num_rows += 1

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __len__(self) -> int:
        return len(self.requests)
