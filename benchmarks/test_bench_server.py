"""The server benchmark runs end to end in --quick mode (no speed assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_bench_server_quick_completes(capsys):
    path = Path(__file__).with_name("bench_server.py")
    spec = importlib.util.spec_from_file_location("bench_server", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "engine tok/s" in out and len(out.strip().splitlines()) == 4  # settings, header, 2
