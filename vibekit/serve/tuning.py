"""Process settings of the server's processes (the HTTP one and the engine core), applied once
each is set up: `tune_process()`, which is `freeze_heap()`.

freeze_heap: keep the startup heap out of the garbage collector's way.

A server process holds a large, long-lived heap once it is up (torch, transformers, the model,
FastAPI, pydantic: ~260k tracked objects in the HTTP process alone) and allocates small
short-lived objects per token (outputs, SSE chunks). Every collection of the older generations
walks the whole startup heap: measured on `dummy:tiny-llama` at concurrency 64, a third of the
HTTP process's CPU went to the collector (0.42 of 1.22 s), and a full collection stalls every
stream for ~0.2 s. gc.freeze() moves everything alive at startup into a permanent generation
that collections skip; what is allocated later is collected as before. vLLM and SGLang do the
same after start-up.

Not done: a shorter GIL switch interval (sys.setswitchinterval(0.0005)) was measured and
dropped; it did not help on a quiet machine (benchmarks/RESULTS.md, "engine core process: where
the time goes").
"""

from __future__ import annotations

import atexit
import gc


def tune_process() -> None:
    """What a server process does once it is set up, before it serves: freeze_heap()."""
    freeze_heap()


def freeze_heap() -> int:
    """Collect garbage, then exempt every object alive now from later collections (call once
    the process is set up, before it serves). Returns how many objects were frozen. At exit
    they are thawed again, so the interpreter's last collections still see them (extension
    types such as triton's complain about instances never freed otherwise)."""
    gc.collect()
    gc.freeze()
    atexit.unregister(gc.unfreeze)
    atexit.register(gc.unfreeze)
    return gc.get_freeze_count()
