"""moonshine_streaming on vibekit ops against HF transformers on random tiny configs (fp32)."""

from __future__ import annotations

import pytest
import torch

from tests.asr.tiny import pad_to_frames, save_tiny, tiny_hf_model, tone_audio
from vibekit.core.forward_batch import ForwardBatch, SeqChunk
from vibekit.models.loader import iter_weights, weight_files
from vibekit.models.registry import build_model, config_from_hf

PAGE = 4


def _ones(audio: torch.Tensor) -> torch.Tensor:
    # HF applies the sliding windows only with an attention mask (its processor always passes
    # one); without it every layer attends over the whole utterance, which cannot stream.
    return torch.ones(1, audio.numel(), dtype=torch.long)


def _ours(hf):
    config = config_from_hf(hf.config.to_dict())
    model = build_model(config, torch.float32, "cpu")
    model.load_weights(hf.state_dict().items())
    return model


def _decoder_logits(model, frames: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Teacher-forced logits of every position of ids, cross K/V written from frames."""
    spec = model.kv_spec()
    cross_pages = list(range((frames.shape[0] + PAGE - 1) // PAGE))
    self_pages = list(range((len(ids) + PAGE - 1) // PAGE))
    cross_kv = spec.allocate(len(cross_pages), PAGE, torch.float32, "cpu")
    self_kv = spec.allocate(len(self_pages), PAGE, torch.float32, "cpu")
    slots = torch.tensor([cross_pages[p // PAGE] * PAGE + p % PAGE
                          for p in range(frames.shape[0])])
    model.write_cross_kv(frames, torch.arange(frames.shape[0]), slots, cross_kv)
    batch = ForwardBatch.build([SeqChunk(ids, 0, self_pages, num_sample=len(ids))], PAGE,
                               self_kv, "cpu")
    cross = ForwardBatch.build([SeqChunk([0], frames.shape[0] - 1, cross_pages, 0)] * len(ids),
                               PAGE, cross_kv, "cpu")
    return model.decode(batch, cross)


@pytest.mark.parametrize("seconds", [0.03, 0.41, 1.0])
def test_encoder_outputs_match_hf(seconds):
    hf = tiny_hf_model(1)
    ours = _ours(hf)
    audio = pad_to_frames(tone_audio(seconds, seed=2))
    with torch.no_grad():
        ref = hf.model.encoder(audio[None], attention_mask=_ones(audio)).last_hidden_state[0]
    got = ours.encoder.step(ours.encoder.new_stream(), audio, final=True)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk_frames", [1, 3, 7, 64])
def test_encoder_streamed_in_chunks_equals_one_pass(chunk_frames):
    hf = tiny_hf_model(3)
    ours = _ours(hf)
    audio = pad_to_frames(tone_audio(0.77, seed=4))
    full = ours.encoder.step(ours.encoder.new_stream(), audio, final=True)
    stream = ours.encoder.new_stream()
    parts, step = [], chunk_frames * 80
    for start in range(0, audio.numel(), step):
        parts.append(ours.encoder.step(stream, audio[start:start + step], final=False))
        # outputs become final only once their lookahead arrived: never more than one pass has
        assert stream.num_outputs <= full.shape[0]
    parts.append(ours.encoder.step(stream, audio[:0], final=True))
    torch.testing.assert_close(torch.cat(parts), full, atol=1e-5, rtol=1e-5)
    # left context only: the state holds a bounded window, not the audio so far
    assert stream.nbytes() < 4 * full.numel() * 4


def test_decoder_logits_match_hf():
    hf = tiny_hf_model(5)
    ours = _ours(hf)
    audio = pad_to_frames(tone_audio(0.6, seed=6))
    ids = [1, 17, 40, 3, 288, 5, 61]
    with torch.no_grad():
        ref = hf(input_values=audio[None], attention_mask=_ones(audio),
                 decoder_input_ids=torch.tensor([ids])).logits[0]
        frames = ours.encoder.step(ours.encoder.new_stream(), audio, final=True)
    got = _decoder_logits(ours, frames, ids)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_tied_embeddings_and_kv_heads_load(tmp_path):
    hf = tiny_hf_model(7, tie_word_embeddings=True, encoder={"num_key_value_heads": 4})
    path = tmp_path / "ckpt"
    hf.save_pretrained(path)
    import json

    config = config_from_hf(json.loads((path / "config.json").read_text()))
    model = build_model(config, torch.float32, "cpu")
    model.load_weights(iter_weights(weight_files(path)))
    audio = pad_to_frames(tone_audio(0.3, seed=8))
    ids = [1, 9, 33]
    with torch.no_grad():
        ref = hf(input_values=audio[None], attention_mask=_ones(audio),
                 decoder_input_ids=torch.tensor([ids])).logits[0]
        frames = model.encoder.step(model.encoder.new_stream(), audio, final=True)
    torch.testing.assert_close(_decoder_logits(model, frames, ids), ref, atol=1e-4, rtol=1e-4)


def test_unknown_and_missing_weights_are_named(tmp_path):
    hf = tiny_hf_model(0)
    ours = _ours(hf)
    with pytest.raises(ValueError, match="no place"):
        ours.load_weights([("model.decoder.bogus.weight", torch.zeros(1))])
    state = dict(hf.state_dict())
    state.pop("model.decoder.norm.weight")
    with pytest.raises(ValueError, match="missing 1 tensor"):
        ours.load_weights(state.items())


def test_save_tiny_roundtrip(tmp_path):
    path = save_tiny(tmp_path / "m", seed=2)
    assert (path / "config.json").is_file()
