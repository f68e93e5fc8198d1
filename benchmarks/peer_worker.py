"""One engine, loaded once, serving timed generation jobs for bench_peers.py over stdin/stdout.

Runs under the engine's own interpreter (the main environment for vibekit and HF, a peer's venv
for llama.cpp and vLLM), so it imports nothing from this repository except for vibekit itself.

    python peer_worker.py ENGINE MODEL DTYPE THREADS [OPTIONS_JSON]
    stdin : one JSON job per line {"prompts": [[ids]], "out_lens": [n], "predictions": [[ids]]
            (optional: vibekit's predicted outputs), "all": false}
    stdout: one JSON line per job {"seconds": s, "tokens": n, "first": [ids of request 0]}
            (with "all": true also "outputs": every request's ids)

Greedy decoding, EOS ignored, every request generates exactly its out_len tokens. The timed
region is the whole batch: prefill of the prompts and decode.

Speculation, as each engine offers it (OPTIONS_JSON): vibekit takes the job's predictions (the
file being edited) and any engine option (num_draft_tokens, ...); HF {"prompt_lookup_num_tokens":
k}; vLLM {"speculative_config": {"method": "ngram", ...}}; llama.cpp {"prompt_lookup": k}
(llama-cpp-python's LlamaPromptLookupDecoding draft model through its `generate`).
"""

from __future__ import annotations

import json
import os
import sys
import time

# The longest prompt + output a job may bring (bench_peers.py --prompt-len raises it).
MAX_MODEL_LEN = int(os.environ.get("PEER_MAX_MODEL_LEN", "1024"))


def vibekit_engine(model: str, dtype: str, threads: int, options: dict):
    from vibekit import Engine, SamplingParams

    engine = Engine.from_pretrained(model, dtype=dtype, num_threads=threads,
                                    max_model_len=MAX_MODEL_LEN, **options)

    def run(prompts, out_lens, predictions=None):
        params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
                  for n in out_lens]
        outs = engine.generate(prompts, params, predictions=predictions)
        return [o.token_ids for o in outs]

    return run


def hf_engine(model: str, dtype: str, threads: int, options: dict):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).eval()

    lookup = options.get("prompt_lookup_num_tokens")

    @torch.inference_mode()
    def run(prompts, out_lens, predictions=None):
        if lookup:  # prompt lookup decoding runs one sequence at a time
            out = []
            for p, n in zip(prompts, out_lens):
                ids = torch.tensor([p])
                gen = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=0, prompt_lookup_num_tokens=lookup)
                out.append(gen[0, len(p):].tolist())
            return out
        # As a user batches HF generate: left-padded, max_new_tokens = the longest request.
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        n = max(out_lens)
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n,
                          min_new_tokens=n, do_sample=False, pad_token_id=0)
        return [out[i, width:width + m].tolist() for i, m in enumerate(out_lens)]

    return run


def llamacpp_engine(model: str, dtype: str, threads: int, options: dict):
    import llama_cpp

    if options.get("prompt_lookup"):
        return llamacpp_lookup_engine(model, threads, options)

    llm = llama_cpp.Llama(model_path=model, n_ctx=options.get("n_ctx", max(4096, MAX_MODEL_LEN)),
                          n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                          logits_all=False,
                          verbose=bool(os.environ.get("PEER_VERBOSE")))
    # A second context with room for 16 sequences (Llama() makes a one-sequence context).
    from llama_cpp import _internals

    params = llm.context_params
    params.n_seq_max, params.kv_unified = options.get("n_seq_max", 16), True
    context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    ctx, vocab = context.ctx, llama_cpp.llama_model_get_vocab(llm._model.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    import numpy as np

    def decode(batch, entries):
        """entries: (token, pos, seq, want_logits). Returns logits rows of the wanted entries."""
        batch.n_tokens = len(entries)
        for i, (tok, pos, seq, want) in enumerate(entries):
            batch.token[i], batch.pos[i] = tok, pos
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, seq
            batch.logits[i] = want
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def run(prompts, out_lens, predictions=None, keep=(llm, context)):  # NOTE: keeps contexts alive
        # Continuous batching over llama.cpp's C API (one sequence id per request), as its
        # server does: prefill each prompt, then one llama_decode per step for all live ones.
        mem = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_clear(mem, True)
        batch = llama_cpp.llama_batch_init(max(512, sum(len(p) for p in prompts)), 0,
                                           len(prompts))
        try:
            out = [[] for _ in prompts]
            for s, p in enumerate(prompts):
                entries = [(t, i, s, i == len(p) - 1) for i, t in enumerate(p)]
                for i in range(0, len(entries), 512):  # at most n_batch tokens per decode
                    decode(batch, entries[i:i + 512])
                row = llama_cpp.llama_get_logits_ith(ctx, -1)
                out[s].append(int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,)))))
            while True:
                live = [s for s in range(len(prompts)) if len(out[s]) < out_lens[s]]
                if not live:
                    break
                decode(batch, [(out[s][-1], len(prompts[s]) + len(out[s]) - 1, s, True)
                               for s in live])
                for i, s in enumerate(live):
                    row = llama_cpp.llama_get_logits_ith(ctx, i)
                    out[s].append(int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,)))))
            return out
        finally:
            llama_cpp.llama_batch_free(batch)

    return run


def llamacpp_lookup_engine(model: str, threads: int, options: dict):
    """llama-cpp-python's high-level `generate` with its prompt-lookup draft model, one request
    at a time (as its speculative path runs), greedy (temp 0, no penalties)."""
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    llm = llama_cpp.Llama(model_path=model, n_ctx=options.get("n_ctx", 4096), n_batch=512,
                          n_threads=threads, n_threads_batch=threads,
                          draft_model=LlamaPromptLookupDecoding(
                              num_pred_tokens=options["prompt_lookup"]),
                          verbose=bool(os.environ.get("PEER_VERBOSE")))

    def run(prompts, out_lens, predictions=None):
        out = []
        for p, n in zip(prompts, out_lens):
            toks: list[int] = []
            for tok in llm.generate(p, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                                    repeat_penalty=1.0, reset=True):
                toks.append(int(tok))
                if len(toks) == n:
                    break
            out.append(toks)
        return out

    return run


def vllm_engine(model: str, dtype: str, threads: int, options: dict):
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0" if threads == 1 else f"0-{threads - 1}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM, SamplingParams, TokensPrompt

    llm = LLM(model=model, dtype=dtype, max_model_len=MAX_MODEL_LEN, enforce_eager=False,
              skip_tokenizer_init=True, **options)

    def run(prompts, out_lens, predictions=None):
        params = [SamplingParams(max_tokens=n, min_tokens=n, temperature=0.0, ignore_eos=True,
                                 detokenize=False) for n in out_lens]
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                            use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    return run


ENGINES = {"vibekit": vibekit_engine, "hf": hf_engine, "llamacpp": llamacpp_engine,
           "vllm": vllm_engine}


def main() -> None:
    # The protocol owns the real stdout; anything else written to fd 1 (vLLM logs to stdout,
    # native libraries print) goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    name, model, dtype, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    options = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    run = ENGINES[name](model, dtype, threads, options)
    print(json.dumps({"ready": True}), file=proto, flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        t0 = time.perf_counter()
        outs = run(job["prompts"], job["out_lens"], job.get("predictions"))
        seconds = time.perf_counter() - t0
        assert [len(o) for o in outs] == job["out_lens"], ([len(o) for o in outs], job["out_lens"])
        reply = {"seconds": seconds, "tokens": sum(len(o) for o in outs), "first": outs[0][:16]}
        if job.get("all"):
            reply["outputs"] = outs
        print(json.dumps(reply), file=proto, flush=True)


if __name__ == "__main__":
    main()
