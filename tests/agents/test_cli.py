"""The vibekit-synthesize command line: --list, and errors for bad input."""

from __future__ import annotations

from vibekit_agents.cli import main

from .conftest import TINY_TOML, make_tiny_scenario


def test_list_shows_the_scenarios(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "code-edit" in out and "standard" in out and "median tok/s" in out


def test_malformed_scenario_exits_with_the_field(tmp_path, capsys):
    folder = make_tiny_scenario(tmp_path / "sc", TINY_TOML.replace("[metric]", "[metricz]"))
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 2
    assert "unknown top-level keys ['metricz']" in capsys.readouterr().err


def test_claude_planner_needs_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    folder = make_tiny_scenario(tmp_path / "sc")
    assert main([str(folder), "--planner", "claude", "--out", str(tmp_path / "o")]) == 2
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err
