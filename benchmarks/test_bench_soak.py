"""The soak benchmark runs in --quick mode: no unexpected response, nothing leaked."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest


def test_bench_soak_quick_has_no_unexpected_errors_and_no_leaks(capsys):
    pytest.importorskip("aiohttp", reason="the soak load generator needs aiohttp")
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)  # the load generator is a spawned process: a real import
    bench = importlib.import_module("bench_soak")
    code = bench.main(["--quick"])
    out = capsys.readouterr().out
    assert "unexpected errors: 0" in out and "leaked pages: 0 " in out, out
    assert code == 0
