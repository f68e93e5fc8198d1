"""Engine: the public entry point. add_request / step / abort, generate and stream on top."""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from vibekit.config import (
    CacheConfig,
    EngineConfig,
    ModelConfig,
    SchedulerConfig,
    SpecConfig,
    resolve_dtype,
)
from vibekit.errors import InvalidRequestError
from vibekit.grammar import GrammarBackend
from vibekit.grammar.stop_ids import resolve_stop_token_ids
from vibekit.kvcache import KVCacheManager
from vibekit.runtime.detokenizer import IncrementalDetokenizer, find_stop
from vibekit.runtime.model_runner import ModelRunner, kv_bytes_per_page
from vibekit.runtime.outputs import RequestOutput
from vibekit.runtime.request import Request
from vibekit.runtime.sampling_params import SamplingParams
from vibekit.runtime.scheduler import ScheduledBatch, Scheduler
from vibekit.spec import PredictionDrafter
from vibekit.ssm import make_state_manager, state_pool_bytes

_CACHE_OPTIONS = {"page_size", "num_pages", "memory_budget_bytes", "enable_prefix_caching",
                  "snapshot_policy", "snapshot_every_pages", "snapshot_memory_bytes"}
_SCHEDULER_OPTIONS = {"max_num_batched_tokens", "max_num_seqs", "enable_chunked_prefill"}
_ENGINE_OPTIONS = {"max_model_len", "attention_backend", "use_cuda_graphs",
                   "cuda_graph_batch_sizes", "seed", "num_threads", "grammar_backend",
                   "grammar_jump_forward", "grammar_whitespace", "grammar_overlap"}
_SPEC_OPTIONS = {"num_draft_tokens", "adaptive_draft", "max_draft_tokens"}
_DEFAULT_CPU_KV_BUDGET = 2 << 30


class Engine:
    """Continuous-batching LLM engine over a paged KV cache with prefix caching.

    Example:
        engine = Engine.from_pretrained("dummy:tiny-llama")
        out = engine.generate(["Hello"], SamplingParams(max_tokens=16, temperature=0.0))[0]
        out.token_ids, out.text, out.finish_reason, out.usage.cached_prompt_tokens
    """

    def __init__(self, model: torch.nn.Module, config: EngineConfig, tokenizer: Any = None,
                 eos_token_ids: Sequence[int] = ()) -> None:
        self.config = config
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.model_config: ModelConfig = config.model
        self.tokenizer = tokenizer
        self.model = model
        sched = config.scheduler
        if not sched.enable_chunked_prefill and sched.max_num_batched_tokens < config.max_model_len:
            raise ValueError(
                f"with chunked prefill off, max_num_batched_tokens ({sched.max_num_batched_tokens})"
                f" must be >= max_model_len ({config.max_model_len}) so any prompt fits one step"
            )
        self.num_pages = self._num_pages(config, model)
        self.kv = KVCacheManager(self.num_pages, config.cache.page_size,
                                 config.cache.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler, self.kv, config.max_model_len)
        self.runner = ModelRunner(model, config, self.num_pages)
        self.state = make_state_manager(model, config, self.kv)  # hybrid models, else None
        if self.state is not None:
            self.scheduler.state = self.state
            self.runner.attach_state(self.state)
        # One stop set for the engine and its grammars (warns on ordinary-token EOS ids).
        self.eos_token_ids = frozenset(resolve_stop_token_ids(
            tokenizer, [*eos_token_ids, *config.model.eos_token_ids]))
        # Structured output: compiles nothing (nor imports xgrammar) until a request asks.
        self.grammars = GrammarBackend(tokenizer, config.model.vocab_size,
                                       sorted(self.eos_token_ids), backend=config.grammar_backend,
                                       whitespace=config.grammar_whitespace,
                                       jump_forward=config.grammar_jump_forward)
        self.runner.grammar_masker.overlap = {"auto": None, "always": True,
                                              "never": False}[config.grammar_overlap]
        self.spec_options = dict(num_draft_tokens=config.spec.num_draft_tokens,
                                 adaptive=config.spec.adaptive_draft,
                                 max_draft_tokens=config.spec.max_draft_tokens)
        self.requests: dict[str, Request] = {}
        self._ids = itertools.count()
        self._arrivals = itertools.count()
        self._rng = random.Random(config.seed)
        self.num_generated_tokens = 0
        self.num_steps = 0

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, dtype: str | torch.dtype = "float32",
                        device: str = "cpu", **options: Any) -> Engine:
        """Load an HF checkpoint folder, "dummy:<preset>" or "dummy:/path/config.json", or
        "zoo:<name>", and build an engine.

        Options: max_model_len, page_size, num_pages, memory_budget_bytes (KV cache),
        enable_prefix_caching, max_num_batched_tokens, max_num_seqs, enable_chunked_prefill,
        attention_backend ("auto", "torch", "triton", "ref"), use_cuda_graphs,
        cuda_graph_batch_sizes, seed, num_threads (CPU, process-wide); structured output:
        grammar_backend ("auto", "llguidance", "xgrammar"; see vibekit.grammar.backend),
        grammar_jump_forward, grammar_whitespace ("compact", "free"; defaults for requests that
        do not say), grammar_overlap ("auto", "always", "never": fill masks during the
        forward); predicted outputs:
        num_draft_tokens, adaptive_draft, max_draft_tokens.
        """
        from vibekit.models import load_model

        allowed = _CACHE_OPTIONS | _SCHEDULER_OPTIONS | _ENGINE_OPTIONS | _SPEC_OPTIONS
        unknown = set(options) - allowed
        if unknown:
            raise TypeError(f"unknown engine options {sorted(unknown)}; allowed: {sorted(allowed)}")
        torch_dtype = resolve_dtype(dtype)
        seed = options.get("seed", 0)
        model, model_config, tokenizer = load_model(source, dtype=torch_dtype, device=device,
                                                    seed=seed)
        max_model_len = options.get("max_model_len") or min(
            model_config.max_position_embeddings, 4096
        )
        config = EngineConfig(
            model=model_config,
            cache=CacheConfig(**{k: options[k] for k in _CACHE_OPTIONS if k in options}),
            scheduler=SchedulerConfig(**{k: options[k] for k in _SCHEDULER_OPTIONS
                                         if k in options}),
            spec=SpecConfig(**{k: options[k] for k in _SPEC_OPTIONS if k in options}),
            dtype=torch_dtype,
            device=str(device),
            max_model_len=max_model_len,
            **{k: options[k] for k in _ENGINE_OPTIONS - {"max_model_len"} if k in options},
        )
        return cls(model, config, tokenizer, _generation_eos_ids(source))

    @staticmethod
    def _num_pages(config: EngineConfig, model: torch.nn.Module) -> int:
        spec = model.kv_cache_spec()
        ps = config.cache.page_size
        per_page = kv_bytes_per_page(spec.num_layers, spec.num_kv_heads, spec.head_dim, ps,
                                     config.dtype)
        pages_per_seq = -(-config.max_model_len // ps)
        if config.cache.num_pages is not None:
            num_pages = config.cache.num_pages
        elif config.cache.memory_budget_bytes is not None:
            reserved = state_pool_bytes(model, config)  # hybrid: recurrent-state slots first
            num_pages = (config.cache.memory_budget_bytes - reserved) // per_page
            if reserved and num_pages < pages_per_seq:
                raise ValueError(
                    f"memory_budget_bytes ({config.cache.memory_budget_bytes}) cannot hold one "
                    f"request: the recurrent state of max_num_seqs="
                    f"{config.scheduler.max_num_seqs} sequences takes {reserved} bytes and a "
                    f"max_model_len sequence needs {pages_per_seq} KV pages of {per_page} bytes; "
                    "raise memory_budget_bytes or lower max_num_seqs / max_model_len"
                )
        elif config.device.startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(config.device))
            num_pages = int(free * 0.6) // per_page
        else:
            wanted = config.scheduler.max_num_seqs * pages_per_seq
            num_pages = min(wanted, max(_DEFAULT_CPU_KV_BUDGET // per_page, pages_per_seq))
        if num_pages < 1:
            raise ValueError(
                f"the KV cache budget holds no page ({per_page} bytes per page of {ps} tokens); "
                f"raise memory_budget_bytes or num_pages"
            )
        return num_pages

    # -- requests -----------------------------------------------------------------------------

    def _encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError(
                    "prompt is a string but this model has no tokenizer; pass token ids instead"
                )
            return list(self.tokenizer(prompt)["input_ids"])
        if isinstance(prompt, torch.Tensor):
            prompt = prompt.flatten().tolist()
        if not isinstance(prompt, (list, tuple)) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            raise InvalidRequestError("prompt must be a string or a list of integer token ids")
        return list(prompt)

    def add_request(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                    request_id: str | None = None,
                    prediction: str | Sequence[int] | None = None) -> str:
        """Validate and queue one request; returns its id. Raises InvalidRequestError (a
        ValueError) naming what was wrong before anything is queued.

        prediction: the expected output (text or token ids), e.g. the file being edited. It is
        verified in blocks against the model and never changes the output, only the speed;
        usage reports accepted_prediction_tokens / rejected_prediction_tokens.
        params.response_format: structured output (shapes: vibekit.grammar.parse_response_format);
        the grammar is compiled here, so a bad schema, regex or grammar raises right away.
        """
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError(f"params must be SamplingParams, got {type(params).__name__}")
        ids = self._encode(prompt)
        vocab = self.model_config.vocab_size
        max_len = self.config.max_model_len
        if not ids:
            raise InvalidRequestError("prompt is empty; it must have at least one token")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(
                f"prompt has token ids outside the vocabulary [0, {vocab}): {bad[:8]}"
            )
        if len(ids) >= max_len:
            raise InvalidRequestError(
                f"prompt has {len(ids)} tokens; max_model_len is {max_len} and at least one "
                f"token must be generated, so prompts may have at most {max_len - 1} tokens"
            )
        if params.stop_token_ids and any(t >= vocab for t in params.stop_token_ids):
            raise InvalidRequestError(f"stop_token_ids must be < vocab_size {vocab}")
        if params.stop_strings and self.tokenizer is None:
            raise InvalidRequestError("stop strings need a tokenizer; this model has none")
        grammar = self.grammars.request_grammar(params.response_format)  # None: plain text
        total = min(len(ids) + params.max_tokens, max_len)
        pages = -(-total // self.config.cache.page_size)
        if pages > self.num_pages:
            raise InvalidRequestError(
                f"request needs {pages} KV pages ({total} tokens) but the pool has "
                f"{self.num_pages}; lower max_tokens or enlarge the KV cache"
            )
        prediction_ids = self._encode_prediction(prediction, len(ids))
        if request_id is None:
            request_id = f"req-{next(self._ids)}"
        elif request_id in self.requests:
            raise InvalidRequestError(f"request_id {request_id!r} is already in use")
        generator = None
        if params.temperature > 0:
            seed = params.seed if params.seed is not None else self._rng.getrandbits(63)
            generator = torch.Generator(device=self.config.device).manual_seed(seed)
        req = Request(request_id=request_id, prompt_token_ids=ids, params=params,
                      generator=generator, arrival_index=next(self._arrivals),
                      page_table=self.kv.new_table())
        req.max_len = total
        req.stop_ids = frozenset(params.stop_token_ids or ())
        if prediction_ids:
            req.drafter = PredictionDrafter(prediction_ids, **self.spec_options)
        req.grammar = grammar
        if self.tokenizer is not None:
            req.detokenizer = IncrementalDetokenizer(self.tokenizer, ids)
        self.requests[request_id] = req
        self.scheduler.add(req)
        return request_id

    def _encode_prediction(self, prediction: str | Sequence[int] | None,
                           prompt_len: int) -> list[int]:
        if prediction is None:
            return []
        if isinstance(prediction, str):
            if self.tokenizer is None:
                raise InvalidRequestError(
                    "prediction is a string but this model has no tokenizer; pass token ids"
                )
            ids = list(self.tokenizer(prediction, add_special_tokens=False)["input_ids"])
        elif isinstance(prediction, (list, tuple)) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prediction
        ):
            ids = list(prediction)
            vocab = self.model_config.vocab_size
            if any(not 0 <= t < vocab for t in ids):
                raise InvalidRequestError(
                    f"prediction has token ids outside the vocabulary [0, {vocab})"
                )
        else:
            raise InvalidRequestError(
                f"prediction must be a string or a list of token ids, got "
                f"{type(prediction).__name__}"
            )
        room = self.config.max_model_len - prompt_len
        if len(ids) > room:
            raise InvalidRequestError(
                f"prediction has {len(ids)} tokens but the context leaves room for {room} "
                f"(max_model_len {self.config.max_model_len} - prompt {prompt_len})"
            )
        return ids

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its pages; returns its final output (None if unknown)."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        if not req.finished:
            self.scheduler.finish(req, "abort")
        return self._output(req, final=True)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- the step -----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one batch; returns an output for every request that produced a token (or
        finished) in this step. Finished requests are forgotten after being returned."""
        sched = self.scheduler.schedule()
        if not sched.requests:
            return []
        if self.state is not None:
            self.state.before_forward(sched)  # snapshot states that verify a draft block
        emitted = self.runner.execute(sched)
        self.num_steps += 1
        return self._commit(sched, emitted)

    def _commit(self, sched: ScheduledBatch, emitted: list[list[int]]) -> list[RequestOutput]:
        outputs = []
        it = iter(emitted)
        for req, n, samples, draft in zip(sched.requests, sched.num_new_tokens, sched.samples,
                                          sched.drafts):
            reason = None
            if samples:
                tokens = next(it)
                num_accepted = len(tokens) - 1
                num_rejected = len(draft) - num_accepted
                num_dropped = num_rejected
                if num_rejected and self.state is not None:
                    # Recurrent state cannot be trimmed: back to the block start; the accepted
                    # tokens are recomputed next step.
                    self.state.rollback(req)
                    num_dropped = n
                if num_dropped:
                    self.kv.trim(req.page_table, num_dropped)  # KV of rejected draft positions
                req.num_computed_tokens += n - num_dropped
                if req.drafter is not None:
                    req.drafter.update(draft, num_accepted, tokens)
                    req.num_accepted_prediction_tokens += num_accepted
                    req.num_rejected_prediction_tokens += num_rejected
                for token in tokens:
                    reason = self._append_token(req, token)
                    if reason is not None:
                        break
            else:
                req.num_computed_tokens += n
            # A stop inside an accepted block leaves fewer tokens than were computed.
            self.kv.commit(req.page_table, req.token_ids,
                           min(req.num_computed_tokens, len(req.token_ids)),
                           req.extra.get("cache_key"))
            if self.state is not None:
                self.state.after_commit(req)  # snapshot at planned page boundaries
            if reason is not None:
                self.scheduler.finish(req, reason)
            if samples:
                outputs.append(self._output(req, final=req.finished))
                if req.finished:
                    self.requests.pop(req.request_id, None)
        return outputs

    def _append_token(self, req: Request, token: int) -> str | None:
        """Append one emitted token; returns the finish reason it causes, if any."""
        req.token_ids.append(token)
        self.num_generated_tokens += 1
        params = req.params
        reason = None
        if (token in self.eos_token_ids and not params.ignore_eos) or token in req.stop_ids:
            reason = "stop"
        elif req.grammar is not None and req.grammar.advance(token):
            reason = "stop"  # the grammar accepted its stop token (ends even with ignore_eos)
        if req.detokenizer is not None:
            start = len(req.text)
            req.text += req.detokenizer.step(req.token_ids)
            if params.stop_strings and reason is None:
                cut = find_stop(req.text, params.stop_strings, start)
                if cut != -1:
                    req.text = req.text[:cut]
                    reason = "stop"
        if reason is None and (req.num_output_tokens >= params.max_tokens
                               or len(req.token_ids) >= req.max_len):
            reason = "length"
        return reason

    def _output(self, req: Request, final: bool) -> RequestOutput:
        out_ids = req.output_token_ids
        delta_ids = out_ids[req.num_emitted_tokens:]
        req.num_emitted_tokens = len(out_ids)
        visible = len(req.text)
        if not final and req.params.stop_strings:
            # Hold back text that may still become the start of a stop string.
            visible -= max(len(s) for s in req.params.stop_strings) - 1
        visible = max(visible, req.num_emitted_chars)
        delta_text = req.text[req.num_emitted_chars:visible]
        req.num_emitted_chars = visible
        return RequestOutput(
            request_id=req.request_id, prompt_token_ids=req.prompt_token_ids,
            token_ids=list(out_ids), text=req.text, finish_reason=req.finish_reason,
            usage=req.usage(), delta_token_ids=delta_ids, delta_text=delta_text,
        )

    # -- conveniences -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str | Sequence[int]] | str,
                 params: SamplingParams | Sequence[SamplingParams] | None = None,
                 predictions: Sequence[Any] | None = None) -> list[RequestOutput]:
        """Run prompts to completion with continuous batching; outputs in prompt order.

        prompts: a list of strings or of token-id lists (a single string is accepted too).
        params: one SamplingParams for all, or one per prompt.
        predictions: optional predicted output per prompt (text, token ids or None).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if predictions is None:
            predictions = [None] * len(prompts)
        if len(predictions) != len(prompts):
            raise InvalidRequestError(
                f"got {len(predictions)} predictions for {len(prompts)} prompts; pass one each"
            )
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise InvalidRequestError(
                f"got {len(params)} SamplingParams for {len(prompts)} prompts; pass one or one each"
            )
        ids: list[str] = []
        try:
            for prompt, p, pred in zip(prompts, params, predictions):
                ids.append(self.add_request(prompt, p, prediction=pred))
        except Exception:
            for rid in ids:
                self.abort(rid)
            raise
        final: dict[str, RequestOutput] = {}
        wanted = set(ids)
        while len(final) < len(ids):
            for out in self.step():
                if out.request_id in wanted and out.finished:
                    final[out.request_id] = out
        return [final[rid] for rid in ids]

    def stream(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
               prediction: str | Sequence[int] | None = None) -> Iterator[RequestOutput]:
        """Yield this request's output after every step that advances it (use delta_text /
        delta_token_ids); the last one has finish_reason set. Other queued requests advance too."""
        rid = self.add_request(prompt, params, prediction=prediction)
        try:
            while True:
                for out in self.step():
                    if out.request_id == rid:
                        yield out
                        if out.finished:
                            return
        finally:
            if rid in self.requests:
                self.abort(rid)

    def stats(self) -> dict[str, float]:
        """Queue depth, KV usage and prefix-cache hit rate, for logs and /metrics."""
        stats = {
            "num_running": self.scheduler.num_running,
            "num_waiting": self.scheduler.num_waiting,
            "kv_usage": self.kv.usage(),
            "num_pages": self.num_pages,
            "prefix_hit_rate": self.kv.stats.hit_rate,
            "num_preemptions": self.scheduler.num_preemptions,
            "num_generated_tokens": self.num_generated_tokens,
            "num_steps": self.num_steps,
        }
        if self.state is not None:
            stats.update(self.state.stats())  # hybrid prefix cache: hits, snapshot memory
        return stats


def _generation_eos_ids(source: str | os.PathLike) -> list[int]:
    """EOS ids from generation_config.json, which HF generate honours too."""
    path = Path(os.fspath(source)) / "generation_config.json"  # "dummy:..." has none
    if not path.is_file():
        return []
    eos = json.loads(path.read_text()).get("eos_token_id")
    if eos is None:
        return []
    return list(eos) if isinstance(eos, list) else [eos]
