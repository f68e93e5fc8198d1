"""The streaming-ASR benchmark runs end to end in --quick mode (no speed assertions; it does
check that vibekit's and HF's final transcripts are equal, or exits non-zero)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_bench_asr_quick_completes(tmp_path):
    out = tmp_path / "asr.json"
    proc = subprocess.run([sys.executable, str(HERE / "bench_asr.py"), "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["streams"] for r in rows] == [1, 2] and all(r["exact"] for r in rows)
