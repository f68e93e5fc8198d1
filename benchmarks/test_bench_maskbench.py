"""The MaskBench benchmark runs end to end in quick mode (no speed assertions); skipped when the
sample in ../shared/data is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xgrammar")
pytest.importorskip("llguidance")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "maskbench-dev.jsonl"


@pytest.mark.skipif(not DATA.exists(), reason=f"MaskBench sample {DATA} not present")
def test_bench_maskbench_quick_runs(tmp_path):
    out = tmp_path / "maskbench.json"
    script = Path(__file__).with_name("bench_maskbench.py")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    small = json.loads(out.read_text())["small"]
    assert set(small) == {"xgrammar (direct)", "llguidance (direct)", "vibekit[xgrammar]",
                          "vibekit[llguidance]", "vibekit[auto]"}
    assert all(r["passed"] + r["wrong"] + r["refused"] == 12 for r in small.values())
    assert small["vibekit[auto]"]["invalid_accepted"] == 0
