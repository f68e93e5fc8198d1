"""`zoo:asr-tiny`: a tiny streaming speech recognizer (MoonshineStreaming) trained here.

The folder vibekit/zoo/asr-tiny/ is an HF MoonshineStreaming checkpoint that transformers loads
as it is (`MoonshineStreamingForConditionalGeneration.from_pretrained`, `AutoProcessor`): config,
float32 safetensors, a Wav2Vec2 feature extractor (16 kHz mono float samples, no normalization;
it returns the attention mask) and a character tokenizer (a-z, the word mark, 4 specials). It
comes from scripts/train_asr_model.py (seeded); its held-out word error rate, the training time
and the command that reproduces both are "Zoo ASR model" in benchmarks/RESULTS.md: 29.8% on
held-out sentences spoken by the training voices, 62.2% with a voice it never heard. A small
recognizer, not a good one: about three words in ten come out wrong even on the voices it was
trained on.

Model: encoder and decoder of 4 layers, hidden 128, 4 heads of 32, MLP 512, 2.58M parameters;
the encoder's sliding windows are (left, right) = (16, 4), (16, 0), (16, 0), (16, 4) frames of
20 ms (so 80 ms of look-ahead per windowed layer, 160 ms in all); audio up to 20 s (1024 encoder
positions). Transcripts are lowercase words separated by single spaces, without punctuation.

Data: espeak-ng speech (7 English accents x 11 voice variants, 130-210 words per minute, pitch
25-75, 16 kHz) of random sequences of 2-8 words over the 3000 most frequent alphabetic English
words of the `wordfreq` package (no grammar: the WER measures what the model hears). It only
knows synthetic espeak-ng speech: do not expect it to recognize a human voice.

Always pass the attention mask the processor returns: the encoder was trained with it, and
transformers' encoder attends to every frame (ignoring the sliding windows) when no mask is
given. `transcribe` does that::

    from vibekit.zoo import asr_tiny
    model, processor = asr_tiny.load()
    asr_tiny.transcribe([samples], model=model, processor=processor)   # one string per utterance
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

NAME = "asr-tiny"
SAMPLE_RATE = 16000


def load(device: str = "cpu") -> tuple[Any, Any]:
    """(model, processor) of zoo:asr-tiny with HF transformers; the model in eval mode."""
    from transformers import AutoProcessor, MoonshineStreamingForConditionalGeneration

    from vibekit import zoo

    folder = zoo.path(NAME)
    model = MoonshineStreamingForConditionalGeneration.from_pretrained(folder).to(device).eval()
    return model, AutoProcessor.from_pretrained(folder)


def transcribe(audio: Sequence[np.ndarray], *, sampling_rate: int = SAMPLE_RATE,
               model: Any = None, processor: Any = None, batch_size: int = 1) -> list[str]:
    """Greedy transcripts (HF generate) of 16 kHz mono utterances, float in [-1, 1] or int16.

    One utterance at a time by default, the reference path: in a padded batch transformers'
    encoder counts up to 3 frames past an utterance's end as valid (its causal convolutions mark
    a frame valid when any input sample under it is), and those frames reach the real ones
    through the right context of the sliding windows, so batched transcripts can differ."""
    import torch

    if sampling_rate != SAMPLE_RATE:
        raise ValueError(f"zoo:asr-tiny takes {SAMPLE_RATE} Hz audio; got sampling_rate="
                         f"{sampling_rate} (resample first)")
    wavs = []
    for i, a in enumerate(audio):
        a = np.asarray(a)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"audio[{i}] must be a non-empty 1-D array of mono samples; "
                             f"got shape {a.shape}")
        if a.dtype == np.int16:
            a = a.astype(np.float32) / 32768.0
        elif not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"audio[{i}] must be float (in [-1, 1]) or int16 samples; "
                             f"got dtype {a.dtype}")
        wavs.append(a.astype(np.float32))
    if model is None or processor is None:
        model, processor = load()
    out: list[str] = []
    for s in range(0, len(wavs), batch_size):
        inputs = processor(wavs[s:s + batch_size], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(inputs["input_values"].to(model.device),
                                 attention_mask=inputs["attention_mask"].to(model.device),
                                 do_sample=False, num_beams=1)
        out += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return out


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: word-level Levenshtein distances summed over the pairs, divided by the number
    of reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = ref.split(), hyp.split()
        prev = list(range(len(h) + 1))
        for i, rw in enumerate(r, 1):
            cur = [i] + [0] * len(h)
            for j, hw in enumerate(h, 1):
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
            prev = cur
        errors += prev[-1]
        words += len(r)
    if words == 0:
        raise ValueError("the references hold no words")
    return errors / words


__all__ = ["NAME", "SAMPLE_RATE", "load", "transcribe", "word_error_rate"]
