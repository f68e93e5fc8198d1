"""The MLX benchmark runs end to end in quick mode (no speed assertions); it is skipped with a
message where mlx, mlx-lm or xgrammar is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlx.core", reason="mlx is not installed (pip install 'mlx[cpu]')")
pytest.importorskip("mlx_lm", reason="the peer mlx-lm is not installed (pip install mlx-lm)")
pytest.importorskip("xgrammar", reason="xgrammar is not installed")


def test_bench_mlx_quick_runs(tmp_path):
    out = tmp_path / "mlx.json"
    script = Path(__file__).with_name("bench_mlx.py")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results["ratio_vs_mlx_lm"]) == {f"{k}_{clock}" for k in ("plain", "json",
                                                                          "json_pred")
                                                for clock in ("wall", "cpu")}
    # Greedy on the same weights: the two engines emit the same tokens, constrained or not.
    assert all(results["same_token_ids"].values()), results["same_token_ids"]
    assert results["outputs_parse"]


def test_bench_mlx_agreement_quick_runs(tmp_path):
    out = tmp_path / "agreement.json"
    script = Path(__file__).with_name("bench_mlx.py")
    proc = subprocess.run([sys.executable, str(script), "--agreement", "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results) == {"mlx-q4", "mlx-q8"}
    assert all(0.0 <= r["teacher_forced_top1"] <= 1.0 for r in results.values())


def test_bench_mlx_matmul_layout_quick_runs(tmp_path):
    out = tmp_path / "layout.json"
    script = Path(__file__).with_name("bench_mlx.py")
    proc = subprocess.run([sys.executable, str(script), "--matmul-layout", "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert len(results) == 12 and all(r["speedup"] > 0 for r in results.values())


def test_bench_mlx_block_cost_quick_runs(tmp_path):
    out = tmp_path / "block.json"
    script = Path(__file__).with_name("bench_mlx.py")
    proc = subprocess.run([sys.executable, str(script), "--block-cost", "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results) == {"T=1", "T=8", "T=64"}
    assert all(r["vibekit"] > 0 and r["mlx_lm"] > 0 for r in results.values())
