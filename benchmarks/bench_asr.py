"""Streaming ASR: vibekit's SpeechEngine vs HF transformers re-run on each chunk.

N streams receive their audio in lockstep chunks. On each chunk every stream wants a partial
transcript of its audio so far:
  * vibekit: append the chunk to each stream and step the engine until every stream's
    hypothesis is complete (incremental encoder, cross K/V written once, batched decoding);
  * HF: what a user without a streaming engine does: re-encode all the audio so far and
    re-decode, one batched `generate` over the N streams (equal lengths: no padding).
TTFT per chunk: from the chunk's arrival to the first token of a hypothesis that covers it.
Throughput: audio seconds of all streams / wall seconds of the whole run (every chunk's
partial transcripts plus the final ones). Both must give the same final transcripts (checked).
Engines alternate within each repeat; medians over repeats.

    python benchmarks/bench_asr.py                    # 1, 8, 32 streams x 4 s, 0.32 s chunks
    python benchmarks/bench_asr.py --quick            # CI smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from vibekit import SpeechEngine
from vibekit.models.speech_dummy import speech_dummy_hf_model


def make_audio(n: int, seconds: float, seed: int, rate: int = 16000) -> list[torch.Tensor]:
    """Deterministic chirps plus noise, one per stream."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    out = []
    for i in range(n):
        f = 180 + 37 * i + 300 * t / seconds
        x = 0.4 * torch.sin(2 * math.pi * f * t) + 0.1 * torch.randn(t.shape, generator=g,
                                                                     dtype=torch.float64)
        out.append(x.clamp(-1, 1).float())
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def run_vibekit(engine: SpeechEngine, audios, chunk: int, max_tokens: int):
    t_start = time.perf_counter()
    ids = [engine.add_request(stream=True, max_tokens=max_tokens) for _ in audios]
    ttfts: list[float] = []
    finals: dict[str, list[int]] = {}
    total = audios[0].numel()
    for start in range(0, total, chunk):
        for rid, audio in zip(ids, audios):
            engine.append_audio(rid, audio[start:start + chunk])
        if start + chunk >= total:
            for rid in ids:
                engine.end_audio(rid)
        pending = set(ids)
        while pending and engine.has_unfinished_requests():
            for out in engine.step():
                ttfts += out.chunk_latencies
                if out.finished:
                    finals[out.request_id] = out.token_ids
                    pending.discard(out.request_id)
            pending = {r for r in pending if r in engine.streams
                       and not engine.streams[r].hyp_done}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out.token_ids
    return [finals[r] for r in ids], ttfts, time.perf_counter() - t_start


class _FirstToken:
    """A logits processor that notes when generate samples its first token."""

    def __init__(self):
        self.at = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            self.at = time.perf_counter()
        return scores


def run_hf(hf, audios, chunk: int, max_tokens: int, frame_len: int):
    from transformers import LogitsProcessorList

    t_start = time.perf_counter()
    ttfts: list[float] = []
    total = audios[0].numel()
    out = None
    for start in range(0, total, chunk):
        arrived = time.perf_counter()
        end = min(total, start + chunk)
        x = torch.stack([a[:end] for a in audios])
        x = torch.nn.functional.pad(x, (0, -x.shape[1] % frame_len))  # whole 5 ms frames
        first = _FirstToken()
        with torch.no_grad():
            out = hf.generate(input_values=x, attention_mask=torch.ones(x.shape, dtype=torch.long),
                              max_new_tokens=max_tokens, do_sample=False,
                              logits_processor=LogitsProcessorList([first]))
        ttfts += [first.at - arrived] * len(audios)
    finals = []
    eos = set(hf.generation_config.eos_token_id if isinstance(
        hf.generation_config.eos_token_id, list) else [hf.generation_config.eos_token_id])
    for row in out[:, 1:].tolist():  # drop the decoder start token; cut at the first EOS
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        finals.append(row[:cut])
    return finals, ttfts, time.perf_counter() - t_start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="moonshine-streaming-tiny",
                    help="a preset of vibekit.models.speech_dummy (random weights)")
    ap.add_argument("--streams", default="1,8,32")
    ap.add_argument("--audio-seconds", type=float, default=4.0)
    ap.add_argument("--chunk-seconds", type=float, default=0.32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="micro model, 1-2 streams, 1 repeat")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.model, args.streams, args.audio_seconds = "moonshine-streaming-micro", "1,2", 0.96
        args.repeats, args.max_tokens = 1, 6
    torch.set_num_threads(args.threads)
    streams = [int(s) for s in args.streams.split(",")]
    hf = speech_dummy_hf_model(args.model, args.seed)
    engine = SpeechEngine.from_pretrained(f"dummy:{args.model}", seed=args.seed,
                                          max_num_seqs=max(streams), max_tokens=args.max_tokens,
                                          max_audio_seconds=args.audio_seconds + 1)
    chunk = int(args.chunk_seconds * engine.sample_rate)
    print(f"model dummy:{args.model} ({sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M "
          f"params, random weights), {args.audio_seconds:g} s audio per stream in "
          f"{args.chunk_seconds:g} s chunks, {args.max_tokens} tokens per hypothesis, "
          f"{args.threads} thread(s), {args.repeats} repeat(s), machine shared")
    warm = make_audio(1, 2 * args.chunk_seconds, args.seed)
    run_vibekit(engine, warm, chunk, args.max_tokens)  # first-call costs out of the timings
    run_hf(hf, warm, chunk, args.max_tokens, engine.frame_len)
    results = []
    for n in streams:
        audios = make_audio(n, args.audio_seconds, args.seed + n)
        runs: dict[str, list] = {"vibekit": [], "hf": []}
        for r in range(args.repeats):
            order = ["vibekit", "hf"] if r % 2 == 0 else ["hf", "vibekit"]
            for name in order:
                if name == "vibekit":
                    runs[name].append(run_vibekit(engine, audios, chunk, args.max_tokens))
                else:
                    runs[name].append(run_hf(hf, audios, chunk, args.max_tokens,
                                             engine.frame_len))
        vk_final, hf_final = runs["vibekit"][0][0], runs["hf"][0][0]
        if vk_final != hf_final:
            raise SystemExit(f"final transcripts differ at {n} streams: {vk_final} vs {hf_final}")
        row = {"streams": n, "exact": True}
        for name, rs in runs.items():
            row[f"{name}_ttft_p50_ms"] = 1e3 * statistics.median(pct(r[1], 0.5) for r in rs)
            row[f"{name}_ttft_p99_ms"] = 1e3 * statistics.median(pct(r[1], 0.99) for r in rs)
            row[f"{name}_audio_s_per_s"] = statistics.median(
                n * args.audio_seconds / r[2] for r in rs)
        row["ttft_p50_ratio"] = row["hf_ttft_p50_ms"] / row["vibekit_ttft_p50_ms"]
        row["throughput_ratio"] = row["vibekit_audio_s_per_s"] / row["hf_audio_s_per_s"]
        results.append(row)
        print(f"{n:>3} streams | TTFT/chunk p50 vibekit {row['vibekit_ttft_p50_ms']:8.1f} ms "
              f"HF {row['hf_ttft_p50_ms']:8.1f} ms (x{row['ttft_p50_ratio']:.2f}) | p99 "
              f"{row['vibekit_ttft_p99_ms']:8.1f} / {row['hf_ttft_p99_ms']:8.1f} ms | audio s/s "
              f"{row['vibekit_audio_s_per_s']:6.2f} / {row['hf_audio_s_per_s']:6.2f} "
              f"(x{row['throughput_ratio']:.2f}) | final transcripts equal")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
