"""CI: the hybrid prefix-cache benchmark runs in quick mode (no speed asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_bench_hybrid_prefix_quick():
    script = Path(__file__).with_name("bench_hybrid_prefix.py")
    out = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    assert "speedup from the cache" in out
    assert "greedy ids equal HF: True" in out
