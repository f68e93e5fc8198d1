"""Tiny random moonshine_streaming checkpoints (HF save_pretrained) and test audio."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import MoonshineStreamingConfig, MoonshineStreamingForConditionalGeneration

FRAME_LEN = 80  # 5 ms at 16 kHz


def tiny_hf_config(**changes) -> MoonshineStreamingConfig:
    enc = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, sliding_windows=[[6, 3], [4, 0], [5, 2]])
    enc.update(changes.pop("encoder", {}))
    kw = dict(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
              encoder_config=enc)
    kw.update(changes)
    return MoonshineStreamingConfig(**kw)


def tiny_hf_model(seed: int = 0, **changes) -> MoonshineStreamingForConditionalGeneration:
    """A random model whose greedy decoding varies (every weight perturbed, EOS suppressed a bit
    so transcripts are not empty)."""
    torch.manual_seed(seed)
    model = MoonshineStreamingForConditionalGeneration(tiny_hf_config(**changes)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("log_k"):
                continue
            p.add_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.1))
    return model


def save_tiny(path: Path, seed: int = 0, **changes) -> Path:
    tiny_hf_model(seed, **changes).save_pretrained(path)
    return path


def tone_audio(seconds: float, seed: int = 0, sample_rate: int = 16000) -> torch.Tensor:
    """A deterministic non-trivial waveform (chirps plus noise), float32 in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    f = 200 + 150 * (seed % 5) + 400 * t / max(seconds, 1e-3)
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    x = 0.4 * torch.sin(2 * math.pi * f * t) + 0.1 * noise
    return x.clamp(-1, 1).float()


def pad_to_frames(audio: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(audio, (0, -audio.numel() % FRAME_LEN))
