"""What scenarios/streaming-asr lets the search tune: the encoder's frame budget per step keeps
every transcript equal to HF generate on the whole audio; the encoder's left context is not a
knob, because a shorter one changes the transcripts (HF applies the config's windows)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.asr.tiny import pad_to_frames, tiny_hf_model, tone_audio
from vibekit.runtime.speech_engine import SpeechEngine

MAX_TOKENS = 10
AUDIOS = [tone_audio(s, seed=i) for i, s in enumerate([0.6, 0.4513, 0.93])]


@pytest.fixture(scope="module")
def hf():
    return tiny_hf_model(11)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, hf):
    path = tmp_path_factory.mktemp("moonshine-knobs") / "tiny"
    hf.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def refs(hf):
    out = []
    for audio in AUDIOS:
        mask = pad_to_frames(torch.ones(audio.numel(), dtype=torch.long))[None]
        with torch.no_grad():
            ids = hf.generate(input_values=pad_to_frames(audio)[None], attention_mask=mask,
                              max_new_tokens=MAX_TOKENS, do_sample=False)
        out.append(ids[0, 1:].tolist())
    return out


def _stream_all(engine: SpeechEngine, chunk: int) -> list[list[int]]:
    ids = [engine.add_request(stream=True) for _ in AUDIOS]
    cursor = [0] * len(AUDIOS)
    final: dict[str, list[int]] = {}
    while len(final) < len(ids):
        for i, rid in enumerate(ids):
            if cursor[i] < 0:
                continue
            if cursor[i] >= AUDIOS[i].numel():
                engine.end_audio(rid)
                cursor[i] = -1
            else:
                engine.append_audio(rid, AUDIOS[i][cursor[i]:cursor[i] + chunk].numpy())
                cursor[i] += chunk
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out.token_ids
    return [final[r] for r in ids]


@pytest.mark.parametrize("frames", [1, 7, None])
def test_an_encoder_frame_budget_keeps_concurrent_streams_exact(ckpt, refs, frames):
    engine = SpeechEngine.from_pretrained(str(ckpt), max_tokens=MAX_TOKENS, page_size=4,
                                          max_num_batched_frames=frames)
    assert _stream_all(engine, 1280) == refs
    assert engine.cache.stats() == SpeechEngine.from_pretrained(
        str(ckpt), max_tokens=MAX_TOKENS, page_size=4).cache.stats()  # every page came back


def test_a_frame_budget_below_one_is_refused(ckpt):
    with pytest.raises(ValueError, match="max_num_batched_frames must be >= 1"):
        SpeechEngine.from_pretrained(str(ckpt), max_num_batched_frames=0)


def test_a_shorter_encoder_left_context_changes_the_transcript(ckpt, refs, tmp_path):
    short = tmp_path / "short-left"
    shutil.copytree(ckpt, short)
    config = json.loads((short / "config.json").read_text())
    windows = config["encoder_config"]["sliding_windows"]
    config["encoder_config"]["sliding_windows"] = [[2, right] for _, right in windows]
    (short / "config.json").write_text(json.dumps(config))
    same = SpeechEngine.from_pretrained(str(ckpt), max_tokens=MAX_TOKENS)
    cut = SpeechEngine.from_pretrained(str(short), max_tokens=MAX_TOKENS)
    assert [o.token_ids for o in same.transcribe(AUDIOS)] == refs
    assert [o.token_ids for o in cut.transcribe(AUDIOS)] != refs  # the checker would fail
