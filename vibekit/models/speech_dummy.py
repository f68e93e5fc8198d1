"""Random-weight moonshine_streaming models for benchmarks and scenarios ("dummy:<preset>").

HF's init plus N(0, scale^2) noise on every matrix (HF's 0.02 init alone decodes one or two
distinct tokens whatever the audio), so greedy transcripts vary with the audio.
"""

from __future__ import annotations

from typing import Any

import torch

# HF MoonshineStreamingConfig overrides per preset; "moonshine-streaming-tiny" is the shape of
# UsefulSensors/moonshine-streaming-tiny (transformers' defaults).
SPEECH_DUMMY_PRESETS: dict[str, dict[str, Any]] = {
    "moonshine-streaming-tiny": {"num_key_value_heads": 8},
    "moonshine-streaming-micro": {
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 2048,
        "encoder_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                           "num_attention_heads": 4, "num_key_value_heads": 4,
                           "sliding_windows": [[16, 4], [16, 0], [16, 4]]}},
}


def speech_dummy_hf_model(name: str, seed: int = 0, scale: float = 0.3, **overrides: Any):
    """The HF MoonshineStreamingForConditionalGeneration of a preset, seeded random weights."""
    from transformers import MoonshineStreamingConfig, MoonshineStreamingForConditionalGeneration

    if name not in SPEECH_DUMMY_PRESETS:
        raise ValueError(f"unknown speech dummy preset {name!r}; presets: "
                         f"{sorted(SPEECH_DUMMY_PRESETS)}")
    kwargs = {**SPEECH_DUMMY_PRESETS[name], **overrides}
    config = MoonshineStreamingConfig(**kwargs)
    torch.manual_seed(seed)
    model = MoonshineStreamingForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("log_k"):
                continue
            p.add_(torch.randn(p.shape, generator=g) * (scale if p.ndim >= 2 else 0.1))
    return model
