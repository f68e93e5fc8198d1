"""CI runs the CPU-decode benchmarks in quick mode so none can rot (no speed assertions; the
peers, llama.cpp and vLLM, are never started here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize("script", ["bench_peers.py", "bench_linear.py", "profile_decode.py",
                                    "bench_code_edit_peers.py"])
def test_cpu_decode_benchmark_runs_in_quick_mode(script, tmp_path):
    out = tmp_path / "result.json"
    extra = (["--work-dir", str(tmp_path)]
             if script in ("bench_peers.py", "bench_code_edit_peers.py") else [])
    proc = subprocess.run([sys.executable, str(HERE / script), "--quick", "--json", str(out),
                           *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads(out.read_text())


def test_quantization_agreement_runs_in_quick_mode():
    proc = subprocess.run([sys.executable, str(HERE / "quant_agreement.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| float32 | w8a8 |" in proc.stdout


def test_bench_peers_measures_decode_behind_a_long_prompt(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(HERE / "bench_peers.py"), "--quick",
                           "--batches", "1", "--prompt-len", "300", "--json", str(out),
                           "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert {r["engine"] for r in rows} == {"vibekit", "HF generate"}
    assert all(r["prompt_len"] == 300 and r["roofline"] is None and r["tok_s"] > 0
               for r in rows)


def test_bench_peers_refuses_a_long_prompt_with_batches_above_one(tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "bench_peers.py"), "--model",
                           "dummy:tiny-llama", "--engines", "vibekit", "--batches", "1,4",
                           "--prompt-len", "300", "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "--prompt-len needs --batches 1" in proc.stderr
