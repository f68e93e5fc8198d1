"""MaskBench (real-world schemas with valid and invalid instances, ../shared/data): on a fixed
subset, vibekit's auto backend never accepts an invalid instance token by token, and passes at
least as many schemas as llguidance called directly. Skipped when the sample is absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("llguidance")
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "maskbench-dev.jsonl"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_maskbench",
                                                  ROOT / "benchmarks" / "bench_maskbench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not DATA.exists(), reason=f"MaskBench sample {DATA} not present")
def test_auto_accepts_no_invalid_instance_on_a_maskbench_subset():
    from transformers import AutoTokenizer

    import vibekit.zoo

    bench = _bench()
    rows = bench.load_rows(DATA, None)[::20]  # 25 schemas, every 20th
    tokenizer = AutoTokenizer.from_pretrained(vibekit.zoo.path("code-edit-tiny"))
    results = bench.run(rows, tokenizer, 4096, ("llguidance (direct)", "vibekit[auto]"))
    auto = results["vibekit[auto]"]
    assert auto["invalid_accepted"] == 0, auto["wrong_schemas"]
    assert auto["passed"] + auto["wrong"] + auto["refused"] == len(rows)
    assert auto["passed"] >= results["llguidance (direct)"]["passed"]
