"""`vibekit serve` in a subprocess: on SIGTERM / SIGINT it stops accepting, lets in-flight
streams finish and exits."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import MODEL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig,mode", [
    (signal.SIGTERM, "--engine-process"), (signal.SIGTERM, "--no-engine-process"),
    pytest.param(signal.SIGINT, "--engine-process", marks=pytest.mark.slow)])
def test_signal_lets_in_flight_streams_finish_then_exits(sig, mode):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibekit.cli", "serve", MODEL, "--port", str(port),
         "--max-model-len", "512", "--num-pages", "64", "--shutdown-timeout", "30",
         "--log-level", "warning", mode],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": MODEL, "prompt": "stream through the shutdown", "max_tokens": 300,
                "temperature": 0, "ignore_eos": True, "stream": True, "return_token_ids": True}
        num_tokens, finish, done = 0, None, False
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            lines = (line for line in r.iter_lines() if line)
            first = json.loads(next(lines).removeprefix("data: "))
            num_tokens += len(first["choices"][0]["token_ids"])
            proc.send_signal(sig)
            time.sleep(0.3)
            try:  # a new request is refused: the socket is closed or the app says 503
                assert httpx.get(url + "/health", timeout=2).status_code == 503
            except httpx.TransportError:
                pass
            for line in lines:
                if line == "data: [DONE]":
                    done = True
                    break
                choice = json.loads(line.removeprefix("data: "))["choices"][0]
                num_tokens += len(choice["token_ids"])
                finish = choice["finish_reason"] or finish
        assert done and finish == "length" and num_tokens == 300
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
