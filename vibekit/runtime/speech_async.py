"""AsyncSpeechEngine: a SpeechEngine stepped by its own thread, used from asyncio.

Every call into the engine (add, append, end, abort) runs on the engine thread between steps,
so the engine needs no locks; outputs go back to each stream's asyncio queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from vibekit.core.transcript import TranscriptOutput
from vibekit.runtime.speech_engine import SpeechEngine


class SpeechStream:
    """One request's handle: `append` / `end` audio, iterate its TranscriptOutputs."""

    def __init__(self, owner: AsyncSpeechEngine, request_id: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.request_id = request_id
        self.loop = loop
        self.queue: asyncio.Queue[TranscriptOutput] = asyncio.Queue()
        self.done = False

    async def append(self, samples, sample_rate: int | None = None) -> None:
        await self.owner.call(lambda e: e.append_audio(self.request_id, samples, sample_rate))

    async def end(self) -> None:
        await self.owner.call(lambda e: e.end_audio(self.request_id))

    def cancel(self) -> None:
        """Abort the request if it has not finished (safe to call more than once)."""
        if not self.done:
            self.done = True
            self.owner.submit(lambda e: self.owner.forget(e, self.request_id))

    async def __aiter__(self) -> AsyncIterator[TranscriptOutput]:
        while True:
            out = await self.queue.get()
            yield out
            if out.finished:
                self.done = True
                return


class AsyncSpeechEngine:
    """Example::

        engine = AsyncSpeechEngine(SpeechEngine.from_pretrained(path)); engine.start()
        stream = await engine.open(audio)            # or open(stream=True) + append / end
        async for out in stream: print(out.text)
    """

    def __init__(self, engine: SpeechEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.sample_rate = engine.sample_rate
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, SpeechStream] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.error: BaseException | None = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="vibekit-speech",
                                            daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, fn: Callable[[SpeechEngine], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, future))
        self._wake.set()
        return future

    async def call(self, fn: Callable[[SpeechEngine], Any]) -> Any:
        return await asyncio.wrap_future(self.submit(fn))

    async def open(self, audio=None, *, stream: bool = False, sample_rate: int | None = None,
                   max_tokens: int | None = None) -> SpeechStream:
        """Add a request (see SpeechEngine.add_request); raises its InvalidRequestError."""
        loop = asyncio.get_running_loop()
        holder: dict[str, SpeechStream] = {}

        def add(e: SpeechEngine) -> str:
            rid = e.add_request(audio, stream=stream, sample_rate=sample_rate,
                                max_tokens=max_tokens)
            self._streams[rid] = holder["s"] = SpeechStream(self, rid, loop)
            return rid

        await self.call(add)
        return holder["s"]

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def forget(self, e: SpeechEngine, request_id: str) -> None:
        """(engine thread) Abort a request and stop routing its outputs."""
        self._streams.pop(request_id, None)
        e.abort(request_id)

    def _loop(self) -> None:
        e = self.engine
        while not self._stop.is_set():
            while True:
                try:
                    fn, future = self._commands.get_nowait()
                except queue.Empty:
                    break
                try:
                    future.set_result(fn(e))
                except BaseException as exc:  # noqa: BLE001 (handed to the caller)
                    future.set_exception(exc)
            if not e.has_unfinished_requests():
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                outputs = e.step()
            except Exception as exc:  # one failed step fails the streams in flight, not the loop
                outputs = [TranscriptOutput(rid, [], "", 0, finish_reason="error",
                                            error=f"engine step failed: {exc!r}")
                           for rid in list(e.streams)]
                for rid in list(e.streams):
                    e.abort(rid)
            for out in outputs:
                handle = self._streams.get(out.request_id)
                if handle is None:
                    continue
                if out.finished:
                    self._streams.pop(out.request_id, None)
                handle.loop.call_soon_threadsafe(handle.queue.put_nowait, out)
            if not outputs:
                self._wake.wait(0.002)  # streams wait for audio: do not spin
                self._wake.clear()
        for rid in list(e.streams):
            e.abort(rid)
