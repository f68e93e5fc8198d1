"""Train the zoo model `digits-flow`: a unified text + image flow-matching transformer on
scikit-learn's handwritten digits (8x8, upscaled to 16x16), prompted with "a handwritten 7" etc.

Reproducible: seeded, float32, one CPU thread (the result is bit-identical for the same seed,
torch build and CPU). Writes config.json + model.safetensors (the EMA weights) and prints the
digit-classifier agreement of samples with and without guidance.

    python scripts/train_digits_flow.py                              # -> vibekit/zoo/digits_flow/
    python scripts/train_digits_flow.py --steps 200 --out /tmp/dflow   # a quick smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from vibekit.models.unified import UnifiedConfig, UnifiedFlowModel
from vibekit.zoo.digits_flow import HERE, WORDS, load_digit_images, random_prompt


def train(args: argparse.Namespace) -> UnifiedFlowModel:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    config = UnifiedConfig(words=WORDS, hidden_size=args.hidden_size, num_layers=args.num_layers,
                           num_heads=args.num_heads, intermediate_size=4 * args.hidden_size,
                           image_size=16, patch_size=4, max_prompt_len=7)
    model = UnifiedFlowModel(config)
    ema = copy.deepcopy(model).requires_grad_(False)
    images, labels = load_digit_images(config.image_size)
    data = model.patchify(images * 2 - 1)  # [N, P, patch_dim] in [-1, 1]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0,
                            betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / args.warmup) * max(0.05, 1 - s / args.steps))
    print(f"config={json.dumps(config.to_dict())}")
    print(f"params={sum(p.numel() for p in model.parameters())} steps={args.steps} "
          f"batch={args.batch_size} lr={args.lr} seed={args.seed} p_uncond={args.p_uncond}")
    t_start = time.perf_counter()
    running = 0.0
    for step in range(args.steps):
        idx = torch.randint(len(data), (args.batch_size,), generator=gen)
        x1 = data[idx]
        if args.shift:  # +-1 pixel translations (in image space) as augmentation
            img = model.unpatchify(x1)
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            img = torch.roll(img, shifts=(dy, dx), dims=(2, 3))
            x1 = model.patchify(img)
        prompts = ["" if rng.random() < args.p_uncond else random_prompt(int(labels[i]), rng)
                   for i in idx]
        ids, mask = model.tokenizer.batch(prompts)
        x0 = torch.randn(x1.shape, generator=gen)
        t = torch.sigmoid(torch.randn(args.batch_size, generator=gen))  # logit-normal (SD3)
        xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * x1
        v = model.velocity(xt, t, model.encode_prompt(ids, mask))
        loss = (v - (x1 - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {running:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.perf_counter() - t_start:.0f}s", flush=True)
    print(f"trained in {time.perf_counter() - t_start:.0f}s")
    return ema.eval()


def evaluate(model: UnifiedFlowModel, per_digit: int, num_steps: int, scale: float) -> None:
    """Classifier agreement with the requested digit: guided, unguided and unconditional."""
    from vibekit.cfg import CFGCachePolicy, FlowCFGSampler
    from vibekit.zoo.digits_flow import digit_classifier, digit_prompt

    clf, held_out = digit_classifier(model.config.image_size)
    print(f"classifier held-out accuracy on real digits: {held_out:.3f}")
    digits = [d for d in range(10) for _ in range(per_digit)]
    prompts = [digit_prompt(d) for d in digits]
    seeds = list(range(len(prompts)))
    for label, s, prompt_list in (("guided", scale, prompts), ("no guidance", 1.0, prompts),
                                  ("unconditional", 1.0, [""] * len(prompts))):
        sampler = FlowCFGSampler(model, num_steps=num_steps, guidance_scale=s,
                                 policy=CFGCachePolicy())
        images = sampler.generate(prompt_list, seeds).images
        pred = clf.predict(images.reshape(len(images), -1).numpy())
        agree = sum(int(p == d) for p, d in zip(pred, digits)) / len(digits)
        print(f"agreement {label:14s} (scale {s}): {agree:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--p-uncond", type=float, default=0.15)
    ap.add_argument("--shift", action="store_true", help="random +-1 pixel translations")
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=4)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE), help="folder for config.json + model.safetensors")
    ap.add_argument("--eval-per-digit", type=int, default=20)
    ap.add_argument("--eval-steps", type=int, default=50)
    ap.add_argument("--eval-scale", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # reproducible, and polite on a shared machine
    model = train(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "model.safetensors", metadata={"format": "pt", "seed": str(args.seed)})
    print(f"wrote {out / 'model.safetensors'} ({(out / 'model.safetensors').stat().st_size} bytes)")
    if args.eval_per_digit:
        evaluate(model, args.eval_per_digit, args.eval_steps, args.eval_scale)


if __name__ == "__main__":
    main()
