"""Decode throughput: vibekit Engine vs HF transformers `generate` on the same weights.

Side by side in one run, with the memory bandwidth measured in the same run and vibekit's fraction
of the bandwidth roofline at batch 1 (decode reads every weight once per step).

    python benchmarks/bench_decode.py                         # SmolLM-135M shape, fp32 + bf16
    python benchmarks/bench_decode.py --quick                 # tiny model, seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

import torch
from transformers import LlamaForCausalLM

from vibekit import Engine, SamplingParams
from vibekit.models.dummy import save_dummy_checkpoint
from vibekit.roofline import measure_read_bandwidth

PRESETS = {"full": "smollm-135m", "quick": "tiny-llama"}



def prompts_for(batch: int, vocab: int, seed: int, mixed: bool, out_len: int):
    rng = random.Random(seed)
    lens = [rng.randint(16, 128) if mixed else 16 for _ in range(batch)]
    outs = [rng.randint(out_len // 2, out_len) if mixed else out_len for _ in range(batch)]
    return [[rng.randrange(vocab) for _ in range(n)] for n in lens], outs


def run_vibekit(engine: Engine, prompts, out_lens) -> float:
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in out_lens]
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    dt = time.perf_counter() - t0
    assert [len(o.token_ids) for o in outs] == out_lens
    return sum(out_lens) / dt


@torch.inference_mode()
def run_hf(model: LlamaForCausalLM, prompts, out_lens) -> float:
    """HF generate as a user would batch it: left-padded, max_new_tokens = longest request."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    n = max(out_lens)
    t0 = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                   do_sample=False, pad_token_id=0)
    dt = time.perf_counter() - t0
    return sum(out_lens) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny model and few tokens (CI)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--out-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both engines and the bandwidth probe")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    preset = PRESETS["quick" if args.quick else "full"]
    out_len = 8 if args.quick else args.out_len
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()} model=dummy:{preset} (random weights, saved as an "
          f"HF checkpoint for both engines) out_len={out_len}")
    bw = measure_read_bandwidth(1 << 26 if args.quick else 1 << 30)
    print(f"measured read bandwidth: {bw / 1e9:.1f} GB/s")
    results = []
    with tempfile.TemporaryDirectory() as path:
        save_dummy_checkpoint(preset, path)
        hf_fp32 = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
        vocab = hf_fp32.config.vocab_size
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            hf = hf_fp32.to(dtype).eval()
            engine = Engine.from_pretrained(path, dtype=dtype_name, max_model_len=512,
                                            enable_prefix_caching=False)
            # Bytes read per decode step at batch 1: every weight once (a tied embedding is read
            # as the lm_head; the embedding lookup itself reads one row).
            weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
            roofline = bw / weight_bytes
            for batch in (int(b) for b in args.batches.split(",")):
                prompts, lens = prompts_for(batch, vocab, 0, batch > 1, out_len)
                run_vibekit(engine, prompts, [2] * batch)  # warm up
                run_hf(hf, prompts, [2] * batch)
                vk = [run_vibekit(engine, prompts, lens) for _ in range(repeats)]
                hfr = [run_hf(hf, prompts, lens) for _ in range(repeats)]
                vk_t, hf_t = statistics.median(vk), statistics.median(hfr)
                row = dict(dtype=dtype_name, batch=batch, vibekit_tok_s=round(vk_t, 1),
                           hf_tok_s=round(hf_t, 1), speedup=round(vk_t / hf_t, 2),
                           roofline_tok_s=round(roofline, 1),
                           roofline_fraction=round(vk_t / roofline, 3) if batch == 1 else None)
                results.append(row)
                print(json.dumps(row))
            del engine
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(bandwidth_gb_s=bw / 1e9, results=results), f, indent=2)


if __name__ == "__main__":
    main()
