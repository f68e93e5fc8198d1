"""SpeechEngine: streamed transcripts equal HF generate on the whole audio; bad input is refused
per stream; pages come back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.asr.tiny import pad_to_frames, save_tiny, tiny_hf_model, tone_audio
from vibekit import InvalidRequestError
from vibekit.runtime.speech_engine import SpeechEngine

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def hf():
    return tiny_hf_model(11)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, hf):
    path = tmp_path_factory.mktemp("moonshine") / "tiny"
    hf.save_pretrained(path)
    return path


def _engine(ckpt, **kw) -> SpeechEngine:
    return SpeechEngine.from_pretrained(str(ckpt), max_tokens=MAX_TOKENS, page_size=4, **kw)


def _hf_ids(hf, audio: torch.Tensor) -> list[int]:
    # as HF's processor prepares it: zero-padded to whole 5 ms frames, the padding masked
    mask = torch.ones(1, audio.numel(), dtype=torch.long)
    audio, mask = pad_to_frames(audio), pad_to_frames(mask[0])[None]
    with torch.no_grad():
        out = hf.generate(input_values=audio[None], attention_mask=mask,
                          max_new_tokens=MAX_TOKENS, do_sample=False)
    return out[0, 1:].tolist()  # drop the decoder start token


# 0.5013 s and 0.7307 s end in a partial 5 ms frame
AUDIOS = [tone_audio(s, seed=i) for i, s in enumerate([0.31, 0.7307, 1.13, 0.05, 0.5013])]


def test_transcribe_equals_hf_generate(hf, ckpt):
    engine = _engine(ckpt)
    outs = engine.transcribe(AUDIOS)
    refs = [_hf_ids(hf, a) for a in AUDIOS]
    assert [o.token_ids for o in outs] == refs
    assert all(o.is_final and o.finish_reason in ("stop", "length") for o in outs)
    assert len({t for r in refs for t in r}) > 5  # the random model's output is not degenerate


def test_many_concurrent_streams_in_chunks_equal_hf_on_full_audio(hf, ckpt):
    engine = _engine(ckpt, max_num_seqs=3)  # fewer decode slots than streams: they queue
    chunk_sizes = [80, 333, 1280, 1600, 4000]
    ids = {engine.add_request(stream=True): (a, c) for a, c in zip(AUDIOS, chunk_sizes)}
    cursor = dict.fromkeys(ids, 0)
    partial_revisions: dict[str, set[int]] = {i: set() for i in ids}
    finals = {}
    while len(finals) < len(ids):
        for rid, (audio, size) in ids.items():
            if rid in finals or cursor[rid] < 0:
                continue
            if cursor[rid] >= audio.numel():
                engine.end_audio(rid)
                cursor[rid] = -1
            else:
                engine.append_audio(rid, audio[cursor[rid]:cursor[rid] + size].numpy())
                cursor[rid] += size
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
            elif cursor[out.request_id] >= 0:
                partial_revisions[out.request_id].add(out.revision)
    for rid, (audio, _) in ids.items():
        assert finals[rid].token_ids == _hf_ids(hf, audio), rid
        assert finals[rid].is_final
    # partial transcripts arrived while the audio was still streaming, and were revised
    long_rid = next(r for r, (a, _) in ids.items() if a.numel() == AUDIOS[2].numel())
    assert len(partial_revisions[long_rid]) > 1
    assert engine.cache.decoder.manager.num_free_pages == engine.cache.decoder.num_pages
    assert engine.cache.cross.manager.num_free_pages == engine.cache.cross.num_pages


def test_abort_mid_stream_frees_every_page(ckpt):
    engine = _engine(ckpt)
    rids = [engine.add_request(AUDIOS[i][:4000], stream=True) for i in range(3)]
    for _ in range(3):
        engine.step()
    assert engine.cache.cross.manager.num_free_pages < engine.cache.cross.num_pages
    for rid in rids:
        engine.abort(rid)
    assert not engine.has_unfinished_requests()
    assert engine.cache.decoder.manager.num_free_pages == engine.cache.decoder.num_pages
    assert engine.cache.cross.manager.num_free_pages == engine.cache.cross.num_pages


def test_chunk_latencies_are_reported_per_chunk(ckpt):
    engine = _engine(ckpt)
    rid = engine.add_request(stream=True)
    latencies = []
    for start in range(0, 8000, 1600):
        engine.append_audio(rid, AUDIOS[2][start:start + 1600])
        for out in engine.step():
            latencies += out.chunk_latencies
    assert len(latencies) == 5 and all(x >= 0 for x in latencies)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_bad_input_is_refused_and_other_streams_are_unaffected(hf, ckpt):
    clock = FakeClock()
    engine = _engine(ckpt, clock=clock, idle_timeout_s=5.0)
    good = engine.add_request(AUDIOS[1][:3000], stream=True)
    with pytest.raises(InvalidRequestError, match="44100 Hz"):
        engine.add_request(AUDIOS[0].numpy(), sample_rate=44100)
    with pytest.raises(InvalidRequestError, match="not bytes"):
        engine.add_request(b"RIFF\x00\x00garbage")
    with pytest.raises(InvalidRequestError, match="1-D"):
        engine.add_request(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(InvalidRequestError, match="NaN"):
        engine.add_request(np.array([0.1, float("nan")], dtype=np.float32))
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.add_request(np.zeros(0, dtype=np.float32))
    ended = engine.add_request(AUDIOS[0])  # a whole recording: its stream has ended
    with pytest.raises(InvalidRequestError, match="after end of stream"):
        engine.append_audio(ended, AUDIOS[0][:160])
    with pytest.raises(InvalidRequestError, match="not running"):
        engine.append_audio("nope", AUDIOS[0][:160])
    with pytest.raises(InvalidRequestError, match="exceeds"):
        engine.add_request(torch.zeros(16000 * 31))
    stalled = engine.add_request(AUDIOS[3], stream=True)  # never ends
    finals = {}
    for _ in range(6):
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    clock.t = 3.0
    engine.append_audio(good, AUDIOS[1][3000:])  # the good stream keeps sending
    engine.step()
    clock.t = 6.0
    engine.end_audio(good)
    while engine.has_unfinished_requests():
        for out in engine.step():
            finals[out.request_id] = out
    assert finals[stalled].finish_reason == "deadline" and "idle_timeout_s" in finals[stalled].error
    assert not finals[stalled].is_final
    assert finals[good].token_ids == _hf_ids(hf, AUDIOS[1])
    assert finals[ended].token_ids == _hf_ids(hf, AUDIOS[0])
    assert engine.cache.decoder.manager.num_free_pages == engine.cache.decoder.num_pages
    assert engine.cache.cross.manager.num_free_pages == engine.cache.cross.num_pages


def test_a_small_page_pool_still_gives_exact_transcripts(hf, ckpt):
    engine = _engine(ckpt, num_pages=8, num_cross_pages=40)
    outs = engine.transcribe(AUDIOS[:4])
    assert [o.token_ids for o in outs] == [_hf_ids(hf, a) for a in AUDIOS[:4]]


def test_not_a_speech_model_is_named(tmp_path):
    with pytest.raises(ValueError, match="not an encoder-decoder speech model"):
        SpeechEngine.from_pretrained("dummy:tiny-llama")


def test_save_tiny_helper_writes_a_loadable_folder(tmp_path):
    engine = SpeechEngine.from_pretrained(str(save_tiny(tmp_path / "m", seed=3)), max_tokens=4)
    assert len(engine.transcribe([AUDIOS[0]])[0].token_ids) <= 4
