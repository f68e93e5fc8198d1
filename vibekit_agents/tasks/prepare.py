"""Generate a scenario's requests and trusted reference outputs, and derive workload facts."""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path
from typing import Any

from vibekit_agents.scenario import load_scenario


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call fn with the keyword arguments it accepts (all of them if it takes **kwargs)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def prepare(scenario_dir: str, data_dir: str, judge_dir: str, threads: int = 1) -> dict:
    """Write data_dir/requests.json, data_dir/facts.json and judge_dir/references.json."""
    import torch

    if threads:
        torch.set_num_threads(threads)  # the harness's own work, robust on a shared CPU
    sc = load_scenario(scenario_dir)
    source, note = sc.resolved_model()
    w = sc.workload
    workload = sc.module("workload")
    fallback = sc.model.fallback_source
    if hasattr(workload, "model_unfit") and fallback and source != sc.resolve_source(fallback):
        why = _call(workload.model_unfit, source, dtype=sc.model.dtype, device=sc.model.device,
                    model_seed=sc.model.seed, **w.params)
        if why:
            note = f"{source} is installed but {why}; using the declared fallback"
            source = sc.resolve_source(fallback)
    n = w.num_requests + w.warmup_requests
    t0 = time.perf_counter()
    requests = _call(workload.make_requests, w.seed, n, model=source,
                     dtype=sc.model.dtype, device=sc.model.device, model_seed=sc.model.seed,
                     **w.params)
    if not isinstance(requests, list) or len(requests) != n:
        raise ValueError(f"workload.make_requests returned {type(requests).__name__} of "
                         f"{len(requests) if isinstance(requests, list) else '?'} requests; "
                         f"expected a list of {n}")
    t_workload = time.perf_counter() - t0
    t0 = time.perf_counter()
    references = _call(sc.module("reference").reference_outputs, requests, model=source,
                       dtype=sc.model.dtype, device=sc.model.device, seed=sc.model.seed)
    if len(references) != n:
        raise ValueError(f"reference.reference_outputs returned {len(references)} outputs for "
                         f"{n} requests")
    t_reference = time.perf_counter() - t0
    facts = workload_facts(sc, requests, source)
    modes = sorted({str(r.get("metadata", {}).get("mode")) for r in requests
                    if isinstance(r.get("metadata"), dict) and "mode" in r["metadata"]})
    facts.update(model_note=note, workload_s=round(t_workload, 2),
                 reference_s=round(t_reference, 2), workload_mode=",".join(modes) or None)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    Path(judge_dir).mkdir(parents=True, exist_ok=True)
    (Path(data_dir) / "requests.json").write_text(json.dumps(requests))
    (Path(data_dir) / "facts.json").write_text(json.dumps(facts, indent=2))
    (Path(judge_dir) / "references.json").write_text(json.dumps(references))
    return facts


def workload_facts(sc: Any, requests: list[dict], source: str) -> dict[str, Any]:
    """Facts the skills' applicability rules test (see vibekit_agents.skills)."""
    texts = [_prompt_text(r) for r in requests]
    shared = 0
    if len(texts) > 1:
        shared = min(len(os.path.commonprefix([texts[0], t])) for t in texts[1:])
    model_type = _model_type(source)
    return {
        "model.source": source,
        "model.type": model_type,
        "model.hybrid": model_type in ("bamba", "qwen3_5", "qwen3_next", "nemotron_h",
                                       "mamba2", "falcon_h1"),
        "device.cpu": sc.model.device == "cpu",
        "device.cuda": sc.model.device.startswith("cuda"),
        "device.mps": sc.model.device == "mps",
        "workload.has_predictions": any("prediction" in r for r in requests),
        "workload.has_response_format": any(r.get("response_format") for r in requests),
        "workload.has_guidance": any(r.get("guidance_scale") for r in requests),
        "workload.shared_prefix": shared >= 32,
        "workload.shared_prefix_chars": shared,
        "workload.concurrent": max(sc.workload.concurrency) > 1,
        "workload.max_concurrency": max(sc.workload.concurrency),
        "workload.sampling": any(r.get("temperature", 1.0) > 0 for r in requests),
        "checker.exact": sc.checker.exact,
        "checker.tolerant": not sc.checker.exact,
        "cpu.count": os.cpu_count() or 1,
    }


def _prompt_text(request: dict) -> str:
    if "messages" in request:
        return "".join(f"{m.get('role')}:{m.get('content')}\n" for m in request["messages"])
    p = request.get("prompt", "")
    return p if isinstance(p, str) else " ".join(map(str, p))


def _model_type(source: str) -> str:
    try:
        if source.startswith("dummy:"):
            spec = source[len("dummy:"):]
            path = Path(spec)
            if path.is_dir():
                path = path / "config.json"
            if path.is_file():
                return json.loads(path.read_text()).get("model_type", "")
            return "llama"
        if source.startswith("zoo:"):
            from vibekit import zoo

            return json.loads((zoo.path(source[4:]) / "config.json").read_text()).get(
                "model_type", "")
        return json.loads((Path(source) / "config.json").read_text()).get("model_type", "")
    except Exception:  # facts are hints; an unreadable config only loses one
        return ""
