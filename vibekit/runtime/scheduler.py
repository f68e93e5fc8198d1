"""Continuous batching: pick the requests and token counts of the next step under a token budget."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vibekit.config import SchedulerConfig
from vibekit.kvcache import KVCacheManager
from vibekit.runtime.request import Request, RequestStatus
from vibekit.ssm import HybridStateManager


@dataclass
class ScheduledBatch:
    """The work of one step: request i feeds `num_new_tokens[i]` query tokens starting at its
    num_computed_tokens — its own tokens followed by `drafts[i]` (a verify block) — and samples
    afterwards when `samples[i]` is set (one row, or one per draft token plus one)."""

    requests: list[Request] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    samples: list[bool] = field(default_factory=list)
    drafts: list[list[int]] = field(default_factory=list)
    page_copies: list[tuple[int, int]] = field(default_factory=list)  # copy-on-write (src, dst)
    num_preempted: int = 0

    def add(self, req: Request, num_new: int, draft: list[int]) -> None:
        self.requests.append(req)
        self.num_new_tokens.append(num_new)
        self.drafts.append(draft)
        self.samples.append(
            req.num_computed_tokens + num_new - len(draft) == len(req.token_ids)
        )

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __len__(self) -> int:
        return len(self.requests)


class Scheduler:
    """Running requests first (decodes and unfinished prefill chunks), then waiting ones while
    the token budget, `max_num_seqs` and free pages allow. When pages run out, the most recently
    arrived running request is preempted: its pages are freed and it is recomputed later (its
    prefix usually comes back from the prefix cache)."""

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, max_model_len: int) -> None:
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.max_num_seqs = config.max_num_seqs
        self.chunked_prefill = config.enable_chunked_prefill
        self.kv = kv
        self.page_size = kv.page_size
        self.max_model_len = max_model_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.state: HybridStateManager | None = None  # hybrid models: set by the engine

    # -- queue management ---------------------------------------------------------------------

    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        self.waiting.append(req)
        if self.state is not None:
            self.state.on_add(req)

    def finish(self, req: Request, reason: str) -> None:
        """Mark finished, release its pages, drop it from the queues."""
        req.finish_reason = reason
        if req.status is RequestStatus.RUNNING:
            self.running.remove(req)
        elif req.status is RequestStatus.WAITING:
            self.waiting.remove(req)
        req.status = RequestStatus.FINISHED
        self.kv.free(req.page_table)
        if self.state is not None:
            self.state.release(req, finished=True)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    # -- scheduling ---------------------------------------------------------------------------

    def _preempt(self, req: Request) -> None:
        self.kv.free(req.page_table)
        if self.state is not None:
            self.state.release(req, finished=False)
        req.num_computed_tokens = 0
        req.status = RequestStatus.WAITING
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens

        # 1. Requests already running: one decode token each, or the next prefill chunk.
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = min(len(req.token_ids) - req.num_computed_tokens, budget)
            if self.state is not None:
                num_new = self.state.cap_chunk(req, req.num_computed_tokens, num_new)
            draft = self._draft(req, req.num_computed_tokens + num_new, budget - num_new)
            if draft and not self.kv.can_allocate(req.page_table, num_new + len(draft)):
                draft = []  # verify later; never preempt others for a speculative block
            num_new += len(draft)
            scheduled = True
            while not self.kv.can_allocate(req.page_table, num_new):
                victim = self.running.pop()
                self._preempt(victim)
                batch.num_preempted += 1
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            batch.page_copies += self.kv.allocate(req.page_table, num_new)
            batch.add(req, num_new, draft)
            budget -= num_new
            i += 1

        # 2. Admit waiting requests (not in a step that had to preempt: memory is tight).
        while (self.waiting and budget > 0 and batch.num_preempted == 0
               and len(self.running) < self.max_num_seqs):
            req = self.waiting[0]
            pages, hashes = self._match_prefix(req)
            if self.state is not None and self.state.should_wait(req):
                break  # a running prefill is about to snapshot a longer shared prefix
            num_cached = len(pages) * self.page_size
            num_new = len(req.token_ids) - num_cached
            if num_new > budget:
                if not self.chunked_prefill:
                    break  # whole prompts only; the engine checked one always fits the budget
                num_new = budget
            if self.state is not None and self.chunked_prefill:
                num_new = self.state.cap_chunk(req, num_cached, num_new)
            if not self.kv.can_allocate(req.page_table, num_new, pages):
                break
            req.num_computed_tokens = num_cached
            draft = self._draft(req, num_cached + num_new, budget - num_new)
            if draft and not self.kv.can_allocate(req.page_table, num_new + len(draft), pages):
                draft = []
            num_new += len(draft)
            batch.page_copies += self.kv.allocate(req.page_table, num_new, pages, hashes)
            if self.state is not None:
                self.state.admit(req, num_cached)  # a state slot, restored from the snapshot
            if req.num_cached_prompt_tokens < 0:
                req.num_cached_prompt_tokens = min(num_cached, req.num_prompt_tokens)
            self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            batch.add(req, num_new, draft)
            budget -= num_new
        return batch

    @staticmethod
    def _draft(req: Request, computed_after: int, budget: int) -> list[int]:
        """Draft tokens to verify after this step's own tokens: only when the step reaches the end
        of the request's tokens (it samples), within the budget, and never past what the request
        may still emit (the block emits up to len(draft) + 1 tokens). With a grammar, the draft
        is cut at its first forbidden token, or (no prediction) holds jump-forward tokens."""
        if ((req.drafter is None and req.grammar is None)
                or computed_after != len(req.token_ids) or budget <= 0):
            return []
        room = min(budget, req.max_len - len(req.token_ids) - 1)
        draft = None if req.drafter is None else req.drafter.propose(req.output_token_ids, room)
        if req.grammar is not None:
            return req.grammar.propose(draft, req.output_token_ids, room)
        return draft

    def _match_prefix(self, req: Request) -> tuple[list[int], list[int]]:
        pages, hashes = self.kv.match_prefix(req.token_ids, req.extra.get("cache_key"))
        # At least one token must be computed so the step yields logits to sample from.
        max_pages = (len(req.token_ids) - 1) // self.page_size
        if self.state is not None:  # hybrid: only up to the last page with a state snapshot
            return self.state.match(req, pages[:max_pages], hashes[:max_pages])
        return pages[:max_pages], hashes[:max_pages]
