"""Text CFG for LLMs: decode with guided log-probs from a cond and an uncond (negative-prompt)
sequence per request, both in ONE ragged ForwardBatch over the paged KV cache.

    guided = logp_cond + (s - 1) * (logp_cond - logp_uncond)

the formula of "Stay on Topic with Classifier-Free Guidance" (Sanchez et al. 2023) and of HF
transformers' `generate(guidance_scale=..., negative_prompt_ids=...)`. The uncond sequence is the
negative prompt (default: the last prompt token, as in HF) followed by the generated tokens.

The CFG cache works as for images: on a step whose policy skips the uncond branch the last delta
is reused (or guidance dropped past a "drop" gate). The uncond sequence then falls behind; the
next step that runs it feeds all its missing tokens as one chunk (a ragged prefill), so its KV is
always exact when it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from vibekit.cfg.cache import CFGCache
from vibekit.cfg.image import MAX_GUIDANCE_SCALE
from vibekit.cfg.policy import CFGCachePolicy
from vibekit.core.forward_batch import ForwardBatch, SeqChunk
from vibekit.kvcache import KVCacheManager, PageTable


@dataclass
class TextCFGOutput:
    """One request's generated ids; finish_reason "stop" (a stop token, included) or "length"."""

    token_ids: list[int]
    finish_reason: str
    num_uncond_forwards: int


@dataclass(slots=True)
class _Seq:
    table: PageTable
    token_ids: list[int]
    num_computed: int = 0  # tokens whose K/V are in the cache


@dataclass(slots=True)
class _Request:
    cond: _Seq
    uncond: _Seq
    cache: CFGCache
    generator: torch.Generator | None
    output: list[int] = field(default_factory=list)
    finish_reason: str | None = None


class TextCFGGenerator:
    """Classifier-free guided decoding for a vibekit causal LM (`LlamaForCausalLM` & co).

    Owns a small paged KV pool (`num_pages` x `page_size` tokens per layer) and runs its own
    decode loop on the public model / kvcache / ForwardBatch pieces (not the Engine).

    Example::

        model, config, tok = load_model("dummy:tiny-llama", torch.float32, "cpu")
        gen = TextCFGGenerator(model)
        out = gen.generate([tok.encode("Hello")], guidance_scale=1.5,
                           negative_prompts=[tok.encode("Goodbye")], max_tokens=16)
        out[0].token_ids
    """

    def __init__(self, model: torch.nn.Module, *, num_pages: int = 256, page_size: int = 16,
                 attention_backend: str = "auto") -> None:
        self.model = model
        self.page_size = page_size
        self.attention_backend = attention_backend
        self.max_model_len = model.config.max_position_embeddings
        self.vocab_size = model.config.vocab_size
        param = next(model.parameters())
        self.device = param.device
        self.kv_caches = model.cache_spec().kv.allocate(num_pages, page_size, param.dtype,
                                                         self.device)
        self.manager = KVCacheManager(num_pages, page_size, enable_prefix_caching=False)

    # -- checks ---------------------------------------------------------------------------------

    def _check(self, prompts: list[list[int]], negatives: list[list[int]], guidance_scale: float,
               max_tokens: int, policy: CFGCachePolicy) -> None:
        if not prompts:
            raise ValueError("prompts is empty")
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        if not 0.0 <= guidance_scale <= MAX_GUIDANCE_SCALE:
            raise ValueError(f"guidance_scale {guidance_scale} is out of range; allowed "
                             f"[0, {MAX_GUIDANCE_SCALE}] (1 = no guidance)")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        policy.check(max_tokens)
        for name, seqs in (("prompt", prompts), ("negative prompt", negatives)):
            for i, ids in enumerate(seqs):
                if name == "prompt" and not ids:
                    raise ValueError(f"prompt {i} is empty")
                bad = [t for t in ids if not 0 <= t < self.vocab_size]
                if bad:
                    raise ValueError(f"{name} {i} has ids {bad[:5]} outside the vocabulary "
                                     f"[0, {self.vocab_size})")
                if len(ids) + max_tokens > self.max_model_len:
                    raise ValueError(f"{name} {i} has {len(ids)} tokens + max_tokens "
                                     f"{max_tokens}; max_model_len is {self.max_model_len}")
        pages = sum(-(-(len(p) + max_tokens) // self.page_size) for p in prompts + negatives)
        if pages > self.manager.num_free_pages:
            raise ValueError(f"the batch needs up to {pages} KV pages; the pool has "
                             f"{self.manager.num_free_pages} free (raise num_pages)")

    # -- decoding -------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], *, guidance_scale: float = 1.5,
                 negative_prompts: Sequence[Sequence[int]] | None = None, max_tokens: int = 32,
                 policy: CFGCachePolicy | None = None, temperature: float = 0.0, seed: int = 0,
                 stop_token_ids: Sequence[int] = ()) -> list[TextCFGOutput]:
        """Guided decoding of `prompts` (token id lists); one output per prompt.

        negative_prompts: the uncond sequences' starts (None or [] for a request: its last prompt
        token). temperature 0 is greedy; otherwise sampling with a generator seeded `seed + i`.
        """
        policy = policy or CFGCachePolicy()
        prompts = [list(p) for p in prompts]
        negatives = [list(n) if n else [] for n in (negative_prompts or [None] * len(prompts))]
        if len(negatives) == len(prompts):
            negatives = [n or p[-1:] for n, p in zip(negatives, prompts)]
        self._check(prompts, negatives, float(guidance_scale), max_tokens, policy)
        reqs = []
        for i, (prompt, negative) in enumerate(zip(prompts, negatives)):
            gen = None if temperature == 0.0 else torch.Generator().manual_seed(seed + i)
            reqs.append(_Request(
                cond=_Seq(self.manager.new_table(), list(prompt)),
                uncond=_Seq(self.manager.new_table(), negative),
                cache=CFGCache(policy, max_tokens, guidance_scale, batch_size=1),
                generator=gen))
        stop = set(stop_token_ids)
        try:
            for step in range(max_tokens):
                active = [r for r in reqs if r.finish_reason is None]
                if not active:
                    break
                self._step(step, active, temperature, stop, max_tokens)
        finally:
            for r in reqs:
                self.manager.free(r.cond.table)
                self.manager.free(r.uncond.table)
        return [TextCFGOutput(r.output, r.finish_reason or "length", r.cache.num_uncond_rows)
                for r in reqs]

    def _step(self, step: int, active: list[_Request], temperature: float, stop: set[int],
              max_tokens: int) -> None:
        seqs = []
        uncond_rows = []
        for r in active:
            seqs.append(r.cond)
            rows = r.cache.uncond_rows(step)
            uncond_rows.append(rows)
            if rows:
                seqs.append(r.uncond)
        logits = self.model(*self._prepare(seqs))  # [num_seqs, V] float32, the last token of each
        logprobs = torch.log_softmax(logits, dim=-1)
        row = 0
        for r, rows in zip(active, uncond_rows):
            cond = logprobs[row:row + 1]
            uncond = logprobs[row + 1:row + 2] if rows else None
            row += 2 if rows else 1
            guided = r.cache.guide(step, cond, uncond, rows)[0]  # [V]
            if r.generator is None:
                token = int(guided.argmax())
            else:
                probs = torch.softmax(guided / temperature, dim=-1).cpu()
                token = int(torch.multinomial(probs, 1, generator=r.generator))
            r.output.append(token)
            r.cond.token_ids.append(token)
            r.uncond.token_ids.append(token)
            if token in stop:
                r.finish_reason = "stop"
            elif len(r.output) >= max_tokens:
                r.finish_reason = "length"

    def _prepare(self, seqs: list[_Seq]) -> tuple[torch.Tensor, ForwardBatch]:
        """Feed each sequence's not-yet-computed tokens; sample the last row of each."""
        chunks = []
        for seq in seqs:
            start, stop = seq.num_computed, len(seq.token_ids)
            self.manager.allocate(seq.table, stop - seq.table.num_tokens)
            chunks.append(SeqChunk(seq.token_ids[start:stop], start, seq.table.pages, 1))
            seq.num_computed = stop
        batch = ForwardBatch.build(chunks, self.page_size, self.kv_caches, self.device,
                                   self.attention_backend)
        return batch.input_ids, batch
