"""The generated server.py runs: it serves the plan's engine from an engine core process of its
own (as `vibekit serve` does) and answers what Engine.generate on the same plan answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from vibekit import SamplingParams
from vibekit_agents.plan import Plan
from vibekit_agents.scenario import load_scenario
from vibekit_agents.server_py import render_server_py

from .conftest import REPO


def test_the_generated_server_serves_the_plan_from_an_engine_core_process(tmp_path):
    psutil = pytest.importorskip("psutil")
    plan = Plan.start(load_scenario(REPO / "scenarios" / "code-edit"), "dummy:tiny-llama")
    path = tmp_path / "server.py"
    path.write_text(render_server_py(plan, "code-edit", served_name="tuned"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, str(path), "--port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the generated server did not come up"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        children = psutil.Process(proc.pid).children()
        assert children, "no engine core process: the server runs the engine in its thread"
        prompt = [5, 6, 7, 8]
        r = httpx.post(url + "/v1/completions", timeout=60, json={
            "model": "tuned", "prompt": prompt, "max_tokens": 12, "temperature": 0,
            "ignore_eos": True, "return_token_ids": True})
        assert r.status_code == 200, r.text
        want = plan.build_engine().generate([prompt], SamplingParams(
            max_tokens=12, temperature=0.0, ignore_eos=True))[0]
        assert r.json()["choices"][0]["token_ids"] == want.token_ids
        proc.terminate()
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"the engine core outlived the server: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
