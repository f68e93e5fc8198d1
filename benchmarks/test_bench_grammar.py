"""The structured-output benchmark runs end to end in quick mode (no speed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xgrammar")


def test_bench_grammar_quick_runs(tmp_path):
    out = tmp_path / "grammar.json"
    script = Path(__file__).with_name("bench_grammar.py")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert {"overhead", "jump_forward", "vs_hf", "roofline"} <= set(results)
    assert all(r["same_token_ids"] for r in results["vs_hf"])
    assert all(r["steps_on"] < r["steps_off"] for r in results["jump_forward"])
