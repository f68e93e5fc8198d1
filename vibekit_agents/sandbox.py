"""Run one task in a child process with a time limit, a memory limit and an audit hook.

Children fork from a forkserver that has already imported torch, transformers and vibekit, so
a task starts in milliseconds instead of seconds, yet each candidate runs in a fresh process:
nothing it patches survives it. The child:

  - drops ANTHROPIC_* variables from its environment,
  - caps its address space at (its size at start + memory_limit_mb),
  - installs an audit hook (which Python code cannot remove) that refuses and records any
    read or listing of a protected folder (the judge's references, the prepared requests) and
    records process spawns; with `restrict_writes`, it also refuses and records every file
    write outside a scratch folder that is deleted with the process, so nothing a candidate
    computes survives it (no cache carried from the judge's run to the benchmark),
  - writes its stdout/stderr to a log file and its result as JSON.

`run_task` classifies the end: ok, error (an exception in the task), oom, timeout, crashed.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SandboxResult", "run_task"]

_PRELOAD = ["vibekit_agents.tasks.preload"]
_lock = threading.Lock()
_ctx: Any = None


@dataclass
class SandboxResult:
    status: str  # "ok" | "error" | "oom" | "timeout" | "crashed"
    value: Any = None
    error: str = ""
    traceback: str = ""
    wall_s: float = 0.0
    log_tail: str = ""
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        if self.ok:
            return "ok"
        return f"{self.status}: {self.error or self.log_tail[-300:]}".strip()


def _context() -> Any:
    global _ctx
    with _lock:
        if _ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _ctx = ctx
        return _ctx


def run_task(task: str, args: dict[str, Any], timeout_s: float, memory_limit_mb: int = 6144,
             protected: tuple[str, ...] = (), log_path: str | Path | None = None,
             cwd: str | Path | None = None, restrict_writes: bool = False) -> SandboxResult:
    """Run `task` ("package.module:function", called with **args; returns JSON-able data) in a
    sandboxed child process and classify how it ended."""
    ctx = _context()
    tmp = Path(tempfile.mkdtemp(prefix="vibekit-task-"))
    result_path = tmp / "result.json"
    violations_path = tmp / "violations.txt"
    log = Path(log_path) if log_path else tmp / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = ctx.Process(target=_child_main, daemon=True, args=(
        task, args, str(result_path), str(log), memory_limit_mb,
        tuple(os.path.realpath(p) for p in protected), str(violations_path),
        str(cwd) if cwd else None, restrict_writes))
    t0 = time.perf_counter()
    with _main_hidden():
        proc.start()
    try:
        proc.join(timeout_s)
    except BaseException:  # an interrupt: take the child down with us
        _kill(proc)
        raise
    timed_out = proc.is_alive()
    if timed_out:
        _kill(proc)
    wall = time.perf_counter() - t0
    res = SandboxResult(status="crashed", wall_s=wall, log_tail=_tail(log))
    if violations_path.is_file():
        res.violations = sorted(set(violations_path.read_text().splitlines()))
    if timed_out:
        res.status, res.error = "timeout", f"no result after {timeout_s:.0f} s; killed"
    elif result_path.is_file():
        data = json.loads(result_path.read_text())
        res.status = data["status"]
        res.value = data.get("value")
        res.error = data.get("error", "")
        res.traceback = data.get("traceback", "")
    elif proc.exitcode is not None and proc.exitcode < 0:
        sig = -proc.exitcode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        res.error = f"killed by {name}" + (" (out of memory?)" if sig == signal.SIGKILL else "")
        if sig == signal.SIGKILL:
            res.status = "oom"
    else:
        res.error = f"exited with code {proc.exitcode} before writing a result"
    for p in (result_path, violations_path):
        p.unlink(missing_ok=True)
    if not log_path:
        log.unlink(missing_ok=True)
    tmp.rmdir() if not any(tmp.iterdir()) else None
    return res


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start children without re-running the parent's __main__ in them (multiprocessing's
    spawn/forkserver default): tasks are named by module, and a caller's script need not be
    importable or guarded by `if __name__ == "__main__"`."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if main and k in main.__dict__}
    with _lock:
        try:
            if main is not None:
                main.__dict__.pop("__file__", None)
                main.__spec__ = None
            yield
        finally:
            if main is not None:
                main.__dict__.update(saved)


def _kill(proc: Any) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()
    proc.join(5)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", errors="replace")


# -- child side -------------------------------------------------------------------------------


def _child_main(task: str, args: dict[str, Any], result_path: str, log_path: str,
                memory_limit_mb: int, protected: tuple[str, ...], violations_path: str,
                cwd: str | None, restrict_writes: bool = False) -> None:
    import importlib
    import resource
    import shutil
    import sys

    os.setpgrp()  # so a timeout kills whatever the task spawned too
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    for key in [k for k in os.environ if k.startswith("ANTHROPIC")]:
        del os.environ[key]
    if cwd:
        os.chdir(cwd)
    vm = _vm_bytes()
    if vm and memory_limit_mb:
        limit = vm + memory_limit_mb * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    scratch = None
    if restrict_writes:
        scratch = os.path.realpath(tempfile.mkdtemp(prefix="vibekit-scratch-"))
        for key in ("TMPDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            os.environ[key] = scratch
        tempfile.tempdir = scratch
        sys.dont_write_bytecode = True
    if protected or restrict_writes:
        writable = (scratch,) if scratch else None
        sys.addaudithook(_make_hook(protected, violations_path, writable,
                                    (os.path.realpath(result_path + ".tmp"),
                                     os.path.realpath(result_path))))
    out: dict[str, Any]
    try:
        module_name, func_name = task.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        out = {"status": "ok", "value": func(**args)}
    except MemoryError as exc:
        out = {"status": "oom", "error": f"MemoryError: {exc}"}
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, none escapes
        msg = f"{type(exc).__name__}: {exc}"
        status = "oom" if "can't allocate memory" in msg or "out of memory" in msg else "error"
        out = {"status": status, "error": msg[:2000], "traceback": traceback.format_exc()[-6000:]}
    try:
        text = json.dumps(out, default=str)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"status": "error", "error": f"result is not JSON: {exc}"})
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, result_path)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # unlink what the task's libraries registered (named semaphores) before os._exit
        from multiprocessing import util

        util._run_finalizers(0)
    except Exception:
        pass
    os._exit(0)


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _make_hook(protected: tuple[str, ...], violations_path: str,
               writable: tuple[str, ...] | None = None, also_writable: tuple[str, ...] = ()
               ) -> Any:
    """The child's audit hook. writable=None: writes are not restricted; else only paths
    under `writable` (and the files in `also_writable`) may be opened for writing."""
    realpath = os.path.realpath
    spawn_events = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                    "os.fork", "pty.spawn"}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    allowed = {violations_path, *also_writable}

    def is_write(event: str, hook_args: tuple) -> bool:
        if event != "open" or len(hook_args) < 3:
            return event in ("os.rename", "shutil.copyfile", "sqlite3.connect")
        mode, flags = hook_args[1], hook_args[2]
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return isinstance(flags, int) and bool(flags & write_flags)

    def check_write(event: str, hook_args: tuple) -> None:
        if writable is None or not is_write(event, hook_args):
            return
        targets = hook_args[1:2] if event in ("os.rename", "shutil.copyfile") else hook_args[:1]
        for path in targets:
            if isinstance(path, int) or path is None:
                continue
            try:
                full = realpath(os.fsdecode(path))
            except (TypeError, ValueError):
                continue
            if full in allowed or any(full == w or full.startswith(w + os.sep)
                                      for w in writable):
                continue
            if full == ":memory:" or str(path) == ":memory:":
                continue
            record(f"write outside the scratch folder: {full} ({event})")
            raise PermissionError(f"{full}: candidates may write only to their scratch folder")

    def record(message: str) -> None:
        with open(violations_path, "a") as f:  # reentrant: this path is not protected
            f.write(message + "\n")

    def hook(event: str, hook_args: tuple) -> None:
        if event in ("open", "os.listdir", "os.scandir", "shutil.copyfile", "os.rename",
                     "sqlite3.connect"):
            if not hook_args:
                return
            check_write(event, hook_args)
            path = hook_args[0]
            if isinstance(path, int) or path is None:
                return
            try:
                full = realpath(os.fsdecode(path))
            except (TypeError, ValueError):
                return
            if full == violations_path:
                return
            for root in protected:
                if full == root or full.startswith(root + os.sep):
                    record(f"read of protected path {full} ({event})")
                    raise PermissionError(f"{full} is off limits to candidates")
        elif event in spawn_events:
            record(f"spawned a process ({event}: {str(hook_args)[:200]})")

    return hook
