"""Render a plan as a runnable server.py that serves the same stack through vibekit's public
API (`Engine.from_pretrained`, `vibekit.serve.create_app`), with no vibekit_agents import.

Like `vibekit serve`, it runs the engine in a process of its own (`EngineCoreClient`, with the
stall check) by default; `--no-engine-process` keeps it on a thread of the server process."""

from __future__ import annotations

from pathlib import Path

from vibekit_agents.plan import Plan

__all__ = ["render_server_py"]

_SERVER_TEMPLATE = '''\
"""Serve the stack vibekit-synthesize tuned for scenario `{scenario}` (plan {digest}).

Built only from vibekit's public API. Run it with the `serve` extra installed, from the vibekit
checkout (the distribution is `vibekit-serving`; `vibekit` on PyPI is another project):

    pip install -e "/path/to/vibekit[serve]"
    python server.py --port 8000
    curl localhost:8000/v1/completions -H 'content-type: application/json' \\
        -d '{{"model": "{name}", "prompt": "def fib(n):", "max_tokens": 32}}'

The plan ({summary}):
{plan_comment}
"""

from __future__ import annotations

import argparse
{imports}
import torch
import uvicorn

from vibekit import Engine, SamplingParams
from vibekit.runtime.async_engine import AsyncEngine
from vibekit.serve import create_app
from vibekit.serve.engine_core import EngineCoreClient
from vibekit.serve.tuning import tune_process

MODEL = {source!r}
DTYPE = {dtype!r}
DEVICE = {device!r}
ENGINE_OPTIONS = {engine_options}
USE_PREDICTIONS = {use_predictions!r}
NUM_THREADS = {num_threads!r}  # 0: torch's default
PLAN = {plan_dict!r}
{extension_const}



def build_engine() -> Engine:
    # NOTE: with the engine process (the default) this runs in that process, which imports
    # this file by path (it is spawned): keep main() behind the __main__ guard below.
    if NUM_THREADS:
        torch.set_num_threads(NUM_THREADS)
    # ENGINE_OPTIONS holds enable_predictions = USE_PREDICTIONS: the engine itself ignores
    # requests' `prediction` when the plan turned predicted outputs off.
    engine = Engine.from_pretrained(MODEL, dtype=DTYPE, device=DEVICE, **ENGINE_OPTIONS)
{extension_call}    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--served-model-name", default={name!r})
    ap.add_argument("--check", action="store_true", help="build the engine, generate, exit")
    ap.add_argument("--engine-process", action=argparse.BooleanOptionalAction, default=True,
                    help="run the engine in a process of its own, as `vibekit serve` does "
                         "(--no-engine-process: a thread of this process)")
    ap.add_argument("--engine-stall-timeout", type=float, default=60.0,
                    help="seconds the engine process may hold requests without progress "
                         "before it is killed and they fail with 503 engine_stalled (0: off)")
    args = ap.parse_args()
    if args.check:
        out = build_engine().generate(["Hello"], SamplingParams(max_tokens=4,
                                                                temperature=0.0))[0]
        print("ok", out.token_ids)
        return
    if args.engine_process:
        served = EngineCoreClient(build_engine, stall_timeout=args.engine_stall_timeout or None)
    else:
        served = AsyncEngine(build_engine(), start=False)
    app = create_app(served, args.served_model_name)
    tune_process()  # as `vibekit serve` does: the startup heap frozen
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
'''



def render_server_py(plan: Plan, scenario_name: str, served_name: str | None = None,
                     extension_dir: str = "extensions") -> str:
    """A runnable server.py serving `plan` through `vibekit.serve.create_app`."""
    m = plan.data["model"]
    name = served_name or f"vibekit-{scenario_name}"
    plan_comment = "\n".join("    " + line for line in plan.dumps().splitlines() if line.strip()
                             and not line.startswith("#"))
    summary = ", ".join(f"{k}={v}" for k, v in plan.knobs().items()
                        if k not in ("model.source",)) or "defaults"
    imports, ext_const, ext_call = "", "", ""
    if plan.extension:
        imports = "import importlib.util\nfrom pathlib import Path"
        ext_const = (f"EXTENSION = Path(__file__).resolve().parent / "
                     f"{str(Path(extension_dir) / Path(plan.extension).name)!r}")
        ext_call = ("    spec = importlib.util.spec_from_file_location('extension', EXTENSION)\n"
                    "    module = importlib.util.module_from_spec(spec)\n"
                    "    spec.loader.exec_module(module)\n"
                    "    engine = module.extend(engine, PLAN) or engine\n")
    return _SERVER_TEMPLATE.format(
        scenario=scenario_name, digest=plan.digest(), name=name, summary=summary[:300],
        plan_comment=plan_comment, imports=imports, source=m["source"],
        dtype=m.get("dtype", "float32"), device=m.get("device", "cpu"),
        engine_options=repr(plan.engine_options()), use_predictions=plan.use_predictions,
        num_threads=plan.num_threads, extension_const=ext_const, extension_call=ext_call,
        plan_dict=plan.data,
    )
