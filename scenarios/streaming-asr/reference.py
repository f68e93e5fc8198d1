"""streaming-asr reference: HF transformers' greedy `generate` on each stream's whole
recording (zero-padded to whole 5 ms frames, the padding masked, as HF's processor does),
one request at a time. Nothing of vibekit runs here except building the same random weights."""

from __future__ import annotations

from typing import Any


def hf_model(source: str, seed: int = 0):
    if source.startswith("dummy:"):
        from vibekit.models.speech_dummy import speech_dummy_hf_model

        return speech_dummy_hf_model(source[len("dummy:"):], seed)
    from transformers import MoonshineStreamingForConditionalGeneration

    if source.startswith("zoo:"):
        from vibekit import zoo

        source = str(zoo.path(source[len("zoo:"):]))
    return MoonshineStreamingForConditionalGeneration.from_pretrained(source).eval()


def reference_outputs(requests: list[dict[str, Any]], model: str = "", seed: int = 0,
                      **_: Any) -> list[dict[str, Any]]:
    import importlib.util
    from pathlib import Path

    import torch

    spec = importlib.util.spec_from_file_location("_asr_workload",
                                                  Path(__file__).with_name("workload.py"))
    workload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workload)
    hf = hf_model(model, seed)
    eos = hf.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    outputs = []
    for req in requests:
        x = torch.from_numpy(workload.audio_for(req))
        mask = torch.ones(x.numel(), dtype=torch.long)
        pad = -x.numel() % 80  # whole 5 ms frames, the padding masked (as HF's processor does)
        x, mask = torch.nn.functional.pad(x, (0, pad))[None], torch.nn.functional.pad(
            mask, (0, pad))[None]
        with torch.no_grad():
            out = hf.generate(input_values=x, attention_mask=mask,
                              max_new_tokens=req["max_tokens"], do_sample=False)
        ids = out[0, 1:].tolist()
        cut = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
        outputs.append({"token_ids": ids[:cut]})
    return outputs
