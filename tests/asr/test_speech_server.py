"""The speech server over real HTTP: the official openai client on /v1/audio/transcriptions
(json, text, stream=true SSE) and the live-audio WebSocket; transcripts equal the engine's
(which equal HF generate, test_speech_engine.py); bad uploads get 4xx, others unaffected."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import torch
import uvicorn
from websockets.sync.client import connect

from tests.asr.tiny import tiny_hf_model, tone_audio
from vibekit import SpeechEngine, write_wav
from vibekit.serve.speech import create_speech_app

NAME = "tiny-asr"
OPTIONS = dict(max_tokens=10, page_size=4)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("asr") / "tiny"
    tiny_hf_model(21).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(ckpt):
    app = create_speech_app(SpeechEngine.from_pretrained(str(ckpt), num_threads=1, **OPTIONS),
                            NAME)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(15)
    sock.close()


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"http://{server}/v1", api_key="EMPTY", max_retries=0,
                       timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def reference(ckpt):
    engine = SpeechEngine.from_pretrained(str(ckpt), **OPTIONS)
    return lambda audio: engine.transcribe([audio])[0]


AUDIO = [tone_audio(s, seed=i) for i, s in enumerate([0.45, 0.9])]


def _wav(audio: torch.Tensor) -> bytes:
    return write_wav(audio.numpy(), 16000)


def _as_read_back(audio: torch.Tensor) -> torch.Tensor:
    # what the server decodes from the 16-bit WAV
    from vibekit import read_wav

    return read_wav(_wav(audio))[0]


def test_openai_client_transcribes_json_and_text(client, reference):
    for audio in AUDIO:
        ref = reference(_as_read_back(audio))
        got = client.audio.transcriptions.create(model=NAME, file=("a.wav", _wav(audio)))
        assert got.text == ref.text and ref.token_ids
        text = client.audio.transcriptions.create(model=NAME, file=("a.wav", _wav(audio)),
                                                  response_format="text")
        assert text == ref.text


def test_openai_client_streams_deltas_then_done(client, reference):
    audio = AUDIO[1]
    ref = reference(_as_read_back(audio))
    events = list(client.audio.transcriptions.create(model=NAME, file=("a.wav", _wav(audio)),
                                                     stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert events[-1].type == "transcript.text.done" and events[-1].text == ref.text
    assert len(deltas) > 1 and "".join(d.delta for d in deltas) == ref.text


def test_bad_uploads_are_4xx_and_name_the_problem(client, server):
    with pytest.raises(openai.BadRequestError, match="not a PCM WAV"):
        client.audio.transcriptions.create(model=NAME, file=("a.wav", b"not audio at all"))
    with pytest.raises(openai.BadRequestError, match="8000 Hz"):
        client.audio.transcriptions.create(model=NAME, file=(
            "a.wav", write_wav(np.zeros(800, dtype=np.float32), 8000)))
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.audio.transcriptions.create(model=NAME, file=(
            "a.wav", write_wav(np.zeros(0, dtype=np.float32), 16000)))
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", _wav(AUDIO[0])))
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(model=NAME, file=("a.wav", _wav(AUDIO[0])),
                                           response_format="srt")
    r = httpx.post(f"http://{server}/v1/audio/transcriptions", json={"file": "x"})
    assert r.status_code == 415
    # the server still serves
    assert client.audio.transcriptions.create(model=NAME, file=("a.wav", _wav(AUDIO[0]))).text \
        is not None


def _ws_transcribe(server, audio: torch.Tensor, chunk: int, encoding="pcm_f32le"):
    msgs = []
    with connect(f"ws://{server}/v1/audio/transcriptions/stream") as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": encoding}))
        x = audio.numpy()
        for start in range(0, x.size, chunk):
            part = x[start:start + chunk]
            if encoding == "pcm_s16le":
                part = (part * 32767).round().astype("<i2")
            ws.send(part.astype("<f4" if encoding == "pcm_f32le" else "<i2").tobytes())
        ws.send(json.dumps({"type": "end"}))
        for raw in ws:
            msgs.append(json.loads(raw))
    return msgs


def test_websocket_streams_partials_and_ends_with_the_full_audio_transcript(server, reference):
    audio = AUDIO[1]
    msgs = _ws_transcribe(server, audio, chunk=1600)
    assert msgs[-1]["type"] == "transcript.text.done"
    assert msgs[-1]["text"] == reference(audio).text
    assert any(m["type"] == "transcript.partial" for m in msgs)


def test_websocket_concurrent_streams_stay_exact(server, reference):
    results = {}

    def run(i):
        results[i] = _ws_transcribe(server, AUDIO[i % 2], chunk=800 + 400 * i)[-1]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(4):
        assert results[i]["text"] == reference(AUDIO[i % 2]).text


def test_websocket_bad_messages_get_an_error_event(server):
    with connect(f"ws://{server}/v1/audio/transcriptions/stream") as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 44100}))
        err = json.loads(ws.recv())
        assert err["type"] == "error" and "44100 Hz" in err["error"]["message"]
    with connect(f"ws://{server}/v1/audio/transcriptions/stream") as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        ws.send(b"\x00\x01\x02")  # not whole float32 samples
        err = json.loads(ws.recv())
        assert err["type"] == "error" and "not whole" in err["error"]["message"]


def test_vibekit_serve_recognizes_a_speech_checkpoint(ckpt, tmp_path):
    from vibekit.serve.speech import is_speech_model

    assert is_speech_model(str(ckpt))
    assert not is_speech_model("dummy:tiny-llama") and not is_speech_model(str(tmp_path))
