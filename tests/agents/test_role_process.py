"""A role's view of the workspace and what of it comes back (no API involved)."""

from __future__ import annotations

import os

from vibekit_agents.policies.role_process import copy_back, make_view


def _workspace(tmp_path):
    ws = tmp_path / "ws"
    (ws / ".git").mkdir(parents=True)
    (ws / ".git" / "HEAD").write_text("ref")
    rd = ws / "rounds" / "round-01"
    rd.mkdir(parents=True)
    (rd / "proposal.json").write_text("{}")
    (rd / "implementer.md").write_text("trust me")
    (rd / "candidate.toml").write_text("[engine]\n")
    (ws / "plan.toml").write_text("[engine]\n")
    (ws / "extensions").mkdir()
    secret = tmp_path / "outside.txt"
    secret.write_text("outside the workspace")
    os.symlink(secret, ws / "link.txt")
    return ws


def test_view_leaves_out_hidden_paths_git_and_escaping_links(tmp_path):
    ws = _workspace(tmp_path)
    view = make_view(ws, tmp_path / "view", hidden=("rounds/round-01/proposal.json",
                                                   "rounds/round-01/implementer.md"))
    files = {str(p.relative_to(view)) for p in view.rglob("*")}
    assert "rounds/round-01/candidate.toml" in files and "plan.toml" in files
    assert not files & {"rounds/round-01/proposal.json", "rounds/round-01/implementer.md",
                        ".git", ".git/HEAD", "link.txt"}


def test_copy_back_takes_only_writable_paths(tmp_path):
    ws = _workspace(tmp_path)
    view = make_view(ws, tmp_path / "view")
    (view / "plan.toml").write_text("[engine]\npage_size = 1\n")        # not writable
    (view / "rounds/round-01/candidate.toml").write_text("[engine]\nx = 1\n")
    (view / "extensions" / "fast.py").write_text("X = 1\n")
    (view / "rounds/round-01/judge.json").write_text("{}")            # not writable
    changed = copy_back(view, ws, ["rounds/round-01/candidate.toml", "extensions"])
    assert sorted(changed) == ["extensions/fast.py", "rounds/round-01/candidate.toml"]
    assert (ws / "plan.toml").read_text() == "[engine]\n"
    assert not (ws / "rounds/round-01/judge.json").exists()
    assert (ws / "extensions" / "fast.py").read_text() == "X = 1\n"
