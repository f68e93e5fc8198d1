"""zoo:asr-tiny: an HF MoonshineStreaming folder that transformers loads and that transcribes
held-out espeak-ng speech (tests/data/asr/, written by scripts/train_asr_model.py
--write-fixtures; no espeak-ng needed here)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from vibekit import zoo
from vibekit.zoo import asr_tiny

DATA = Path(__file__).resolve().parent.parent / "data" / "asr"
# The committed model's held-out WER is 29.8% (training voices) / 62.2% (the held-out voice) on
# 200 utterances each (benchmarks/RESULTS.md, "Zoo ASR model"); it scores 0.621 on these five
# fixtures. The bound is a regression guard with a margin over that.
MAX_FIXTURE_WER = 0.8


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


@pytest.fixture(scope="module")
def fixtures():
    refs = json.loads((DATA / "references.json").read_text())
    return [(read_wav(DATA / r["file"]), r["text"], r["set"]) for r in refs]


@pytest.fixture(scope="module")
def hf():
    return asr_tiny.load()


def test_folder_is_an_hf_checkpoint_within_size_budget():
    folder = zoo.path("asr-tiny")
    for name in ("config.json", "generation_config.json", "model.safetensors",
                 "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 20 * 2**20
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MoonshineStreamingForConditionalGeneration"]
    assert config["model_type"] == "moonshine_streaming"
    assert "asr-tiny" in zoo.names() and "espeak-ng" in zoo.describe("asr-tiny")


def test_processor_and_tokenizer_round_trip(hf):
    model, processor = hf
    ids = processor.tokenizer("seven green houses").input_ids
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == "seven green houses"
    assert model.config.decoder_start_token_id == processor.tokenizer.bos_token_id
    assert model.config.eos_token_id == processor.tokenizer.eos_token_id
    feats = processor(np.zeros(1234, np.float32), sampling_rate=16000, return_tensors="pt")
    assert feats["input_values"].shape == feats["attention_mask"].shape


def test_fixtures_are_short_held_out_utterances(fixtures):
    assert 3 <= len(fixtures) <= 5
    assert {s for _, _, s in fixtures} == {"heldout", "heldout_voice"}
    for audio, text, _ in fixtures:
        assert 1.0 <= len(audio) / 16000 <= 4.0 and text == text.lower().strip()


def test_transcribes_held_out_fixtures(hf, fixtures):
    model, processor = hf
    hyps = asr_tiny.transcribe([a for a, _, _ in fixtures], model=model, processor=processor)
    refs = [t for _, t, _ in fixtures]
    wer = asr_tiny.word_error_rate(refs, hyps)
    assert wer <= MAX_FIXTURE_WER, list(zip(refs, hyps))


def test_word_error_rate():
    assert asr_tiny.word_error_rate(["a b c"], ["a b c"]) == 0.0
    assert asr_tiny.word_error_rate(["a b c", "d"], ["a x c", ""]) == 0.5  # 1 sub + 1 del / 4
    assert asr_tiny.word_error_rate(["a"], ["a b b"]) == 2.0  # insertions count
    with pytest.raises(ValueError, match="references"):
        asr_tiny.word_error_rate(["a"], [])


def test_bad_audio_is_refused_with_what_is_allowed(hf):
    model, processor = hf
    with pytest.raises(ValueError, match="16000 Hz"):
        asr_tiny.transcribe([np.zeros(1600, np.float32)], sampling_rate=8000, model=model,
                            processor=processor)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        asr_tiny.transcribe([np.zeros(0, np.float32)], model=model, processor=processor)
    with pytest.raises(ValueError, match="float"):
        asr_tiny.transcribe([np.zeros(1600, np.int64)], model=model, processor=processor)
