"""CI runs every benchmark script in its quick mode so none can rot (no speed assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize("script", ["bench_decode.py", "bench_predicted.py", "bench_attention.py",
                                    "bench_predicted.py --model dummy:tiny-llama"])
def test_benchmark_runs_in_quick_mode(script, tmp_path):
    out = tmp_path / "result.json"
    script, *extra = script.split()
    proc = subprocess.run([sys.executable, str(HERE / script), "--quick", *extra,
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert out.read_text().strip()
