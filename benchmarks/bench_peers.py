"""Decode throughput side by side: vibekit vs HF generate vs llama.cpp vs vLLM CPU, same weights.

Each engine runs in its own process (benchmarks/peer_worker.py, under its own interpreter),
loaded once and warmed up, and frozen (SIGSTOP) except while it runs a job, so an idle engine's
spinning threads never take CPU from the one being timed; the jobs are interleaved (every
repeat visits every engine in a rotated order), and each cell is the median of >= 3 repeats
with the min..max spread. The read bandwidth is measured in this process at the same thread
count, in the same run; batch-1 rows show each engine's fraction of the roofline (bytes of
weights read per token / time).

    python benchmarks/bench_peers.py                          # SmolLM-135M shape, all engines
    python benchmarks/bench_peers.py --model zoo:code-edit-tiny
    python benchmarks/bench_peers.py --quick                  # tiny model, vibekit + HF (CI)
    python benchmarks/bench_peers.py --batches 1 --prompt-len 1536   # decode at a long context

--prompt-len N (batch 1 only) measures decode behind an N-token prompt: each run gets a fresh
random prompt (so no engine's prefix cache can hit), and the cell is the decode rate,
(out_len - 1) / (that run's time - the time of a prefill-only run of another fresh prompt of the
same length, in the same repeat). No roofline there: the KV cache read per token, whose dtype
differs between engines, is then a large part of the bytes.

Peers are optional (scripts/install_peers.sh builds their venvs): a peer whose interpreter or
package is missing is skipped with a message. Greedy decoding, EOS ignored; tok/s counts the
tokens each request asked for over the wall time of the whole batch (prefill included).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vibekit.models.dummy import save_dummy_checkpoint
from vibekit.roofline import measure_read_bandwidth

HERE = Path(__file__).parent
REPO = HERE.parent
VENVS = Path(os.environ.get("VENV_ROOT", "/work/venvs"))
# Converts an HF folder to GGUF with the converter vendored in llama-cpp-python's sdist. The
# dummy/zoo byte-level tokenizers are not ones it knows (its BPE pre-tokenizer table, merges):
# ids are fed directly here, so the vocabulary is declared gpt-2 with one placeholder merge.
CONVERT = """
import runpy, sys
share = sys.argv[1]
sys.path[:0] = [share, share + "/gguf-py"]
import gguf
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
_init = gguf.SpecialVocab.__init__
def _init_with_merges(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if not self.merges:
        self.merges = ["\\u0120 \\u0120"]
gguf.SpecialVocab.__init__ = _init_with_merges
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
runpy.run_path(share + "/convert_hf_to_gguf.py", run_name="__main__")
"""


@dataclass
class Worker:
    """One engine process: name shown in the table, command line, bytes read per decode step."""

    label: str
    argv: list[str]
    weight_bytes: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    log: Path | None = None

    def start(self, work: Path) -> bool:
        env = {**os.environ, **self.env}
        # NOTE: stderr goes to a file: an undrained pipe fills up and stalls a chatty engine.
        self.log = work / f"worker-{self.label.replace(' ', '_').replace('/', '_')}.log"
        with open(self.log, "w") as err:
            # Own session: stop() ends the engine's helper processes too (vLLM's engine core).
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, env=env, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith('{"ready"'):
            self.stop()
            tail = self.log.read_text()[-600:].strip()
            print(f"  skip {self.label}: worker did not start (log {self.log}): {tail}")
            return False
        self._signal(signal.SIGSTOP)
        return True

    # NOTE: an engine is frozen (SIGSTOP to its whole session, helper processes included)
    # except while it runs a job. Idle engines are not idle on the CPU: some keep threads
    # spinning or polling, and on a 2-core machine that took a core from whichever engine was
    # being timed (vibekit at 2 threads, bfloat16: 154 tok/s alone, 115 beside an idle
    # llama.cpp worker, 60 beside all the peers). A user runs one engine at a time.
    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def run(self, prompts, out_lens, **extra) -> dict:
        """One job (peer_worker.py's protocol; `extra`: predictions, all), with every other
        worker frozen."""
        self._signal(signal.SIGCONT)
        try:
            self.proc.stdin.write(json.dumps({"prompts": prompts, "out_lens": out_lens,
                                              **extra}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        finally:
            self._signal(signal.SIGSTOP)
        if not line:
            raise RuntimeError(f"{self.label} died: {self.log.read_text()[-800:]}")
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        try:  # NOTE: orphaned children of the worker's session (it led the session)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


def checkpoint_bytes(path: Path, itemsize: float) -> int:
    """Bytes of weights one decode step reads: every parameter once (a tied head once)."""
    from safetensors import safe_open

    n = 0
    with safe_open(path / "model.safetensors", framework="pt") as f:
        for name in f.keys():  # noqa: SIM118
            if "norm" not in name:
                n += _prod(f.get_slice(name).get_shape())
    return int(n * itemsize)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def gguf_file(model: Path, outtype: str, work: Path, python: Path) -> Path | None:
    out = work / f"{model.name}-{outtype}.gguf"
    if out.is_file():
        return out
    share = python.parent.parent / "share" / "llama.cpp"
    proc = subprocess.run([str(python), "-c", CONVERT, str(share), str(model), "--outtype",
                           outtype, "--outfile", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  skip llama.cpp {outtype}: GGUF conversion failed: {proc.stderr[-400:]}")
        return None
    return out


def make_workers(args, model: Path, dtype: str, threads: int, work: Path) -> list[Worker]:
    worker = str(HERE / "peer_worker.py")
    me = sys.executable
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    itemsize = 4 if dtype == "float32" else 2
    fbytes = checkpoint_bytes(model, itemsize)
    qbytes = checkpoint_bytes(model, 1)  # int8 / Q8_0 (scales ignored: < 4%)
    out: list[Worker] = []
    for engine in args.engines.split(","):
        if engine == "vibekit":
            out.append(Worker("vibekit", [me, worker, "vibekit", str(model), dtype, str(threads)],
                              fbytes, env))
            if args.int8:
                for quant in ("int8", "w8a8"):
                    opts = json.dumps({"quantization": quant})
                    out.append(Worker(f"vibekit {quant}", [me, worker, "vibekit", str(model),
                                                           dtype, str(threads), opts], qbytes,
                                      env))
        elif engine in ("vibekit-torch-attention", "vibekit-invariant"):
            opts = json.dumps({"attention_backend": "torch"} if engine.endswith("attention")
                              else {"batch_invariant": True})
            label = {"vibekit-invariant": "vibekit batch_invariant",
                     "vibekit-torch-attention": "vibekit (torch attention)"}[engine]
            out.append(Worker(label, [me, worker, "vibekit", str(model), dtype, str(threads),
                                      opts], fbytes, env))
        elif engine == "vibekit-torch":
            opts = json.dumps({"linear_backend": "torch"})
            out.append(Worker("vibekit (torch linear)", [me, worker, "vibekit", str(model), dtype,
                                                         str(threads), opts], fbytes, env))
        elif engine == "vibekit-nokernels":  # every op on torch (VIBEKIT_DISABLE_CPU_KERNELS)
            out.append(Worker("vibekit (no C++ kernels)", [me, worker, "vibekit", str(model),
                                                           dtype, str(threads)], fbytes,
                              {**env, "VIBEKIT_DISABLE_CPU_KERNELS": "1"}))
        elif engine == "vibekit-avx2":  # the AVX2 build on an AVX512 CPU (VIBEKIT_CPU_ISA)
            out.append(Worker("vibekit (AVX2 build)", [me, worker, "vibekit", str(model),
                                                       dtype, str(threads)], fbytes,
                              {**env, "VIBEKIT_CPU_ISA": "avx2"}))
        elif engine == "hf":
            out.append(Worker("HF generate", [me, worker, "hf", str(model), dtype, str(threads)],
                              fbytes, env))
        elif engine == "llamacpp":
            python = VENVS / "llamacpp" / "bin" / "python"
            if not python.is_file():
                print(f"  skip llama.cpp: {python} missing (scripts/install_peers.sh llamacpp)")
                continue
            types = [("f32" if dtype == "float32" else "bf16", fbytes)]
            if args.int8:
                types.append(("q8_0", qbytes))
            for outtype, nbytes in types:
                gguf = gguf_file(model, outtype, work, python)
                if gguf is not None:
                    out.append(Worker(f"llama.cpp {outtype}", [str(python), worker, "llamacpp",
                                                               str(gguf), dtype, str(threads)],
                                      nbytes, {"OMP_NUM_THREADS": str(threads)}))
        elif engine == "vllm":
            python = VENVS / "vllm" / "bin" / "python"
            if not python.is_file():
                print(f"  skip vLLM: {python} missing (scripts/install_peers.sh vllm)")
                continue
            out.append(Worker("vLLM CPU", [str(python), worker, "vllm", str(model), dtype,
                                           str(threads)], fbytes,
                              {"OMP_NUM_THREADS": str(threads)}))
        else:
            raise SystemExit(f"unknown engine {engine!r}")
    return out


def fresh_prompt(vocab: int, length: int, seed: tuple[object, ...]) -> list[int]:
    """A random prompt, the same for the same seed (any values; they are joined as text)."""
    rng = random.Random("/".join(map(str, seed)))
    return [rng.randrange(1, vocab) for _ in range(length)]


def workload(batch: int, vocab: int, out_len: int, seed: int):
    """Batch 1: one 32-token prompt. Larger: mixed prompt (16..128) and output lengths."""
    rng = random.Random(seed)
    if batch == 1:
        return [[rng.randrange(1, vocab) for _ in range(32)]], [out_len]
    lens = [rng.randint(16, 128) for _ in range(batch)]
    outs = [rng.randint(out_len // 2, out_len) for _ in range(batch)]
    return [[rng.randrange(1, vocab) for _ in range(n)] for n in lens], outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model, vibekit + HF, seconds (CI)")
    ap.add_argument("--model", default="dummy:smollm-135m",
                    help="dummy:<preset> (saved with save_pretrained), zoo:<name> or an HF folder")
    ap.add_argument("--engines", default="vibekit,hf,llamacpp,vllm",
                    help="comma list of vibekit, vibekit-invariant (batch_invariant=True), "
                         "vibekit-torch (torch linear), vibekit-nokernels (no C++ kernel at "
                         "all), vibekit-avx2 (the AVX2 build), vibekit-torch-attention (SDPA "
                         "attention), hf, llamacpp, vllm")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out-len", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=None,
                    help="batch 1: decode rate behind a fresh prompt of this many tokens "
                         "(prefill timed apart and subtracted; see above)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--int8", action="store_true",
                    help="also vibekit quantization='int8' and 'w8a8', and llama.cpp Q8_0")
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "vibekit_peers"))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.model, args.engines, args.dtypes = "dummy:tiny-llama", "vibekit,hf", "float32"
        args.threads, args.out_len, args.repeats = "1", 8, 1
        args.batches = "1" if args.prompt_len is not None else "1,4"
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.model.startswith("dummy:"):
        model = work / args.model.removeprefix("dummy:")
        if not (model / "model.safetensors").is_file():
            save_dummy_checkpoint(args.model.removeprefix("dummy:"), model)
    elif args.model.startswith("zoo:"):
        from vibekit import zoo

        model = Path(zoo.path(args.model.removeprefix("zoo:")))
    else:
        model = Path(args.model)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    if args.prompt_len is not None:
        if args.prompt_len < 1 or args.batches != "1":
            raise SystemExit("--prompt-len needs --batches 1 and a length >= 1")
        # the context the workers' engines must hold (peer_worker.py reads it)
        os.environ["PEER_MAX_MODEL_LEN"] = str(args.prompt_len + args.out_len + 16)
    print(f"model={args.model} ({model}) out_len={args.out_len} repeats={args.repeats}; "
          f"greedy, EOS ignored; machine shared with other jobs: compare within a row group")
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for dtype in args.dtypes.split(","):
            torch.set_num_threads(threads)
            workers = [w for w in make_workers(args, model, dtype, threads, work)
                       if w.start(work)]
            bandwidth = measure_read_bandwidth()
            try:
                for batch in [int(b) for b in args.batches.split(",")]:
                    prompts, out_lens = workload(batch, vocab, args.out_len, seed=batch)
                    for w in workers:  # warm-up (kernel builds, graph compiles, caches)
                        w.run(prompts, [min(8, n) for n in out_lens])
                    times: dict[str, list[float]] = {w.label: [] for w in workers}
                    for r in range(args.repeats):
                        for w in workers[r % len(workers):] + workers[:r % len(workers)]:
                            if args.prompt_len is None:
                                res = w.run(prompts, out_lens)
                                times[w.label].append(res["tokens"] / res["seconds"])
                                continue
                            n = args.prompt_len
                            pre = w.run([fresh_prompt(vocab, n, (r, w.label, 0))], [1])
                            res = w.run([fresh_prompt(vocab, n, (r, w.label, 1))], out_lens)
                            decode = res["seconds"] - pre["seconds"]
                            times[w.label].append((res["tokens"] - 1) / max(decode, 1e-9))
                    base = {lbl: statistics.median(v) for lbl, v in times.items()}
                    hf = base.get("HF generate")
                    for w in workers:
                        v = times[w.label]
                        row = dict(threads=threads, dtype=dtype, batch=batch, engine=w.label,
                                   tok_s=base[w.label], min=min(v), max=max(v),
                                   bandwidth_gb_s=bandwidth / 1e9,
                                   prompt_len=args.prompt_len,
                                   roofline=(base[w.label] * w.weight_bytes / bandwidth
                                             if batch == 1 and args.prompt_len is None
                                             else None),
                                   vs_hf=base[w.label] / hf if hf else None)
                        results.append(row)
                        roof = ("     -" if row["roofline"] is None
                                else f"{row['roofline']:6.0%}")
                        rel = f"{row['vs_hf']:5.2f}x" if row["vs_hf"] else "    -"
                        what = (f"decode behind {args.prompt_len}"
                                if args.prompt_len is not None else f"batch={batch:2}")
                        print(f"threads={threads} {dtype:8} {what} {w.label:24} "
                              f"{row['tok_s']:8.1f} tok/s ({min(v):.1f}..{max(v):.1f})  "
                              f"roofline {roof}  vs HF {rel}  bw {bandwidth / 1e9:.1f} GB/s",
                              flush=True)
            finally:
                for w in workers:
                    w.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
