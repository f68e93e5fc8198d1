"""Liveness of the engine core process: a core that is alive but makes no progress (a forward
that never returns, a deadlock, a frozen process) is found, so no client waits on it forever.

The core reports progress (Heartbeat): its engine thread counts its loop iterations, and a
heartbeat thread sends ("beat", iterations, idle) every `beat_interval(stall_timeout)` seconds;
idle means the engine thread is waiting for commands, so it cannot be stuck. The server side
(Watchdog) counts as progress every batch, every beat with a new count and every idle beat. If
the client holds unfinished requests and sees no progress for `stall_timeout` seconds, the core
has stalled.

Decided: a stalled core is killed and the client marks it dead (its requests and every later
one fail with EngineStalledError: HTTP 503 `engine_stalled`, an in-band error in streams;
/health answers 503 `engine_stalled`; /metrics counts it). It is not restarted in place: a
step that hung once will hang again on the same requests, loading the model again takes as long
as a start, and the process supervisor that restarts a server whose /health fails (systemd,
Kubernetes) does that better and visibly. The timeout must exceed the longest legitimate step
(a large prefill on a CPU takes seconds), so the default is a generous 60 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from vibekit.runtime.async_engine import EngineDeadError

logger = logging.getLogger("vibekit.serve")

DEFAULT_STALL_TIMEOUT = 60.0


class EngineStalledError(EngineDeadError):
    """The engine core held unfinished requests and made no progress for the stall timeout;
    it was killed, and every in-flight and later request fails with this."""


def beat_interval(stall_timeout: float) -> float:
    """How often the core sends a heartbeat: several beats per timeout, at most one a second."""
    return min(1.0, stall_timeout / 4)


def check_stall_timeout(stall_timeout: float | None) -> None:
    if stall_timeout is not None and not (isinstance(stall_timeout, (int, float))
                                          and stall_timeout > 0):
        raise ValueError(f"engine_stall_timeout={stall_timeout!r} is invalid; it must be a "
                         "number of seconds > 0, or None to turn the check off")


class Heartbeat:
    """The core's side: the engine thread bumps `iterations` and sets `idle`; a thread of its
    own sends them every `interval` seconds through `send` (which must be thread-safe)."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None], interval: float) -> None:
        self.iterations = 0  # engine thread only
        self.idle = False  # engine thread only: True while it waits for commands
        self._send = send
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vibekit-core-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._send(("beat", self.iterations, self.idle))


class Watchdog:
    """The server's side: a thread that calls `on_stall(message)` once, when the core has held
    work (`num_busy()` > 0) without progress for `timeout` seconds."""

    def __init__(self, timeout: float, num_busy: Callable[[], int],
                 on_stall: Callable[[str], None]) -> None:
        self.timeout = timeout
        self.num_stalls = 0
        self._num_busy = num_busy
        self._on_stall = on_stall
        now = time.monotonic()
        self._last_progress = now
        self._last_beat = now
        self._busy_since: float | None = None  # when the core last went from idle to busy
        self._seen = -1  # the iteration count of the latest beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vibekit-core-watchdog",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def progress(self) -> None:
        """A batch arrived (the engine thread ran an iteration)."""
        self._last_progress = self._last_beat = time.monotonic()

    def beat(self, iterations: int, idle: bool) -> None:
        now = time.monotonic()
        self._last_beat = now
        if idle or iterations != self._seen:
            self._seen = iterations
            self._last_progress = now

    def seconds_without_progress(self, now: float | None = None) -> float:
        """How long the core has held work without progress (0 while it holds none)."""
        if self._busy_since is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, now - max(self._last_progress, self._busy_since))

    def check(self, now: float) -> str | None:
        """The stall message if the core has stalled as of `now`, else None."""
        busy = self._num_busy()
        if busy == 0:
            self._busy_since = None
            return None
        if self._busy_since is None:
            self._busy_since = now  # NOTE: up to one tick late, which only delays a verdict
        stuck = self.seconds_without_progress(now)
        if stuck <= self.timeout:
            return None
        silent = now - self._last_beat
        if silent < stuck:
            why = ("its heartbeat kept coming, so its engine thread is stuck (a step that "
                   "never returns, or a deadlock)")
        else:
            why = (f"its process sent nothing, not even a heartbeat, for {silent:.1f} s "
                   "(frozen, or a native call holding the GIL)")
        return (f"the engine core made no progress for {stuck:.1f} s while holding {busy} "
                f"unfinished request(s) (engine stall timeout {self.timeout:g} s); {why}. It "
                "was killed; restart the server")

    def _run(self) -> None:
        tick = beat_interval(self.timeout)
        while not self._stop.wait(tick):
            message = self.check(time.monotonic())
            if message is not None:
                self.num_stalls += 1
                logger.error("%s", message)
                self._on_stall(message)
                return
