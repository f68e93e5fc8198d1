"""CI runs every benchmark script in its quick mode so none can rot (no speed assertions)."""

from __future__ import annotations

import json
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


def test_bench_attention_times_a_decode_step_on_both_page_layouts(tmp_path):
    from vibekit.ops.attention_cpu import attention_kernel_available

    if not attention_kernel_available():
        pytest.skip("the AVX512 attention kernel is unavailable here")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(HERE / "bench_attention.py"), "--decode-step",
                           "--dtypes", "bfloat16", "--kv-lens", "40", "--layers", "2",
                           "--repeats", "1", "--iters", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["pages"] for r in rows] == ["contiguous", "scattered"]
    assert all(r["ms_per_step"] > 0 for r in rows)
