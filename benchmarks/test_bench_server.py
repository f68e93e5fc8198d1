"""The server benchmark runs end to end in --quick mode (no speed assertions)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def _import_bench(name: str):
    # A real import (not spec_from_file_location): the client runs in a spawned process that
    # unpickles its function by module name.
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module(name)


def test_bench_server_quick_completes(capsys):
    bench = _import_bench("bench_server")
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    # settings, header, 2 levels x 2 modes; then (with psutil) the CPU split's title, header
    # and the same 4 rows
    assert "engine tok/s" in out and len(lines) in (6, 12)
    assert {line.split()[1] for line in lines[2:6]} == {"thread", "process"}
    if len(lines) == 12:
        assert lines[7].split() == ["conc", "mode", "engine", "core", "http", "client"]
        assert [line.split()[:2] for line in lines[8:]] == [
            line.split()[:2] for line in lines[2:6]]
