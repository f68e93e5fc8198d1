"""CI runs bench_router.py in its quick mode so it cannot rot (no speed assertions); it skips
when Ray Serve is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def test_bench_router_runs_in_quick_mode(tmp_path):
    pytest.importorskip("ray.serve", reason="the `ray` extra (ray[serve]) is not installed")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(HERE / "bench_router.py"), "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == {"prefix", "round_robin"}
    assert all(0.0 <= s["hit_rate"] <= 1.0 for s in summary.values())
