"""The engine core in its own process (as vLLM's EngineCore), and its client in the server.

The HTTP process parses, validates, renders chat templates, tokenizes and writes SSE; it holds
an `EngineCoreClient`, which has AsyncEngine's interface (add_request / generate / abort /
stats / shutdown, RequestStream outputs). The core process runs an AsyncEngine: its engine
thread runs the scheduler and model loop with everything AsyncEngine does (a failing step is
retried, then isolated; per-request deadlines; the bounded waiting queue; graceful shutdown).
The two processes never share a GIL, so HTTP work does not slow the model loop down.

Wire: one duplex multiprocessing Pipe (a Unix socketpair), pickled tuples.
    server -> core   ("add", id, prompt, params, prediction, timeout) | ("abort", id, token)
                     | ("shutdown", graceful, timeout)
    core -> server   ("ready", info) | ("failed", error)
                     | ("batch", items, stats, state) | ("beat", iterations, idle)
                     | ("stopped",)
A batch carries everything one engine step produced, for every request: acceptances
("acc", id), rejections ("rej", id, error), outputs ("out", id, delta_ids, delta_text,
finish_reason, prompt_ids, final) and errors ("err", id, error). Outputs carry only what is new
(the prompt ids once, the whole text and ids once at the end); the client rebuilds the
cumulative RequestOutput. Engine stats ride along when they changed. Beats are the core's
liveness reports (vibekit.serve.liveness: a core that holds requests and makes no progress for
`stall_timeout` seconds is killed and marked dead, its requests fail with 503 engine_stalled).
In the core, the engine thread itself sends each batch at the end of its loop iteration
(AsyncEngine's deliveries run immediately into an outbox), so no second thread takes the GIL per
step, and it also reads the commands off the pipe between steps (while idle it waits on the
pipe and on a wake-up pipe that other threads' submits write to); once it has stopped or
crashed, a reader thread answers the pipe instead. In the server, the client reads the pipe on
the event loop (start() from the app's lifespan: the
loop's reader callback delivers each batch to the streams directly); anywhere else a reader
thread does and posts to the streams' loops. On the loop, each engine step costs the server one
wake-up instead of a thread's wake-up, a GIL hand-off and a second wake-up of the loop (on the
2-core benchmark machine: 18.4k -> 21.7k streamed tok/s at concurrency 16).

Decided here:
- Detokenization and stop strings stay in the core (the engine's OutputProcessor decides
  stops on the text it decodes; moving it out would add an abort round trip per stop string).
  Engine.generate decodes too, so the comparison with it is like for like.
- Grammars compile in the core, in a worker thread of its own, before the add reaches the
  engine thread (compiled grammars live with the engine that masks with them); a bad schema
  comes back as the add's rejection (a 400 before any status is sent).
- SamplingParams (response_format, guidance, logit_bias, seeds, ...) and predictions cross
  the boundary pickled, whole.
- The core dies with the server: it reads EOF on the pipe when the server process is gone
  (even after SIGKILL) and then aborts everything and exits; it ignores SIGINT, so Ctrl-C in
  a terminal drains through the server's graceful shutdown. If the core dies, every
  in-flight request fails with EngineDeadError (503 / an in-band stream error) and /health
  turns 503.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vibekit.core.outputs import RequestOutput, Usage
from vibekit.core.sampling_params import SamplingParams
from vibekit.errors import InvalidRequestError
from vibekit.runtime.async_engine import (
    DEFAULT_GRAMMAR_COMPILE_TIMEOUT,
    AsyncEngine,
    EngineClosedError,
    EngineDeadError,
    RequestStream,
    _Abort,
    _Add,
    check_compile_timeout,
    check_stream_interval,
)
from vibekit.runtime.engine import Engine
from vibekit.serve.liveness import (
    DEFAULT_STALL_TIMEOUT,
    EngineStalledError,
    Heartbeat,
    Watchdog,
    beat_interval,
    check_stall_timeout,
)
from vibekit.serve.tuning import tune_process

logger = logging.getLogger("vibekit.serve")



def load_engine(model: str, dtype: str = "float32", device: str = "cpu",
                **options: Any) -> Engine:
    """The default factory of the core process: Engine.from_pretrained(model, ...)."""
    return Engine.from_pretrained(model, dtype=dtype, device=device, **options)


# -- the server side ------------------------------------------------------------------------


class _Live:
    """What the client keeps of one request: its stream and the cumulative output."""

    __slots__ = ("stream", "prompt_ids", "token_ids", "text")

    def __init__(self, stream: RequestStream, prompt: Any) -> None:
        self.stream = stream
        self.prompt_ids: list[int] = [] if isinstance(prompt, str) else list(prompt)
        self.token_ids: list[int] = []
        self.text = ""


class EngineCoreClient:
    """AsyncEngine's interface, served by an engine in a process of its own.

    Example:
        core = EngineCoreClient(load_engine, "dummy:tiny-llama", max_model_len=1024)
        async for out in core.generate("Hello", SamplingParams(max_tokens=8)):
            print(out.delta_text, end="")
        core.shutdown()

    factory(*args, **kwargs) builds the Engine in the core process (a picklable module-level
    callable; the default loads a checkpoint). Construction blocks until the engine is built
    (raises RuntimeError naming the cause if that fails within `startup_timeout` seconds).
    max_waiting: as AsyncEngine's (the core keeps the waiting queue). stall_timeout: seconds
    the core may hold unfinished requests without progress before it is killed and marked dead
    (EngineStalledError; None: never; see vibekit.serve.liveness). grammar_compile_timeout:
    as AsyncEngine's (grammars compile in the core, in worker threads). stream_interval: as
    AsyncEngine's, applied in the core, so the held-back tokens do not cross the pipe either.
    """

    def __init__(self, factory: Callable[..., Engine] = load_engine, *args: Any,
                 max_waiting: int | None = None, startup_timeout: float = 600.0,
                 stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
                 grammar_compile_timeout: float | None = DEFAULT_GRAMMAR_COMPILE_TIMEOUT,
                 stream_interval: int = 1, **kwargs: Any) -> None:
        if max_waiting is not None and max_waiting < 0:
            raise ValueError(f"max_waiting={max_waiting} is invalid; it must be >= 0 or None")
        check_compile_timeout(grammar_compile_timeout)
        check_stream_interval(stream_interval)
        self.stream_interval = stream_interval
        check_stall_timeout(stall_timeout)
        beat = None if stall_timeout is None else beat_interval(stall_timeout)
        ctx = multiprocessing.get_context("spawn")  # no fork of torch's threads
        self._conn, child = ctx.Pipe(duplex=True)
        # NOTE: not a daemon, so the core may start processes of its own (tensor-parallel
        # ranks); it stops when this process closes the pipe, at the latest at exit (_at_exit).
        self.process = ctx.Process(target=_core_main, name="vibekit-engine-core",
                                   args=(child, factory, args, kwargs, max_waiting, beat,
                                         grammar_compile_timeout, stream_interval))
        self.process.start()
        child.close()
        atexit.register(self._at_exit)
        self._send_lock = threading.Lock()
        self._state = "running"
        self._error: BaseException | None = None
        self._live: dict[str, _Live] = {}
        self._accepts: dict[str, asyncio.Future[None]] = {}
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._tokens = itertools.count()
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:8]
        info = self._wait_ready(startup_timeout)
        self.tokenizer = info["tokenizer"]
        self.config = info["config"]
        self.model_config = self.config.model
        self.num_pages = info["num_pages"]
        self.max_in_flight = info["max_in_flight"]
        self._stats: dict[str, float] = info["stats"]
        # Who reads the core's messages: a reader thread, or (after start() on a running event
        # loop, as the server does) that loop itself, which saves the thread's GIL hand-off and
        # the wake-up of the loop on every engine step.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._handover = False
        self._wake_r, self._wake_w = os.pipe()
        self._saw_stopped = False
        self._reading_done = threading.Event()
        self._watchdog = None if stall_timeout is None else Watchdog(
            stall_timeout, self._num_busy, self._stalled)
        self._reader = self._start_reader_thread()
        if self._watchdog is not None:
            self._watchdog.start()

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.1):
            if not self.process.is_alive():
                raise RuntimeError(f"the engine core process exited (code "
                                   f"{self.process.exitcode}) before it was ready")
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"the engine core was not ready within {timeout:g} s")
        try:
            msg = self._conn.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f"the engine core process exited (code {self.process.exitcode})"
                               " before it was ready") from None
        if msg[0] == "failed":
            self.process.join(5)
            raise RuntimeError(f"the engine core failed to start: {msg[1]}") from msg[1]
        return msg[1]

    # -- AsyncEngine's interface ----------------------------------------------------------------

    def start(self) -> None:
        """Read the core's messages on the running event loop, if called from one (the
        server's lifespan does); then requests must come from that loop. Otherwise a no-op:
        the core process runs from construction and a reader thread serves any loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._loop is loop or self._reading_done.is_set():
            return
        if self._loop is not None:
            raise RuntimeError("this EngineCoreClient already reads on another event loop")
        self._stop_reader_thread()
        if self._reading_done.is_set() or self._reader_exiting:
            return  # the core went away meanwhile; the thread has failed the waiters
        self._loop, self._loop_thread = loop, threading.get_ident()
        loop.add_reader(self._conn.fileno(), self._on_readable)

    def detach(self) -> None:
        """Stop reading on the event loop (from that loop, before it closes) and go back to a
        reader thread. No-op when no loop reads."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() != self._loop_thread and loop.is_running():
            raise RuntimeError("detach() must be called on the event loop that reads")
        if not loop.is_closed():
            loop.remove_reader(self._conn.fileno())
        self._loop = self._loop_thread = None
        if not self._reading_done.is_set() and not self._reader_exiting:
            self._reader = self._start_reader_thread()

    @property
    def is_running(self) -> bool:
        return self._state == "running" and self.process.is_alive()

    @property
    def error(self) -> BaseException | None:
        """Why the engine core stopped serving, if it crashed or its process died."""
        return self._error

    async def add_request(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                          request_id: str | None = None, prediction: Any = None,
                          coalesce: bool = False, timeout: float | None = None) -> RequestStream:
        """As AsyncEngine.add_request: waits until the core accepted the request."""
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidRequestError(f"timeout={timeout!r} is invalid; it must be a number of "
                                      "seconds > 0")
        self._check_accepting()
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            raise RuntimeError("this EngineCoreClient reads on another event loop (start() "
                               "attached it there); send requests from that loop")
        params = params if params is not None else SamplingParams()
        if request_id is None:
            request_id = f"{self._id_prefix}-{next(self._ids)}"
        elif request_id in self._live:
            raise InvalidRequestError(f"request_id {request_id!r} is already in use")
        stream = RequestStream(self, request_id, loop, coalesce)  # type: ignore[arg-type]
        accepted: asyncio.Future[None] = loop.create_future()
        self._live[request_id] = _Live(stream, prompt)
        self._accepts[request_id] = accepted
        try:
            self._send(("add", request_id, prompt, params, prediction, timeout))
            await accepted
        except asyncio.CancelledError:
            self._submit_abort(request_id)  # the core undoes the add if it already ran
            raise
        except BaseException:
            self._live.pop(request_id, None)
            self._accepts.pop(request_id, None)
            raise
        return stream

    async def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                       request_id: str | None = None, prediction: Any = None,
                       coalesce: bool = False,
                       timeout: float | None = None) -> AsyncIterator[RequestOutput]:
        """As AsyncEngine.generate: a consumer that stops early aborts the request."""
        stream = await self.add_request(prompt, params, request_id, prediction, coalesce,
                                        timeout)
        try:
            async for out in stream:
                yield out
        finally:
            stream.cancel()

    async def abort(self, request_id: str) -> None:
        """Abort a request; returns once the core has done it (no-op if unknown)."""
        if not self.is_running:
            return
        token = next(self._tokens)
        done = asyncio.get_running_loop().create_future()
        self._acks[token] = done
        try:
            self._send(("abort", request_id, token))
        except (EngineDeadError, EngineClosedError):
            self._acks.pop(token, None)
            return
        await done

    def compile_grammar(self, response_format: dict[str, Any] | None,
                        timeout: float | None = None) -> None:
        """No-op here: grammars compile in the core process (in a worker thread there, before
        the add reaches its engine thread), where the engine masks with them."""

    async def compile_grammar_async(self, response_format: dict[str, Any] | None,
                                    timeout: float | None = None) -> None:
        """No-op here, as compile_grammar."""

    def stats(self) -> dict[str, float]:
        """AsyncEngine.stats() of the core, as of its latest report (at most ~50 ms old), plus
        the liveness check's num_engine_stalls and seconds_without_progress."""
        stats = dict(self._stats)
        if self._watchdog is not None:
            stats["num_engine_stalls"] = self._watchdog.num_stalls
            stats["seconds_without_progress"] = self._watchdog.seconds_without_progress()
        return stats

    def shutdown(self, graceful: bool = True, timeout: float = 30.0) -> None:
        """As AsyncEngine.shutdown; then the core process exits (killed if it does not)."""
        if self._state == "running":
            self._state = "closing"
            try:
                self._send(("shutdown", graceful, timeout), force=True)
            except (EngineDeadError, EngineClosedError, OSError):
                pass
        loop = self._loop
        if loop is not None and (threading.get_ident() == self._loop_thread
                                 or not loop.is_running()):
            self.detach()  # that loop cannot read while we wait here (or never will again)
        # NOTE: the reader reaps the core (its join) once the pipe closes; waiting on the
        # reader first keeps two threads from calling waitpid at once (the loser gets ECHILD,
        # and is_alive() then says True of a process that has exited).
        self._reading_done.wait(timeout + 10.0)
        self.process.join(10.0)
        if self.process.is_alive():
            logger.error("the engine core did not stop; killing it")
            self.process.kill()
            self._reading_done.wait(10.0)
        if self._reading_done.is_set() and self._wake_w >= 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _at_exit(self) -> None:
        """At interpreter exit (before multiprocessing joins its children): close the pipe,
        which stops the core, and make sure it is gone."""
        if self.process.is_alive():
            self._state = "stopped"
            self._conn.close()
            self.process.join(10.0)
            if self.process.is_alive():
                self.process.kill()

    # -- plumbing -------------------------------------------------------------------------------

    def _check_accepting(self) -> None:
        # NOTE: the state alone, no waitpid (is_alive) per request: the reader thread turns it
        # "dead" once the core's end of the pipe closes, and a send to a dead core fails anyway.
        if self._state == "running":
            return
        if isinstance(self._error, EngineStalledError):
            raise _copy(self._error)
        if self._state == "dead":
            why = self._error or (f"the engine core process exited unexpectedly (exit code "
                                  f"{self.process.exitcode})")
            raise EngineDeadError(f"the engine core is not running: {why}")
        raise EngineClosedError("the engine is shutting down; no new requests")

    def _send(self, msg: tuple[Any, ...], force: bool = False) -> None:
        if not force:
            self._check_accepting()
        data = _dumps(msg)
        try:
            with self._send_lock:
                self._conn.send_bytes(data)
        except (OSError, ValueError) as exc:  # the core's end is gone
            raise EngineDeadError(f"the engine core is not running: {exc}") from exc

    def _submit_abort(self, request_id: str) -> None:
        """RequestStream.cancel(): abort without waiting (safe from any thread)."""
        self._live.pop(request_id, None)
        if self._state in ("running", "closing"):
            try:
                self._send(("abort", request_id, None), force=True)
            except EngineDeadError:
                pass  # the core is gone and holds no pages for anyone

    _reader_exiting = False  # the pipe closed and the reaper runs (or ran)

    def _start_reader_thread(self) -> threading.Thread:
        self._handover = False
        thread = threading.Thread(target=self._read, name="vibekit-core-reader", daemon=True)
        thread.start()
        return thread

    def _stop_reader_thread(self) -> None:
        """Make the reader thread return at a message boundary, leaving the pipe unread."""
        self._handover = True
        os.write(self._wake_w, b"x")
        self._reader.join()
        while True:  # drain the wake-ups
            ready = multiprocessing.connection.wait([self._wake_r], 0)
            if not ready:
                break
            os.read(self._wake_r, 64)

    def _read(self) -> None:
        """The reader thread: batches from the core to the streams, one post per loop."""
        conn, wake = self._conn, self._wake_r
        try:
            while True:
                ready = multiprocessing.connection.wait([conn, wake])
                if self._handover:
                    return  # start() takes over on its event loop
                if conn in ready:
                    self._handle(conn.recv())
        except (EOFError, OSError):
            pass
        except BaseException as exc:  # noqa: BLE001 - fail the waiters, do not hang them
            logger.exception("the engine core client's reader failed")
            self._error = exc
        self._reader_exit()

    def _on_readable(self) -> None:
        """The event loop's reader: every message that has arrived, handled on the loop."""
        conn = self._conn
        try:
            while conn.poll(0):
                self._handle(conn.recv())
            return
        except (EOFError, OSError):
            pass
        except BaseException as exc:  # noqa: BLE001 - fail the waiters, do not hang them
            logger.exception("the engine core client's reader failed")
            self._error = exc
        assert self._loop is not None
        self._loop.remove_reader(conn.fileno())
        self._reader_exiting = True
        # the process join may take a while: not on the loop
        threading.Thread(target=self._reader_exit, name="vibekit-core-reaper",
                         daemon=True).start()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "batch":
            if self._watchdog is not None:
                self._watchdog.progress()
            self._on_batch(msg[1], msg[2], msg[3])
        elif msg[0] == "beat":
            if self._watchdog is not None:
                self._watchdog.beat(msg[1], msg[2])
        elif msg[0] == "stopped":
            self._saw_stopped = True

    def _reader_exit(self) -> None:
        """The pipe closed (or reading failed): reap the core and fail every waiter."""
        self._reader_exiting = True
        try:
            self.process.join(5)
            if self._watchdog is not None:
                self._watchdog.stop()
            if isinstance(self._error, EngineStalledError):
                self._finish("dead", self._error)
            elif self._saw_stopped and self._error is None:
                self._finish("stopped", EngineClosedError("the engine shut down"))
            else:
                code = self.process.exitcode
                self._error = self._error or RuntimeError(
                    f"the engine core process exited unexpectedly (exit code {code})")
                logger.error("%s", self._error)
                self._finish("dead", EngineDeadError(f"the engine core is not running: "
                                                     f"{self._error}"))
        finally:
            self._reading_done.set()

    def _num_busy(self) -> int:
        """What the core holds for us (the watchdog's thread reads it): requests and aborts."""
        return len(self._live) + len(self._acks) if self._state == "running" else 0

    def _stalled(self, message: str) -> None:
        """The watchdog's verdict: fail everything with the stall and kill the core (the reader
        then reads EOF and fails every waiter with this error)."""
        self._error = EngineStalledError(message)
        self._state = "dead"
        self.process.kill()

    def _on_batch(self, items: list[tuple[Any, ...]], stats: dict[str, float] | None,
                  state: tuple[bool, BaseException | None] | None) -> None:
        if stats is not None:
            self._stats = stats
        if state is not None and not state[0] and self._state == "running":
            # the core's engine thread crashed (its streams get EngineDeadError) or stopped
            self._error = state[1]
            self._state = "dead" if state[1] is not None else "closing"
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        live, accepts = self._live, self._accepts
        for item in items:
            kind, rid = item[0], item[1]
            if kind == "out":
                entry = live.get(rid)
                if entry is None:
                    continue  # cancelled here; the core has its abort
                _, _, delta_ids, delta_text, finish, prompt_ids, final = item
                if prompt_ids is not None:
                    entry.prompt_ids = prompt_ids
                if final is not None:
                    entry.token_ids, entry.text, usage = final
                    live.pop(rid, None)
                else:
                    entry.token_ids += delta_ids
                    entry.text += delta_text
                    usage = Usage(prompt_tokens=len(entry.prompt_ids),
                                  completion_tokens=len(entry.token_ids))
                ids = entry.token_ids  # only appended to (or replaced by the final list)
                out = RequestOutput.snapshot(rid, entry.prompt_ids, ids, 0, len(ids),
                                             entry.text, finish, usage, delta_ids, delta_text)
                stream = entry.stream
                by_loop.setdefault(stream._loop, []).append((stream._put, out))
            elif kind == "acc":
                fut = accepts.pop(rid, None)
                if fut is not None:
                    by_loop.setdefault(fut.get_loop(), []).append((_set_result, fut, None))
            elif kind == "rej" or kind == "err":
                entry = live.pop(rid, None)
                fut = accepts.pop(rid, None)
                if fut is not None:
                    by_loop.setdefault(fut.get_loop(), []).append((_set_exception, fut, item[2]))
                elif entry is not None:
                    stream = entry.stream
                    by_loop.setdefault(stream._loop, []).append((stream._put, item[2]))
            elif kind == "aborted":
                fut = self._acks.pop(rid, None)
                if fut is not None:
                    by_loop.setdefault(fut.get_loop(), []).append((_set_result, fut, None))
        for loop, calls in by_loop.items():
            if loop is self._loop:  # we are on it (its reader): deliver now
                _run_all(calls)
                continue
            try:
                loop.call_soon_threadsafe(_run_all, calls)
            except RuntimeError:  # that loop is closed: nobody reads these
                for call in calls:
                    stream = getattr(call[0], "__self__", None)
                    if isinstance(stream, RequestStream):
                        self._submit_abort(stream.request_id)

    def _finish(self, state: str, error: BaseException) -> None:
        """The core is gone: fail every waiter (one exception instance each)."""
        self._state = state
        live, self._live = self._live, {}
        accepts, self._accepts = self._accepts, {}
        acks, self._acks = self._acks, {}
        calls: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        for rid, fut in accepts.items():
            live.pop(rid, None)
            calls.setdefault(fut.get_loop(), []).append((_set_exception, fut, _copy(error)))
        for entry in live.values():
            calls.setdefault(entry.stream._loop, []).append((entry.stream._put, _copy(error)))
        for fut in acks.values():
            calls.setdefault(fut.get_loop(), []).append((_set_result, fut, None))
        for loop, items in calls.items():
            try:
                loop.call_soon_threadsafe(_run_all, items)
            except RuntimeError:
                pass


def _dumps(msg: tuple[Any, ...]) -> bytes:
    """A message for the pipe, read back by Connection.recv (pickle.loads). Plain pickle, not
    Connection.send's ForkingPickler: the messages hold only plain objects, and building a
    ForkingPickler (a copy of its reducer table per message) cost more than pickling a step's
    batch (7 vs 3 us here, once per step and per request)."""
    return pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)


def _copy(error: BaseException) -> BaseException:
    own = type(error)(*error.args)
    own.__cause__ = error.__cause__
    return own


def _run_all(calls: list[tuple[Any, ...]]) -> None:
    for fn, *args in calls:
        fn(*args)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# -- the core process ------------------------------------------------------------------------


def _portable(exc: BaseException) -> BaseException:
    """exc if it survives pickling (its message and type), else a RuntimeError saying it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception type may arrive here
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class _Immediate:
    """The core's stand-in for an event loop: AsyncEngine posts its deliveries here and they
    run right away, on the engine thread, into the outbox (no second thread, no GIL hop)."""

    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        fn(*args)


class _Reply:
    """The core's stand-in for the future an add or abort waits on: its result becomes an
    item of the next batch."""

    __slots__ = ("core", "rid", "token", "settled")

    def __init__(self, core: _Core, rid: str, token: int | None = None) -> None:
        self.core, self.rid, self.token, self.settled = core, rid, token, False

    def done(self) -> bool:
        return self.settled

    def get_loop(self) -> _Immediate:
        return _IMMEDIATE

    def set_result(self, value: Any) -> None:
        self.settled = True
        if self.token is not None:
            self.core.push(("aborted", self.token))
        else:
            self.core.accepted(self.rid)

    def set_exception(self, exc: BaseException) -> None:
        self.settled = True
        self.core.rejected(self.rid, exc)


_IMMEDIATE = _Immediate()


class _CoreStream(RequestStream):
    """A core-side stream: its outputs go into the next batch to the server."""

    prompt_sent = False
    held_ids: list[int] = []  # tokens held back by the stream interval (and their text)
    held_text = ""

    def _put(self, item: RequestOutput | BaseException) -> None:
        self._owner.core.emit(self, item)  # type: ignore[attr-defined]


class _WakingQueue:
    """The engine thread's command queue; a put from any other thread also wakes the engine
    thread where it waits on the pipe (see _CoreEngine._take_commands)."""

    def __init__(self, core: _Core) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.core = core
        self.get, self.get_nowait, self.empty = (self.queue.get, self.queue.get_nowait,
                                                 self.queue.empty)

    def put(self, item: Any) -> None:
        self.queue.put(item)
        if threading.get_ident() != self.core.engine_thread:
            self.core.wake()


class _CoreEngine(AsyncEngine):
    """The AsyncEngine of the core: its engine thread reads the commands off the pipe itself
    between steps (no reader thread, so no GIL hand-off per command) and sends one batch per
    loop iteration."""

    def __init__(self, engine: Engine, core: _Core, max_waiting: int | None,
                 compile_timeout: float | None) -> None:
        self.core = core
        super().__init__(engine, start=False, max_waiting=max_waiting,
                         grammar_compile_timeout=compile_timeout)
        self._commands = _WakingQueue(core)  # type: ignore[assignment]

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        super()._dispatch(outputs)
        heartbeat = self.core.heartbeat
        if heartbeat is not None:
            heartbeat.iterations += 1
        self.core.flush()  # everything this iteration produced, as one message

    def _take_commands(self, block: bool) -> list[Any]:
        core = self.core
        core.engine_thread = threading.get_ident()
        core.poll()  # what came on the pipe, into the queue
        if block and self._commands.empty():
            heartbeat = core.heartbeat
            if heartbeat is not None:
                heartbeat.idle = True  # waiting for work: nothing can be stuck meanwhile
            try:
                while self._commands.empty():
                    core.wait()
                    core.poll()
            finally:
                if heartbeat is not None:
                    heartbeat.idle = False
        return super()._take_commands(False)

    def _close(self, state: str, error: BaseException) -> None:
        super()._close(state, error)
        self.core.flush()
        self.core.engine_stopped()  # a reader thread answers the pipe from here on


class _Core:
    """The core process: a reader thread takes commands off the pipe and submits them to the
    engine thread, which sends what each of its iterations produced as one batch."""

    def __init__(self, conn: Any, engine: Engine, max_waiting: int | None,
                 beat: float | None, compile_timeout: float | None,
                 stream_interval: int = 1) -> None:
        self.conn = conn
        self.stream_interval = stream_interval  # see EngineCoreClient
        self.lock = threading.Lock()  # guards items, pending and the pipe's sending end
        self.items: list[tuple[Any, ...]] = []
        self.sent_stats: dict[str, float] | None = None
        self.sent_running = True
        self.pending: dict[str, bool] = {}  # adds compiling a grammar -> aborted meanwhile
        # Threads that wait for grammar compiles (each at most the compile timeout), so that a
        # slow schema does not queue the grammar requests behind it.
        self.compiler = ThreadPoolExecutor(8, thread_name_prefix="vibekit-core-compile")
        self.stop = threading.Event()
        self.closing = False
        self.heartbeat = None if beat is None else Heartbeat(self.beat, beat)
        # The engine thread reads the pipe while it runs (pipe_reader "engine"); once it has
        # stopped, a reader thread does ("thread"); "closed" after EOF.
        self.pipe_reader = "engine"
        self.engine_thread: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.ae = _CoreEngine(engine, self, max_waiting, compile_timeout)
        self.ae.start()

    def ready_info(self) -> dict[str, Any]:
        engine = self.ae.engine
        return {"tokenizer": engine.tokenizer, "config": engine.config,
                "num_pages": engine.num_pages, "max_in_flight": self.ae.max_in_flight,
                "stats": self.ae.stats()}

    # -- out -----------------------------------------------------------------------------------

    def emit(self, stream: _CoreStream, item: RequestOutput | BaseException) -> None:
        rid = stream.request_id
        if isinstance(item, BaseException):
            if stream.held_ids or stream.held_text:  # what was held back, then the error
                self.push(("out", rid, stream.held_ids, stream.held_text, None, None, None))
            self.push(("err", rid, _portable(item)))
            return
        prompt = None
        ids, text = item.delta_token_ids, item.delta_text
        if not stream.prompt_sent:
            stream.prompt_sent = True
            prompt = item.prompt_token_ids
        elif self.stream_interval > 1:
            # after the first output, one message per stream_interval tokens (and the last)
            if stream.held_ids or stream.held_text:
                ids, text = stream.held_ids + ids, stream.held_text + text
            if not item.finished and len(ids) < self.stream_interval:
                stream.held_ids, stream.held_text = ids, text
                return
            stream.held_ids, stream.held_text = [], ""
        final = (item.token_ids, item.text, item.usage) if item.finished else None
        self.push(("out", rid, ids, text, item.finish_reason, prompt, final))

    def push(self, item: tuple[Any, ...]) -> None:
        with self.lock:
            self.items.append(item)

    def accepted(self, rid: str) -> None:
        with self.lock:
            self.items.append(("acc", rid))
            aborted = self.pending.pop(rid, False)
        if aborted:
            self.ae._submit_abort(rid)

    def rejected(self, rid: str, exc: BaseException) -> None:
        with self.lock:
            self.pending.pop(rid, None)
            self.items.append(("rej", rid, _portable(exc)))

    def flush(self, final: tuple[Any, ...] | None = None) -> None:
        """Send what is queued (with the stats if they changed) as one batch."""
        stats = self.ae.stats()
        running = self.ae.is_running  # False once it crashed (or shuts down)
        with self.lock:
            items, self.items = self.items, []
            if stats == self.sent_stats:
                stats = None
            else:
                self.sent_stats = stats
            state = None
            if running != self.sent_running:
                self.sent_running = running
                error = self.ae.error
                state = (running, None if error is None else _portable(error))
            if items or stats is not None or state is not None:
                self.send(("batch", items, stats, state))
            if final is not None:
                self.send(final)

    def beat(self, msg: tuple[Any, ...]) -> None:
        with self.lock:
            self.send(msg)

    def send(self, msg: tuple[Any, ...]) -> None:
        try:
            self.conn.send_bytes(_dumps(msg))
        except (OSError, ValueError):  # the server is gone
            self.stop.set()

    # -- in ------------------------------------------------------------------------------------

    def poll(self) -> None:
        """On the engine thread: handle every command that has arrived on the pipe."""
        if self.pipe_reader != "engine":
            return
        conn = self.conn
        try:
            while conn.poll(0):
                self.handle(conn.recv())
        except (EOFError, OSError):
            self.pipe_reader = "closed"
            # ae.shutdown joins the engine thread: from a thread of its own
            threading.Thread(target=self.server_gone, name="vibekit-core-eof",
                             daemon=True).start()

    def wait(self) -> None:
        """On the engine thread, idle: until a command arrives on the pipe or another thread
        queued one (its wake-up)."""
        fds: list[Any] = [self._wake_r]
        if self.pipe_reader == "engine":
            fds.append(self.conn)
        multiprocessing.connection.wait(fds)
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # full: the engine thread has wake-ups to read already

    def engine_stopped(self) -> None:
        """The engine thread is done (stopped or crashed): a reader thread answers the pipe
        (rejections, aborts, shutdown) until EOF."""
        if self.pipe_reader == "engine":
            self.pipe_reader = "thread"
            threading.Thread(target=self.read, name="vibekit-core-commands",
                             daemon=True).start()

    def read(self) -> None:
        """The reader thread (once the engine thread has stopped): commands in order; EOF:
        the server is gone, so everything is aborted and the core stops."""
        try:
            while True:
                self.handle(self.conn.recv())
        except (EOFError, OSError):
            pass
        self.server_gone()

    def server_gone(self) -> None:
        if not self.closing:
            logger.warning("the server process is gone; the engine core stops")
            self.closing = True
            self.ae.shutdown(False, 0.0)
        self.stop.set()

    def handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "add":
            _, rid, prompt, params, prediction, timeout = msg
            received = time.monotonic()  # the request's timeout counts from here
            if params.response_format is not None:
                # compiled off the engine thread (and off this one: aborts keep flowing)
                with self.lock:
                    self.pending[rid] = False
                self.compiler.submit(self.add, rid, prompt, params, prediction, timeout,
                                     received, True)
            else:
                self.add(rid, prompt, params, prediction, timeout, received, False)
        elif kind == "abort":
            _, rid, token = msg
            with self.lock:
                compiling = rid in self.pending
                if compiling:
                    self.pending[rid] = True  # undone once accepted
            if token is None:
                if not compiling:
                    self.ae._submit_abort(rid)
                return
            reply = _Reply(self, rid, token)
            try:
                self.ae._submit(_Abort(rid, reply), allow_closing=True)  # type: ignore[arg-type]
            except (EngineClosedError, EngineDeadError):
                reply.set_result(None)
                self.flush()
        elif kind == "shutdown" and not self.closing:
            self.closing = True
            threading.Thread(target=self.shutdown, args=msg[1:], daemon=True).start()

    def add(self, rid: str, prompt: Any, params: SamplingParams, prediction: Any,
            timeout: float | None, received: float, compile_first: bool) -> None:
        reply = _Reply(self, rid)
        try:
            if compile_first:
                left = None if timeout is None else timeout - (time.monotonic() - received)
                self.ae.compile_grammar(params.response_format, left)
            kwargs: dict[str, Any] = {}
            if prediction is not None:
                if not self.ae._accepts_prediction:
                    raise InvalidRequestError("prediction is not supported by this engine")
                kwargs["prediction"] = prediction
            deadline = None if timeout is None else received + timeout
            stream = _CoreStream(self.ae, rid, _IMMEDIATE, False)  # type: ignore[arg-type]
            self.ae._submit(_Add(prompt, params, rid, kwargs, stream, reply,  # type: ignore
                                 deadline, timeout))
        except Exception as exc:  # refused before the engine thread saw it
            reply.set_exception(exc)
            self.flush()

    def shutdown(self, graceful: bool, timeout: float) -> None:
        self.ae.shutdown(graceful, timeout)
        self.flush(final=("stopped",))
        self.stop.set()


def _core_main(conn: Any, factory: Callable[..., Engine], args: tuple[Any, ...],
               kwargs: dict[str, Any], max_waiting: int | None, beat: float | None,
               compile_timeout: float | None, stream_interval: int = 1) -> None:
    """The core process: build the engine, then serve the pipe until shutdown or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server drains on Ctrl-C, then stops us
    try:
        engine = factory(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - report it, whatever it is
        conn.send(("failed", _portable(exc)))
        return
    try:
        core = _Core(conn, engine, max_waiting, beat, compile_timeout, stream_interval)
        tune_process()  # the model's heap out of the collector's way (serve/tuning.py)
        conn.send(("ready", core.ready_info()))
        if core.heartbeat is not None:
            core.heartbeat.start()
        core.stop.wait()
        if core.heartbeat is not None:
            core.heartbeat.stop()
        core.compiler.shutdown(wait=False, cancel_futures=True)
    finally:
        engine.close()
        conn.close()
