"""AsyncEngine: one Engine driven by a dedicated thread, streamed to asyncio callers.

The Engine is not thread-safe, so only the engine thread ever touches it. Callers on any event
loop submit commands (add, abort, shutdown) through a thread-safe queue; the engine thread runs
them between steps and hands each step's outputs to per-request asyncio queues with
`loop.call_soon_threadsafe`, one call per loop per step.

Faults stay with the request that caused them: a step that raises is retried once; if it raises
again, the requests that make it fail are found (see `_isolate`) and failed with
StepFailedError, and the engine keeps serving the others. Requests past their
deadline fail with DeadlineExceededError; a full waiting queue refuses new ones (QueueFullError).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import inspect
import itertools
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from vibekit.core.outputs import RequestOutput
from vibekit.core.request import RequestStatus
from vibekit.core.sampling_params import SamplingParams
from vibekit.errors import InvalidRequestError
from vibekit.runtime.engine import Engine

logger = logging.getLogger("vibekit.runtime")


class EngineDeadError(RuntimeError):
    """The engine thread crashed; every in-flight and later request fails with this."""


class EngineClosedError(RuntimeError):
    """The engine is shutting down or shut down and accepts no new requests."""


class QueueFullError(RuntimeError):
    """As many requests are in flight as the engine runs plus the waiting queue holds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(RuntimeError):
    """The request ran past its deadline; it was aborted and its KV pages freed."""


class GrammarCompileTimeoutError(InvalidRequestError):
    """A response_format's grammar did not compile within the engine's grammar_compile_timeout.
    The compile goes on in the background (a thread cannot be stopped) and its result is cached,
    so the same schema sent again is served once it is done."""


DEFAULT_GRAMMAR_COMPILE_TIMEOUT = 60.0
_COMPILE_WORKERS = 4


class StepFailedError(RuntimeError):
    """engine.step() raised twice with this request in the batch; it was aborted (the engine
    serves the others)."""


class RequestStream:
    """The outputs of one accepted request, as an async iterator of RequestOutput.

    Each output is cumulative (token_ids, text) and carries what is new (delta_token_ids,
    delta_text); iteration ends after the output with finish_reason set. Raises EngineDeadError
    if the engine crashes meanwhile. `cancel()` aborts the request if it is still running; it is
    thread-safe and does not block, so it is safe in `finally` blocks of cancelled tasks.

    coalesce: a consumer slower than the engine gets the outputs that queued up meanwhile as
    one (the latest output, with the deltas of all of them), so it never falls behind by more
    than one read. interval (with coalesce): after the first output, a waiting consumer is
    woken once `interval` new tokens have queued up (or the request finished or failed), so it
    reads them as one output; 1: at every output.
    """

    def __init__(self, owner: AsyncEngine, request_id: str, loop: asyncio.AbstractEventLoop,
                 coalesce: bool = False, interval: int = 1) -> None:
        self.request_id = request_id
        self.finished = False
        self.coalesce = coalesce
        self._interval = interval if coalesce else 1
        self._held = -1  # tokens queued since the consumer's last read; -1: before the first
        self._owner = owner
        self._loop = loop
        # NOTE: a deque and one waiter future, not an asyncio.Queue: this is touched once per
        # request per engine step, on the event loop that also serves HTTP.
        self._items: collections.deque[RequestOutput | BaseException] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None  # read after the outputs queued before it

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._error is not None:
            self.finished = True
            error, self._error = self._error, None
            raise error
        if self.finished:
            raise StopAsyncIteration
        while not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        if self.coalesce:
            item = self._take_queued(item)
            if self._held > 0:
                self._held = 0  # counted from this read on
        if item.finished:
            self.finished = True
        return item

    def _take_queued(self, out: RequestOutput) -> RequestOutput:
        """`out` merged with the outputs queued behind it (stops at the final one)."""
        delta_ids, delta_text = out.delta_token_ids, out.delta_text
        merged = out
        while not merged.finished and self._items:
            item = self._items.popleft()
            if isinstance(item, BaseException):
                self._error = item  # raised on the next read, after these outputs
                break
            delta_ids = delta_ids + item.delta_token_ids
            delta_text += item.delta_text
            merged = item
        if merged is out:
            return out
        return merged.with_deltas(delta_ids, delta_text)

    def _put(self, item: RequestOutput | BaseException) -> None:
        """Queue an output or an error (on the stream's loop)."""
        self._items.append(item)
        if self._interval > 1:
            if (self._held >= 0 and not isinstance(item, BaseException)
                    and not item.finished):
                self._held += len(item.delta_token_ids)
                if self._held < self._interval:
                    return  # not yet: the consumer reads these with the next ones
            self._held = max(self._held, 0)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel(self) -> None:
        """Abort the request unless it has finished (no-op otherwise)."""
        if not self.finished:
            self.finished = True
            self._owner._submit_abort(self.request_id)


@dataclass
class _Add:
    prompt: str | Sequence[int]
    params: SamplingParams
    request_id: str
    kwargs: dict[str, Any]
    stream: RequestStream
    accepted: asyncio.Future[None]
    deadline: float | None = None  # time.monotonic() after which the request fails
    timeout: float | None = None  # the seconds that deadline was set from


@dataclass
class _Abort:
    request_id: str
    done: asyncio.Future[None] | None = None


@dataclass
class _Shutdown:
    graceful: bool
    deadline: float


@dataclass
class _Totals:
    """Counters kept by the engine thread for /metrics."""

    finished: Counter[str] = field(default_factory=Counter)  # finish reason, "deadline", "error"
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    step_failures: int = 0  # steps that raised (retried or not)
    rejected_queue_full: int = 0


_RUNNING, _CLOSING, _STOPPED, _DEAD = "running", "closing", "stopped", "dead"


def check_stream_interval(interval: int) -> None:
    """ValueError unless `interval` is an int >= 1 (tokens between a stream's reads)."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"stream_interval={interval!r} is invalid; it must be an integer >= 1 "
                         "(1: stream every token)")


def check_compile_timeout(timeout: float | None) -> None:
    """ValueError unless `timeout` is None or a positive number of seconds."""
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"grammar_compile_timeout={timeout!r} is invalid; it must be a positive "
                         "number of seconds or None (no limit)")


class AsyncEngine:
    """Serve one Engine to asyncio code.

    Example:
        engine = AsyncEngine(Engine.from_pretrained("dummy:tiny-llama"))
        async for out in engine.generate("Hello", SamplingParams(max_tokens=8)):
            print(out.delta_text, end="")
        engine.shutdown()

    The engine thread starts on construction, or with `start=False` on `start()` or the first
    request.
    Validation errors (InvalidRequestError) are raised by `add_request` / the first step of
    `generate`, before any output; if the engine thread itself crashes, every in-flight request
    raises EngineDeadError instead of hanging.

    max_waiting: how many requests may wait beyond the engine's max_num_seqs running ones
    (None: unbounded); past that, add_request raises QueueFullError. grammar_compile_timeout:
    seconds `compile_grammar` waits for a response_format's grammar before it refuses the
    request with GrammarCompileTimeoutError (None: no limit). stream_interval: a coalescing
    stream (`coalesce=True`, as the server's) hands its consumer new tokens at most every
    `stream_interval` tokens after the first (vLLM's and SGLang's --stream-interval): fewer,
    bigger reads, at the cost of the time between them; 1: every step.
    """

    def __init__(self, engine: Engine, start: bool = True, max_waiting: int | None = None,
                 grammar_compile_timeout: float | None = DEFAULT_GRAMMAR_COMPILE_TIMEOUT,
                 stream_interval: int = 1) -> None:
        if max_waiting is not None and max_waiting < 0:
            raise ValueError(f"max_waiting={max_waiting} is invalid; it must be >= 0 or None")
        check_compile_timeout(grammar_compile_timeout)
        check_stream_interval(stream_interval)
        self.stream_interval = stream_interval
        self.grammar_compile_timeout = grammar_compile_timeout
        self._compile_slots = threading.BoundedSemaphore(_COMPILE_WORKERS)  # compiles at once
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_config = engine.model_config
        self.config = engine.config
        self._commands: queue.SimpleQueue[_Add | _Abort | _Shutdown] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _state against racing submits and thread exit
        self._state = _RUNNING
        self._error: BaseException | None = None
        self._streams: dict[str, RequestStream] = {}  # engine thread only
        self._shutdown: _Shutdown | None = None  # engine thread only
        self._totals = _Totals()
        self._stats: dict[str, float] = dict(engine.stats())
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:8]
        self._accepts_prediction = _accepts_keyword(engine.add_request, "prediction")
        self.max_in_flight = (None if max_waiting is None
                              else engine.config.scheduler.max_num_seqs + max_waiting)
        self._num_in_flight = 0  # guarded by _lock: submitted adds not yet finished or failed
        # engine thread only: a heap of (deadline, seq, request_id, timeout, stream)
        self._deadlines: list[tuple[float, int, str, float, RequestStream]] = []
        self._deadline_seq = itertools.count()
        self._deadline_slack = 1024  # stale entries allowed before the heap is compacted
        self._fresh: dict[str, _Add] = {}  # engine thread only: added, no output yet
        self._thread = threading.Thread(target=self._run, name="vibekit-engine", daemon=True)
        if start:
            self.start()

    # -- caller side (any thread / event loop) ------------------------------------------------

    def start(self) -> None:
        """Start the engine thread (no-op if started; the first request also starts it)."""
        with self._lock:
            if self._thread.ident is None and self._state == _RUNNING:
                self._thread.start()

    @property
    def is_running(self) -> bool:
        """True while new requests are accepted and the engine thread is alive."""
        return self._state == _RUNNING and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """The exception that killed the engine thread, if it crashed."""
        return self._error

    async def add_request(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                          request_id: str | None = None, prediction: Any = None,
                          coalesce: bool = False, timeout: float | None = None) -> RequestStream:
        """Queue a request and wait until the engine accepted it; returns its output stream
        (see RequestStream for `coalesce`). timeout: seconds from now after which the request
        is aborted and its stream raises DeadlineExceededError (None: no deadline).

        Raises InvalidRequestError (bad prompt or params), QueueFullError, EngineClosedError or
        EngineDeadError.
        """
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidRequestError(f"timeout={timeout!r} is invalid; it must be a number of "
                                      "seconds > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        params = params if params is not None else SamplingParams()
        kwargs: dict[str, Any] = {}
        if prediction is not None:
            if not self._accepts_prediction:
                raise InvalidRequestError("prediction is not supported by this engine")
            kwargs["prediction"] = prediction
        if request_id is None:
            request_id = f"{self._id_prefix}-{next(self._ids)}"
        loop = asyncio.get_running_loop()
        stream = self._make_stream(request_id, loop, coalesce)
        accepted: asyncio.Future[None] = loop.create_future()
        self._submit(_Add(prompt, params, request_id, kwargs, stream, accepted, deadline,
                          timeout))
        try:
            await accepted
        except asyncio.CancelledError:
            # The add may run later; the abort queued behind it undoes it.
            self._submit_abort(request_id)
            raise
        return stream

    def _make_stream(self, request_id: str, loop: asyncio.AbstractEventLoop,
                     coalesce: bool) -> RequestStream:
        """The stream add_request returns (a subclass may deliver its outputs elsewhere, as
        the engine core process does: vibekit.serve.engine_core)."""
        return RequestStream(self, request_id, loop, coalesce, self.stream_interval)

    def compile_grammar(self, response_format: dict[str, Any] | None,
                        timeout: float | None = None) -> None:
        """Compile a response_format's grammar into the engine's grammar cache now, from any
        thread, so that add_request finds it compiled: a large schema can take long to compile,
        and this keeps that off the engine thread that serves everyone. Raises
        InvalidRequestError for a format that does not parse or compile.

        The compile runs in a worker thread and is waited for at most the engine's
        grammar_compile_timeout, or `timeout` (the request's time left) if that is shorter:
        past it, GrammarCompileTimeoutError, or DeadlineExceededError when the request's own
        deadline was the limit. At most a few compiles run at once; one that never finishes
        holds its thread, the others keep compiling, and a compile that cannot start within
        its limit is refused the same way, so a pathological schema never blocks the requests
        that have none. `compile_grammar_async` is the same for async callers (no thread
        waits)."""
        started = self._start_compile(response_format, timeout)
        if started is None:
            return
        future, limit = started
        try:
            future.result(limit)
        except FutureTimeout:
            raise self._compile_timeout(limit, timeout) from None

    async def compile_grammar_async(self, response_format: dict[str, Any] | None,
                                    timeout: float | None = None) -> None:
        """compile_grammar, awaited on the event loop instead of blocking a thread."""
        started = self._start_compile(response_format, timeout)
        if started is None:
            return
        future, limit = started
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), limit)
        except TimeoutError:
            raise self._compile_timeout(limit, timeout) from None

    def _start_compile(self, response_format: dict[str, Any] | None,
                       timeout: float | None) -> tuple[Future[None], float | None] | None:
        """(a future done when the grammar is compiled, the seconds to wait for it), or None
        when there is nothing to compile."""
        # NOTE: reaches into Engine.grammars (a thread-safe cache); an engine without one
        # compiles in add_request as before.
        backend = getattr(self.engine, "grammars", None)
        if backend is None or response_format is None:
            return None
        limits = [t for t in (self.grammar_compile_timeout, timeout) if t is not None]
        limit = max(0.0, min(limits)) if limits else None
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()

        def work() -> None:
            if not self._compile_slots.acquire(timeout=-1 if limit is None else limit):
                return  # the waiter has timed out by now
            try:
                backend.request_grammar(response_format)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the waiter
                future.set_exception(exc)
            else:
                future.set_result(None)
            finally:
                self._compile_slots.release()

        # NOTE: a daemon thread per compile, not a ThreadPoolExecutor: the interpreter joins
        # an executor's workers at exit, and a compile that never returns would then keep the
        # process alive. Starting one is ~0.1 ms, next to a compile or a cache lookup.
        threading.Thread(target=work, name="vibekit-grammar", daemon=True).start()
        return future, limit

    def _compile_timeout(self, limit: float | None, timeout: float | None) -> Exception:
        if timeout is not None and limit is not None and timeout <= limit:
            return DeadlineExceededError(
                f"the request ran past its deadline ({max(timeout, 0.0):g} s of its timeout "
                "left) while its response_format's grammar compiled")
        return GrammarCompileTimeoutError(
            f"response_format: its grammar did not compile within {limit:g} s (the server's "
            "grammar compile timeout); simplify the schema (fewer alternatives, bounded "
            "repetitions, simpler patterns), or retry later: the compile goes on in the "
            "background and the same schema is served once it is done")

    async def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                       request_id: str | None = None, prediction: Any = None,
                       coalesce: bool = False,
                       timeout: float | None = None) -> AsyncIterator[RequestOutput]:
        """Stream one request's outputs (cumulative, with deltas); the last has finish_reason.

        If the consumer stops early (break, cancellation, aclose), the request is aborted and
        its KV pages are freed.
        """
        stream = await self.add_request(prompt, params, request_id, prediction, coalesce,
                                        timeout)
        try:
            async for out in stream:
                yield out
        finally:
            stream.cancel()

    async def abort(self, request_id: str) -> None:
        """Abort a request (no-op if unknown or finished); returns once the engine has done it."""
        done = asyncio.get_running_loop().create_future()
        try:
            self._submit(_Abort(request_id, done), allow_closing=True)
        except (EngineClosedError, EngineDeadError):
            return
        await done

    def stats(self) -> dict[str, float]:
        """Engine stats from after the latest step (queue depth, KV usage, prefix hit rate...)
        plus totals over finished requests: num_finished_<reason>, num_prompt_tokens,
        num_cached_prompt_tokens, num_completion_tokens, num_step_failures,
        num_rejected_queue_full, num_in_flight."""
        stats = dict(self._stats)
        totals = self._totals
        for reason in ("stop", "length", "abort", "deadline", "error"):
            stats[f"num_finished_{reason}"] = totals.finished[reason]
        stats["num_step_failures"] = totals.step_failures
        stats["num_rejected_queue_full"] = totals.rejected_queue_full
        stats["num_in_flight"] = self._num_in_flight
        stats["num_prompt_tokens"] = totals.prompt_tokens
        stats["num_cached_prompt_tokens"] = totals.cached_prompt_tokens
        stats["num_completion_tokens"] = totals.completion_tokens
        return stats

    def shutdown(self, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting requests; if graceful, let in-flight ones finish for up to `timeout`
        seconds, then abort whatever is left and stop the engine thread. Blocks until then
        (from async code: `await asyncio.to_thread(engine.shutdown, ...)`)."""
        with self._lock:
            if self._state == _RUNNING:
                self._state = _CLOSING
                if self._thread.ident is not None:
                    deadline = time.monotonic() + (timeout if graceful else 0.0)
                    self._commands.put(_Shutdown(graceful, deadline))
                else:
                    self._state = _STOPPED
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout + 5.0)

    # -- submitting ---------------------------------------------------------------------------

    def _submit(self, cmd: _Add | _Abort, allow_closing: bool = False) -> None:
        with self._lock:
            if self._state == _DEAD:
                raise EngineDeadError("the engine crashed") from self._error
            if self._state == _STOPPED or (self._state == _CLOSING and not allow_closing):
                raise EngineClosedError("the engine is shutting down; no new requests")
            if isinstance(cmd, _Add):
                limit = self.max_in_flight
                if limit is not None and self._num_in_flight >= limit:
                    self._totals.rejected_queue_full += 1
                    raise QueueFullError(
                        f"the server is at capacity: {self._num_in_flight} requests in flight "
                        f"({self.engine.config.scheduler.max_num_seqs} running + "
                        f"{limit - self.engine.config.scheduler.max_num_seqs} waiting); retry "
                        "later", retry_after=1.0)
                self._num_in_flight += 1
            self._commands.put(cmd)
            if self._thread.ident is None:
                self._thread.start()  # the first request starts a lazily built engine

    def _submit_abort(self, request_id: str) -> None:
        try:
            self._submit(_Abort(request_id), allow_closing=True)
        except (EngineClosedError, EngineDeadError):
            pass  # the engine thread is gone and holds no pages for anyone

    # -- engine thread ------------------------------------------------------------------------

    def _released(self, num: int = 1) -> None:
        with self._lock:
            self._num_in_flight -= num

    def _forget(self, request_id: str) -> RequestStream | None:
        """Drop a request's stream (it finished or failed); frees its in-flight slot."""
        stream = self._streams.pop(request_id, None)
        self._fresh.pop(request_id, None)
        if stream is not None:
            self._released()
        return stream

    def _run(self) -> None:
        engine = self.engine
        try:
            while True:
                busy = engine.has_unfinished_requests()
                for cmd in self._take_commands(block=not busy and self._shutdown is None):
                    self._execute(cmd)
                if self._deadlines:
                    self._expire(time.monotonic())
                if self._shutdown is not None and self._finish_shutdown():
                    break
                outputs = self._step() if engine.has_unfinished_requests() else []
                self._stats = dict(engine.stats())  # before dispatch: readers see this step
                self._dispatch(outputs)
        except BaseException as exc:  # noqa: BLE001 - any crash must fail the waiters
            self._die(exc)
            return
        self._close(_STOPPED, EngineClosedError("the engine shut down"))

    def _take_commands(self, block: bool) -> list[_Add | _Abort | _Shutdown]:
        cmds = []
        if block:
            cmds.append(self._commands.get())
        while True:
            try:
                cmds.append(self._commands.get_nowait())
            except queue.Empty:
                return cmds

    def _step(self) -> list[RequestOutput]:
        """engine.step(), retried once; if it fails again, `_isolate` finds who makes it fail."""
        error: Exception | None = None
        for attempt in range(2):
            try:
                return self.engine.step()
            except Exception as exc:
                self._totals.step_failures += 1
                error = exc
                logger.warning("engine step failed (%s: %s)%s", type(exc).__name__, exc,
                               "; retrying once" if attempt == 0 else "; isolating the cause")
        assert error is not None
        return self._isolate(error)

    def _isolate(self, error: Exception) -> list[RequestOutput]:
        """Fail only the requests a failing step cannot run with; return the outputs of the
        steps that ran meanwhile.

        Requests that have produced nothing yet are taken out (abort) and later put back (the
        same add), which loses nothing. Without them, the others step; while that fails, the
        newest of them fails (StepFailedError). Then the held requests go back one at a time,
        each followed by a step (retried once): one whose step fails is failed.
        """
        held = [self._fresh[rid] for rid in self._streams if rid in self._fresh]
        for cmd in held:
            self.engine.abort(cmd.request_id)
        held_ids = {cmd.request_id for cmd in held}
        outputs: list[RequestOutput] = []
        while self.engine.has_unfinished_requests():
            try:
                outputs += self.engine.step()
                break
            except Exception as exc:
                self._totals.step_failures += 1
                error = exc
            suspects = self._batch_ids(exclude=held_ids)
            if not suspects:
                break
            self._fail(suspects[0], _step_failed(error))
        for cmd in held:
            self.engine.add_request(cmd.prompt, cmd.params, cmd.request_id, **cmd.kwargs)
            for _ in range(2):
                try:
                    outputs += self.engine.step()
                    break
                except Exception as exc:
                    self._totals.step_failures += 1
                    error = exc
            else:
                self._fail(cmd.request_id, _step_failed(error))
        return outputs

    def _batch_ids(self, exclude: Collection[str] = ()) -> list[str]:
        """Our requests the engine runs, newest first (all of ours if none is seen running)."""
        # NOTE: the one look inside the Engine: which requests the scheduler runs.
        requests = self.engine.requests
        ours = [rid for rid in self._streams if rid not in exclude and rid in requests]
        running = [rid for rid in ours
                   if getattr(requests[rid], "status", None) is RequestStatus.RUNNING]
        return list(reversed(running or ours))

    def _fail(self, request_id: str, error: BaseException) -> None:
        """Abort a request in the engine and raise `error` in its stream instead of a final
        output."""
        self.engine.abort(request_id)
        self._fresh.pop(request_id, None)
        stream = self._forget(request_id)
        reason = "deadline" if isinstance(error, DeadlineExceededError) else "error"
        self._totals.finished[reason] += 1
        if stream is not None:
            _post(stream._loop, _deliver, [(stream, error)])

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, request_id, timeout, stream = heapq.heappop(heap)
            # only the stream the deadline was set for (an id can be reused once it finished)
            if self._streams.get(request_id) is stream:
                self._fail(request_id, DeadlineExceededError(
                    f"the request ran past its deadline (timeout of {timeout:g} s) and was "
                    "aborted"))

    def _execute(self, cmd: _Add | _Abort | _Shutdown) -> None:
        if isinstance(cmd, _Add):
            if self._shutdown is not None:
                self._released()
                _post(cmd.stream._loop, _set_exception, cmd.accepted,
                      EngineClosedError("the engine is shutting down; no new requests"))
                return
            try:
                self.engine.add_request(cmd.prompt, cmd.params, cmd.request_id, **cmd.kwargs)
            except Exception as exc:  # the engine validated and queued nothing
                self._released()
                _post(cmd.stream._loop, _set_exception, cmd.accepted, exc)
                return
            self._streams[cmd.request_id] = cmd.stream
            self._fresh[cmd.request_id] = cmd
            if cmd.deadline is not None:
                heap = self._deadlines
                heapq.heappush(heap, (cmd.deadline, next(self._deadline_seq), cmd.request_id,
                                      cmd.timeout, cmd.stream))
                if len(heap) > 2 * len(self._streams) + self._deadline_slack:
                    # Finished requests' entries stay until their deadline: drop them, so the
                    # heap holds O(in flight) entries, not O(rate x timeout).
                    streams = self._streams
                    heap[:] = [e for e in heap if streams.get(e[2]) is e[4]]
                    heapq.heapify(heap)
            if not _post(cmd.stream._loop, _set_result, cmd.accepted, None):
                self._abort(cmd.request_id)  # the caller's loop is gone
        elif isinstance(cmd, _Abort):
            self._abort(cmd.request_id)
            if cmd.done is not None:
                _post(cmd.done.get_loop(), _set_result, cmd.done, None)
        else:
            self._shutdown = cmd

    def _abort(self, request_id: str) -> None:
        out = self.engine.abort(request_id)
        if out is not None:
            self._dispatch([out])
        self._forget(request_id)

    def _finish_shutdown(self) -> bool:
        """Abort what is left once the grace period is over; True when the loop may stop."""
        assert self._shutdown is not None
        if self._streams and time.monotonic() >= self._shutdown.deadline:
            for request_id in list(self._streams):
                self._abort(request_id)
        return not self.engine.has_unfinished_requests()

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestStream, Any]]] = {}
        totals = self._totals
        fresh = self._fresh
        for out in outputs:
            if fresh:
                fresh.pop(out.request_id, None)
            if out.finished:
                stream = self._forget(out.request_id)
                totals.finished[out.finish_reason] += 1
                totals.prompt_tokens += out.usage.prompt_tokens
                totals.cached_prompt_tokens += out.usage.cached_prompt_tokens
                totals.completion_tokens += out.usage.completion_tokens
            else:
                stream = self._streams.get(out.request_id)
            if stream is not None:
                by_loop.setdefault(stream._loop, []).append((stream, out))
        for loop, items in by_loop.items():
            if not _post(loop, _deliver, items):
                for stream, _ in items:  # nobody can read these any more
                    if stream.request_id in self._streams:
                        self._abort(stream.request_id)

    def _die(self, exc: BaseException) -> None:
        self._error = exc
        error = EngineDeadError(f"the engine crashed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        self._close(_DEAD, error)

    def _close(self, state: str, error: BaseException) -> None:
        """Fail every stream still open and every command still queued; no submit gets in."""
        with self._lock:
            self._state = state
            pending = []
            while True:
                try:
                    pending.append(self._commands.get_nowait())
                except queue.Empty:
                    break
        for cmd in pending:
            if isinstance(cmd, _Add):
                self._released()
                _post(cmd.stream._loop, _set_exception, cmd.accepted, error)
            elif isinstance(cmd, _Abort) and cmd.done is not None:
                _post(cmd.done.get_loop(), _set_result, cmd.done, None)
        streams, self._streams = self._streams, {}
        self._released(len(streams))
        for stream in streams.values():
            own = type(error)(*error.args)  # one instance per waiter: tracebacks stay apart
            own.__cause__ = error.__cause__
            _post(stream._loop, _deliver, [(stream, own)])


def _step_failed(error: Exception) -> StepFailedError:
    failed = StepFailedError(f"the engine step failed twice with this request in the batch: "
                             f"{type(error).__name__}: {error}")
    failed.__cause__ = error
    return failed


def _accepts_keyword(fn: Any, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _post(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> bool:
    """Run fn(*args) on `loop` soon; False if that loop is closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        return False
    return True


def _deliver(items: list[tuple[RequestStream, Any]]) -> None:
    for stream, item in items:
        stream._put(item)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
