"""`vibekit --version` and `vibekit serve --help` (defaults shown, the server's flags there)."""

from __future__ import annotations

import pytest

import vibekit
from vibekit.cli import main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"vibekit {vibekit.__version__}"


def test_serve_help_shows_defaults_and_the_server_flags(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--num-threads", "--num-draft-tokens", "--max-body-bytes", "--request-timeout",
                 "--max-waiting", "--chat-template", "--engine-process", "--no-engine-process",
                 "--engine-stall-timeout"):
        assert flag in out
    assert "(default: 8000)" in out and "(default: 8388608)" in out


def test_no_install_hint_names_the_other_projects_distribution():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    files = [p for p in root.rglob("*") if p.suffix in {".py", ".md", ".toml", ".txt"}
             and ".git" not in p.parts and "out" not in p.parts]
    bad = re.compile(r"pip install\s+[\"']?vibekit(\[|[\"'\s]|$)")
    hits = [f"{p}: {line.strip()}" for p in files
            for line in p.read_text(errors="ignore").splitlines() if bad.search(line)]
    assert not hits, hits


def test_serve_batch_invariant_flag_reaches_the_engine_options(monkeypatch):
    import vibekit.serve

    seen = {}
    monkeypatch.setattr(vibekit.serve, "run_server", lambda model, **kw: seen.update(kw))
    assert main(["serve", "dummy:tiny-llama", "--batch-invariant"]) == 0
    assert seen["batch_invariant"] is True
    seen.clear()
    main(["serve", "dummy:tiny-llama"])
    assert "batch_invariant" not in seen


def test_serve_engine_stall_timeout_reaches_run_server_and_zero_turns_it_off(monkeypatch):
    import vibekit.serve

    seen = {}
    monkeypatch.setattr(vibekit.serve, "run_server", lambda model, **kw: seen.update(kw))
    main(["serve", "dummy:tiny-llama"])
    assert seen["engine_stall_timeout"] == 60.0
    main(["serve", "dummy:tiny-llama", "--engine-stall-timeout", "2.5"])
    assert seen["engine_stall_timeout"] == 2.5
    main(["serve", "dummy:tiny-llama", "--engine-stall-timeout", "0"])
    assert seen["engine_stall_timeout"] is None


def test_build_kernels_reports_every_cpu_kernel(capsys):
    from vibekit.ops.build_kernels import build_all

    expected = build_all()  # cached after the first build
    assert set(expected) == {"linear", "attention", "decode", "model"}
    rc = main(["build-kernels"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [f"{k}: {v}" for k, v in expected.items()]
    assert rc == (0 if all(v.startswith("ok (") for v in expected.values()) else 1)
