"""CI runs bench_tp.py in its quick mode so it cannot rot (no speed assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_bench_tp_runs_in_quick_mode(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(HERE / "bench_tp.py"), "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "TP=2" in out.read_text()
