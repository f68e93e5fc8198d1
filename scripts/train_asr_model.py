"""Train `zoo:asr-tiny`: a tiny MoonshineStreaming speech recognizer on speech synthesized here.

Data: sentences of random word sequences (2-8 words, no grammar: the language prior cannot guess a
word, so the WER measures the acoustics) over the 3000 most frequent alphabetic English words of
the `wordfreq` PyPI package, spoken by espeak-ng (a Debian package) with 7 accents x 11 voice
variants, speeds 130-210 wpm and pitches 25-75, resampled from 22.05 kHz to 16 kHz mono, silence
trimmed, and light white noise on half the training utterances. Held out: the evaluation sentences
(never in the training set) and one voice, accent `en-us-nyc` with variant `f3` (neither the
accent nor the variant is used in training).

Model: `transformers.MoonshineStreamingForConditionalGeneration` from a small config (encoder and
decoder 4 layers, hidden 128, 4 heads of 32, decoder partial_rotary_factor 0.75, per-layer encoder
sliding windows (16, 4) (16, 0) (16, 0) (16, 4) in 20 ms frames; 2.58M parameters) and a
character tokenizer (a `tokenizers` BPE with no merges: a-z, the Metaspace word mark and 4
specials, 31 tokens; --vocab > 31 gives real BPE merges). Loss: the HF seq2seq cross-entropy plus
an auxiliary CTC loss on the encoder output (weight --ctc-weight; a training-only linear head,
not saved). Plain torch AdamW, float32, seeded, 1 thread (2 threads ran ~8x slower on the shared,
overloaded 2-core machine: the threads wait on each other). Always trained with an audio
attention_mask, so the encoder uses its sliding windows (transformers' encoder attends to all
frames when no mask is passed): transcribe with the mask the processor returns.

Install and run (espeak-ng is needed only here, never by the tests)::

    apt-get update && apt-get install -y espeak-ng
    pip install wordfreq -c constraints.txt
    nohup python scripts/train_asr_model.py > /tmp/train_asr_model.log 2>&1 &
    python scripts/train_asr_model.py --eval-only      # WER on the held-out sets (RESULTS.md)

The committed model (vibekit/zoo/asr-tiny) is that default command; the timing is in
benchmarks/RESULTS.md ("Zoo ASR model"). Data is cached in --work-dir (regenerated when absent),
checkpoints every --ckpt-every steps; rerunning the same command resumes from the latest one.
`--stop-at N` stops after step N and writes the folder (the schedule stays that of --steps).
`--write-fixtures` writes the test fixtures tests/data/asr/ from held-out sentences.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import subprocess
import time
import wave
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SR = 16000
ESPEAK_SR = 22050
FRAME = 80  # samples per 5 ms frame (the model's frame_len)

TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029",
                 "en-gb-x-gbcwmd")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f4", "f5")
HELDOUT_VOICE = "en-us-nyc+f3"
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3: pad, bos (decoder start), eos, unk

# ---------------------------------------------------------------------------------------------
# Text


def vocabulary(n: int = 3000) -> list[str]:
    """The `n` most frequent English words of wordfreq that are plain lowercase ASCII letters
    (single letters other than 'a' and 'i' excluded)."""
    from wordfreq import top_n_list

    out = []
    for w in top_n_list("en", 20 * n):
        if re.fullmatch(r"[a-z]+", w) and (len(w) > 1 or w in ("a", "i")):
            out.append(w)
            if len(out) == n:
                break
    return out


def make_sentences(words: list[str], count: int, rng: random.Random,
                   exclude: set[str] = frozenset()) -> list[str]:
    """`count` distinct random word sequences of 2-8 words; word weights rank^-0.5 (frequent words
    more often, but every word appears)."""
    weights = [1.0 / math.sqrt(r + 1) for r in range(len(words))]
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        s = " ".join(rng.choices(words, weights, k=rng.randint(2, 8)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------------
# Speech


def synthesize(job: tuple[str, str, int, int, int]) -> np.ndarray:
    """espeak-ng speech of `text` as 16 kHz int16, silence trimmed with `margin` ms kept."""
    from scipy.signal import resample_poly

    text, voice, speed, pitch, margin = job
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", text], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        if w.getframerate() != ESPEAK_SR or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise RuntimeError(f"unexpected espeak-ng output {w.getparams()}")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32)
    x = resample_poly(x, 320, 441)  # 22050 * 320 / 441 = 16000
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    m = margin * SR // 1000
    x = x[max(0, loud[0] - m): loud[-1] + m]
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def voice_jobs(sentences: list[str], rng: random.Random, voices: list[str] | None):
    jobs = []
    for s in sentences:
        voice = rng.choice(voices) if voices else (
            f"{rng.choice(TRAIN_ACCENTS)}+{rng.choice(TRAIN_VARIANTS)}")
        jobs.append((s, voice, rng.randint(130, 210), rng.randint(25, 75), rng.randint(30, 150)))
    return jobs


def build_set(jobs, procs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """All utterances concatenated (int16) and their offsets (len(jobs) + 1)."""
    with Pool(procs) as pool:
        audio = pool.map(synthesize, jobs, chunksize=64)
    offsets = np.zeros(len(audio) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in audio])
    return np.concatenate(audio), offsets


def datasets(args) -> dict:
    """Train / held-out sentences and audio, cached in args.work_dir (data.json, *.npy)."""
    if (args.work_dir / "data.json").exists():  # the audio memory-mapped, not read into memory
        meta = json.loads((args.work_dir / "data.json").read_text())
        return {k: dict(meta[k], audio=np.load(args.work_dir / f"{k}_audio.npy", mmap_mode="r"),
                        offsets=np.load(args.work_dir / f"{k}_offsets.npy")) for k in meta}
    t0 = time.time()
    rng = random.Random(args.seed)
    words = vocabulary(args.words)
    held = make_sentences(words, 2 * args.eval_sentences, rng)
    train = make_sentences(words, args.train_utts, rng, exclude=set(held))
    sets = {
        "train": voice_jobs(train, rng, None),
        "heldout": voice_jobs(held[:args.eval_sentences], rng, None),
        "heldout_voice": voice_jobs(held[args.eval_sentences:], rng, [HELDOUT_VOICE]),
    }
    out, meta, arrays = {}, {}, {}
    for name, jobs in sets.items():
        audio, offsets = build_set(jobs)
        meta[name] = {"texts": [j[0] for j in jobs], "voices": [j[1] for j in jobs]}
        arrays[name + "_audio"], arrays[name + "_offsets"] = audio, offsets
        out[name] = dict(meta[name], audio=audio, offsets=offsets)
        print(f"{name}: {len(jobs)} utterances, {len(audio) / SR / 3600:.2f} h", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        np.save(args.work_dir / f"{key}.npy", array)
    (args.work_dir / "data.json").write_text(json.dumps(meta))
    (args.work_dir / "words.txt").write_text("\n".join(words) + "\n")
    print(f"data generated in {time.time() - t0:.0f} s", flush=True)
    return out


def utterance(ds: dict, i: int) -> np.ndarray:
    return ds["audio"][ds["offsets"][i]: ds["offsets"][i + 1]]


# ---------------------------------------------------------------------------------------------
# Tokenizer, model, processor


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False))
    return tok


def model_config(args, vocab_size: int):
    from transformers import MoonshineStreamingConfig

    d, heads = args.hidden, args.heads
    windows = [[16, 4], [16, 0], [16, 0], [16, 4]] if args.layers == 4 else \
        [[16, 4 if i in (0, args.layers - 1) else 0] for i in range(args.layers)]
    return MoonshineStreamingConfig(
        encoder_config=dict(hidden_size=d, intermediate_size=4 * d, num_hidden_layers=args.layers,
                            num_attention_heads=heads, num_key_value_heads=heads,
                            max_position_embeddings=1024, sliding_windows=windows),
        vocab_size=vocab_size, hidden_size=d, intermediate_size=4 * d,
        num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "partial_rotary_factor": args.rotary})


def save_hf(model, tok, out: Path) -> None:
    from transformers import (
        GenerationConfig,
        MoonshineStreamingProcessor,
        PreTrainedTokenizerFast,
        Wav2Vec2FeatureExtractor,
    )

    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out, safe_serialization=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0,
                                  do_normalize=False, return_attention_mask=True)
    MoonshineStreamingProcessor(feature_extractor=fe, tokenizer=fast).save_pretrained(out)
    GenerationConfig(decoder_start_token_id=1, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     max_length=128, do_sample=False).save_pretrained(out)


# ---------------------------------------------------------------------------------------------
# Training


def batches(ds: dict, batch: int, rng: random.Random):
    """Endless batches of indices of similar length (sorted within pools of 50 batches)."""
    lengths = np.diff(ds["offsets"])
    n = len(lengths)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        pool = 50 * batch
        chunks = []
        for s in range(0, n, pool):
            group = sorted(order[s:s + pool], key=lambda i: lengths[i])
            chunks += [group[k:k + batch] for k in range(0, len(group), batch)]
        rng.shuffle(chunks)
        yield from chunks


def collate(ds: dict, idx: list[int], rng: np.random.Generator | None, noise_p: float = 0.0):
    """(input_values float32 [B, T], attention_mask long [B, T]); T a multiple of 4 frames."""
    wavs = [utterance(ds, i).astype(np.float32) / 32768.0 for i in idx]
    T = max(len(w) for w in wavs)
    T = -(-T // (4 * FRAME)) * 4 * FRAME
    x = np.zeros((len(wavs), T), np.float32)
    mask = np.zeros((len(wavs), T), np.int64)
    for b, w in enumerate(wavs):
        if rng is not None and rng.random() < noise_p:
            snr_db = rng.uniform(20, 45)
            w = w + rng.standard_normal(len(w)).astype(np.float32) * (
                np.sqrt(np.mean(w ** 2)) * 10 ** (-snr_db / 20))
        x[b, :len(w)] = w
        mask[b, :len(w)] = 1
    return torch.from_numpy(x), torch.from_numpy(mask)


def label_tensor(tok, texts: list[str]) -> torch.Tensor:
    ids = [e.ids + [2] for e in tok.encode_batch(texts)]
    L = max(len(i) for i in ids)
    out = torch.full((len(ids), L), -100, dtype=torch.long)
    for b, i in enumerate(ids):
        out[b, :len(i)] = torch.tensor(i)
    return out


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def train(args) -> None:
    from tokenizers import Tokenizer
    from transformers import MoonshineStreamingForConditionalGeneration
    from transformers.models.moonshine_streaming.modeling_moonshine_streaming import (
        MoonshineStreamingEncoderModelOutput,
    )

    data = datasets(args)
    tr = data["train"]
    tok_path = args.work_dir / "tokenizer.json"
    if tok_path.exists():
        tok = Tokenizer.from_file(str(tok_path))
    else:
        tok = train_tokenizer(tr["texts"], args.vocab)
        tok.save(str(tok_path))
    torch.manual_seed(args.seed)
    model = MoonshineStreamingForConditionalGeneration(model_config(args, tok.get_vocab_size()))
    ctc_head = torch.nn.Linear(args.hidden, tok.get_vocab_size())  # blank = <pad> (id 0)
    model.to(args.device)
    ctc_head.to(args.device)
    params = list(model.parameters()) + list(ctc_head.parameters())
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    step, elapsed = 0, 0.0
    ckpts = sorted(args.work_dir.glob("ckpt_*.pt"))
    if ckpts:
        state = torch.load(ckpts[-1], weights_only=False, map_location=args.device)
        model.load_state_dict(state["model"])
        ctc_head.load_state_dict(state["ctc"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        print(f"resumed from {ckpts[-1].name} (step {step})", flush=True)
    # the batch stream and noise are a function of (seed, step): replay them to resume exactly
    rng = random.Random(args.seed + 1)
    nrng = np.random.default_rng(args.seed + 2)
    stream = batches(tr, args.batch, rng)
    stop = args.stop_at or args.steps
    for _ in range(step if step < stop else 0):
        idx = next(stream)
        collate(tr, idx, nrng, args.noise)
    model.train()
    t0, losses = time.time(), []
    while step < stop:
        idx = next(stream)
        x, mask = (t.to(args.device) for t in collate(tr, idx, nrng, args.noise))
        labels = label_tensor(tok, [tr["texts"][i] for i in idx]).to(args.device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        enc = model.model.encoder(x, attention_mask=mask)
        h, fmask = enc.last_hidden_state, enc.attention_mask
        out = model(encoder_outputs=MoonshineStreamingEncoderModelOutput(
            last_hidden_state=h.clone(), attention_mask=fmask), labels=labels)
        loss = out.loss
        if args.ctc_weight > 0:
            logp = ctc_head(h).log_softmax(-1).transpose(0, 1)
            tgt = labels[:, :-1].clamp(min=0)  # the eos column is dropped below by the lengths
            tgt_len = (labels != -100).sum(1) - 1
            ctc = torch.nn.functional.ctc_loss(logp, tgt, fmask.sum(1), tgt_len, blank=0,
                                               zero_infinity=True)
            loss = (1 - args.ctc_weight) * loss + args.ctc_weight * ctc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        losses.append((out.loss.item(), ctc.item() if args.ctc_weight > 0 else 0.0))
        if step % args.log_every == 0:
            ce, cc = np.mean(losses, axis=0)
            losses = []
            print(f"step {step} ce {ce:.3f} ctc {cc:.3f} lr {lr_at(step, args):.2e} "
                  f"{elapsed + time.time() - t0:.0f}s", flush=True)
        if step % args.ckpt_every == 0 or step == stop:
            torch.save({"model": model.state_dict(), "ctc": ctc_head.state_dict(),
                        "opt": opt.state_dict(), "step": step,
                        "elapsed": elapsed + time.time() - t0},
                       args.work_dir / f"ckpt_{step:06d}.pt")
            for old in sorted(args.work_dir.glob("ckpt_*.pt"))[:-2]:
                old.unlink()
    print(f"trained {step} steps in {elapsed + time.time() - t0:.0f} s", flush=True)
    model.eval()
    save_hf(model, tok, args.out)
    print(f"wrote {args.out}", flush=True)


# ---------------------------------------------------------------------------------------------
# Evaluation


def word_errors(ref: str, hyp: str) -> int:
    """Levenshtein distance between the word sequences (substitutions + deletions + insertions)."""
    r, h = ref.split(), hyp.split()
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1]


def transcribe(model, processor, wavs: list[np.ndarray], batch: int = 1) -> list[str]:
    out = []
    for s in range(0, len(wavs), batch):
        chunk = [w.astype(np.float32) / 32768.0 for w in wavs[s:s + batch]]
        inputs = processor(chunk, sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(inputs["input_values"], attention_mask=inputs["attention_mask"],
                                 do_sample=False, num_beams=1)
        out += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return out


def evaluate(args) -> None:
    from transformers import AutoProcessor, MoonshineStreamingForConditionalGeneration

    data = datasets(args)
    model = MoonshineStreamingForConditionalGeneration.from_pretrained(args.out).eval()
    processor = AutoProcessor.from_pretrained(args.out)
    results = {}
    for name in ("heldout", "heldout_voice"):
        ds = data[name]
        n = min(args.eval_n, len(ds["texts"]))
        t0 = time.time()
        hyps = transcribe(model, processor, [utterance(ds, i) for i in range(n)])
        refs = ds["texts"][:n]
        errs = sum(word_errors(r, h) for r, h in zip(refs, hyps))
        words = sum(len(r.split()) for r in refs)
        exact = sum(r == h for r, h in zip(refs, hyps))
        results[name] = {"utterances": n, "words": words, "wer": errs / words,
                         "sentence_exact": exact / n}
        try:
            import jiwer

            results[name]["wer_jiwer"] = jiwer.wer(refs, hyps)
        except ImportError:
            pass
        print(f"{name}: {n} utterances, {words} words, WER {100 * errs / words:.2f}%, "
              f"exact sentences {100 * exact / n:.1f}% ({time.time() - t0:.0f} s)", flush=True)
        for r, h in list(zip(refs, hyps))[:5]:
            print(f"  ref: {r}\n  hyp: {h}")
    print(json.dumps(results, indent=1))


def write_fixtures(args) -> None:
    """A few held-out utterances of 1-4 s (both held-out sets) as 16-bit wavs + their texts."""
    data = datasets(args)
    out = REPO / "tests/data/asr"
    out.mkdir(parents=True, exist_ok=True)
    meta = []
    for name, count in (("heldout", 3), ("heldout_voice", 2)):
        ds = data[name]
        picked = 0
        for i in range(len(ds["texts"])):
            wav = utterance(ds, i)
            if not (1.0 <= len(wav) / SR <= 4.0 and len(ds["texts"][i].split()) >= 3):
                continue
            fname = f"{name}_{i:03d}.wav"
            with wave.open(str(out / fname), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SR)
                w.writeframes(wav.tobytes())
            meta.append({"file": fname, "text": ds["texts"][i], "voice": ds["voices"][i],
                         "set": name})
            picked += 1
            if picked == count:
                break
    (out / "references.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "vibekit/zoo/asr-tiny")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/asr-tiny-run"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (same recipe; "
                   "float rounding differs, so not the same weights)")
    p.add_argument("--words", type=int, default=3000)
    p.add_argument("--train-utts", type=int, default=16000)
    p.add_argument("--eval-sentences", type=int, default=400)
    p.add_argument("--vocab", type=int, default=31,
                   help="BPE vocabulary incl. 4 specials; 31 = characters only (no merges)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rotary", type=float, default=0.75,
                   help="partial_rotary_factor of the decoder (rotary dims = head_dim x this)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ctc-weight", type=float, default=0.3)
    p.add_argument("--noise", type=float, default=0.5, help="fraction of noisy training utts")
    p.add_argument("--stop-at", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--eval-n", type=int, default=400, help="utterances per held-out set")
    p.add_argument("--write-fixtures", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.eval_only:
        evaluate(args)
    elif args.write_fixtures:
        write_fixtures(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
