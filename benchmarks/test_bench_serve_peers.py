"""bench_serve_peers runs end to end in --quick mode (vibekit's two modes; no speed checks)."""

from __future__ import annotations

from test_bench_server import _import_bench


def test_bench_serve_peers_quick_completes(capsys):
    bench = _import_bench("bench_serve_peers")
    assert bench.main(["--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines if line.split()[0] in ("1", "4")]
    assert {row[1] for row in rows} == {"vibekit-process", "vibekit-thread"} and len(rows) == 4
