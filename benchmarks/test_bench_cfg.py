"""The CFG-cache benchmark runs end to end in --quick mode (no speed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_bench_cfg_quick_completes(tmp_path):
    out = tmp_path / "cfg.json"
    proc = subprocess.run([sys.executable, str(HERE / "bench_cfg.py"), "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "steps=10" in proc.stdout and "matmul peak" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    torch_rows = [r for r in rows if r["backend"] == "torch"]
    assert [r["variant"] for r in torch_rows][:5] == [
        "naive CFG (2 forwards/step)", "batched CFG", "batched CFG + prompt KV", "CFG cache",
        "CFG cache + prompt KV"]
    assert all(r["images_per_s"] > 0 and r["speedup_vs_naive"] > 0 for r in rows)
    assert torch_rows[0]["min_psnr_db"] == float("inf")  # the baseline is the reference
