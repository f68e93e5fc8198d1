"""Continuous batching: pick the requests and token counts of the next step under a token
budget, and after the forward commit what it computed (or roll back rejected drafts)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from vibekit.config import SchedulerConfig
from vibekit.core.cache import Cache
from vibekit.core.request import Request, RequestStatus
from vibekit.core.scheduled import ScheduledBatch


class Scheduler:
    """Running requests first (decodes and unfinished prefill chunks), then waiting ones while
    the token budget, `max_num_seqs` and the cache allow. When the cache runs out, the most
    recently arrived running request is preempted: its cache entries are freed and it is
    recomputed later (its prefix usually comes back from the prefix cache).

    The scheduler sees the model's caches only through the cache protocol (vibekit.core.cache).
    """

    def __init__(self, config: SchedulerConfig, cache: Cache) -> None:
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.max_num_seqs = config.max_num_seqs
        self.chunked_prefill = config.enable_chunked_prefill
        self.cache = cache
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    # -- queue management ---------------------------------------------------------------------

    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        self.waiting.append(req)
        self.cache.add(req)

    def finish(self, req: Request, reason: str) -> None:
        """Mark finished, release its cache entries, drop it from the queues."""
        req.finish_reason = reason
        if req.status is RequestStatus.RUNNING:
            self.running.remove(req)
        elif req.status is RequestStatus.WAITING:
            self.waiting.remove(req)
        req.status = RequestStatus.FINISHED
        self.cache.free(req, finished=True)
        if req.guidance is not None:
            self.cache.free(req.guidance.uncond, finished=True)
            req.guidance.uncond.status = RequestStatus.FINISHED

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
        self.cache.free(req, finished=False)
        req.num_computed_tokens = 0
        if req.guidance is not None:  # its companion is recomputed with it
            self.cache.free(req.guidance.uncond, finished=False)
            req.guidance.uncond.num_computed_tokens = 0
        req.status = RequestStatus.WAITING
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        cache = self.cache

        # 1. Requests already running: one decode token each, or the next prefill chunk.
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = min(len(req.token_ids) - req.num_computed_tokens, budget)
            num_new = cache.chunk_limit(req, req.num_computed_tokens, num_new)
            draft = self._draft(req, req.num_computed_tokens + num_new, budget - num_new)
            if draft and not cache.can_allocate(req, num_new + len(draft)):
                draft = []  # verify later; never preempt others for a speculative block
            num_new += len(draft)
            companion, num_aux = self._companion(req, req.num_computed_tokens + num_new)
            if companion is not None:
                if not self._make_room(req, companion, num_aux, batch):
                    break
                cache.allocate(companion, num_aux)
            if not self._make_room(req, req, num_new, batch):
                break
            cache.allocate(req, num_new, len(draft))
            batch.add(req, num_new, draft)
            if companion is not None:
                batch.add_aux(companion, num_aux)
            budget -= num_new + num_aux
            i += 1

        # 2. Admit waiting requests (not in a step that had to preempt: memory is tight).
        while (self.waiting and budget > 0 and batch.num_preempted == 0
               and len(self.running) < self.max_num_seqs):
            req = self.waiting[0]
            match = cache.match(req)
            if match.wait:
                break  # a running prefill is about to cache a longer shared prefix
            num_cached = match.num_cached_tokens
            num_new = len(req.token_ids) - num_cached
            if num_new > budget:
                if not self.chunked_prefill:
                    break  # whole prompts only; the engine checked one always fits the budget
                num_new = budget
            if self.chunked_prefill:
                num_new = cache.chunk_limit(req, num_cached, num_new)
            companion, num_aux = self._companion(req, num_cached + num_new)
            # NOTE: a page more than the two need apart, so the companion's pages never evict
            # the cached prefix this match found.
            spare = num_aux + cache.page_size if companion is not None else 0
            if not cache.can_admit(req, match, num_new + spare):
                break
            req.num_computed_tokens = num_cached
            draft = self._draft(req, num_cached + num_new, budget - num_new)
            if draft and not cache.can_admit(req, match, num_new + len(draft)):
                draft = []
            num_new += len(draft)
            cache.admit(req, match, num_new, len(draft))
            if companion is not None:
                cache.allocate(companion, num_aux)
            if req.num_cached_prompt_tokens < 0:
                req.num_cached_prompt_tokens = min(num_cached, req.num_prompt_tokens)
            self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            batch.add(req, num_new, draft)
            if companion is not None:
                batch.add_aux(companion, num_aux)
            budget -= num_new + num_aux
        return batch

    def _make_room(self, req: Request, target: Request, num_new: int,
                   batch: ScheduledBatch) -> bool:
        """Preempt the most recently arrived running requests until `target` (req itself, or
        its guidance companion) can reserve num_new slots; False if req itself was preempted."""
        while not self.cache.can_allocate(target, num_new):
            victim = self.running.pop()
            self._preempt(victim)
            batch.num_preempted += 1
            if victim is req:
                return False
        return True

    @staticmethod
    def _companion(req: Request, computed_after: int) -> tuple[Request | None, int]:
        """A guided request's unconditional companion, and the tokens it must catch up, when
        the request samples this step and its CFG cache runs the unconditional branch."""
        guidance = req.guidance
        if (guidance is None or computed_after != len(req.token_ids)
                or not guidance.runs_uncond(req.num_output_tokens)):
            return None, 0
        companion = guidance.uncond
        return companion, len(companion.token_ids) - companion.num_computed_tokens

    @staticmethod
    def _draft(req: Request, computed_after: int, budget: int) -> list[int]:
        """Draft tokens to verify after this step's own tokens: only when the step reaches the end
        of the request's tokens (it samples), within the budget, and never past what the request
        may still emit (the block emits up to len(draft) + 1 tokens). With a grammar, the draft
        is cut at its first forbidden token, or (no prediction) holds jump-forward tokens."""
        if ((req.drafter is None and req.grammar is None) or req.guidance is not None
                or computed_after != len(req.token_ids) or budget <= 0):
            return []
        room = min(budget, req.max_len - len(req.token_ids) - 1)
        draft = None if req.drafter is None else req.drafter.propose(req.output_token_ids, room)
        if req.grammar is not None:
            return req.grammar.propose(draft, req.output_token_ids, room)
        return draft

    # -- after the forward --------------------------------------------------------------------

    def undo(self, batch: ScheduledBatch) -> None:
        """The step's forward raised: give back what `schedule` reserved, so the next schedule
        computes exactly what this one would have (requests whose cache cannot be restored are
        requeued for recompute)."""
        requeued: set[int] = set()  # companions freed with the request they guide
        for req, n in zip(batch.requests, batch.num_new_tokens):
            if id(req) in requeued or self.cache.abort_step(req, n):
                continue
            self.running.remove(req)
            self._preempt(req)
            if req.guidance is not None:
                requeued.add(id(req.guidance.uncond))

    def postprocess(self, batch: ScheduledBatch, emitted: list[list[int]],
                    append_token: Callable[[Request, int], str | None]) -> list[Request]:
        """Commit one step: advance each request past what it computed, roll back rejected
        drafts, append emitted tokens (`append_token` returns a finish reason, or None), finish
        requests that stopped. Returns the requests that emitted tokens, in batch order.

        emitted[j] belongs to batch.groups[j]: the accepted draft tokens plus the model's next
        token."""
        cache = self.cache
        sampled = {g.index: (g, tokens) for g, tokens in zip(batch.groups, emitted, strict=True)}
        out: list[Request] = []
        for i, (req, n) in enumerate(zip(batch.requests, batch.num_new_tokens)):
            if req.finished:
                continue  # the companion of a guided request that just finished
            reason = None
            group_tokens = sampled.get(i)
            if group_tokens is None:
                req.num_computed_tokens += n  # a prefill chunk that does not sample yet
            else:
                group, tokens = group_tokens
                draft = group.draft
                num_accepted = len(tokens) - 1
                num_rejected = len(draft) - num_accepted
                req.num_computed_tokens += n - cache.rollback(req, n, num_rejected)
                if req.drafter is not None:
                    req.drafter.update(draft, num_accepted, tokens)
                    req.num_accepted_prediction_tokens += num_accepted
                    req.num_rejected_prediction_tokens += num_rejected
                num_before = len(req.token_ids)
                for token in tokens:
                    reason = append_token(req, token)
                    if reason is not None:
                        break
                if req.guidance is not None:  # the companion is the negative prompt + output
                    req.guidance.uncond.token_ids += req.token_ids[num_before:]
                out.append(req)
            cache.commit(req)
            if reason is not None:
                self.finish(req, reason)
        return out
