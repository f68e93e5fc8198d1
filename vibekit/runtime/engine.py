"""Engine: the public entry point. add_request / step / abort, generate and stream on top.

One step: Scheduler.schedule -> ModelRunner.execute (forward, logits processors, sample or
verify) -> Scheduler.postprocess (commit, roll back rejected drafts, finish) with the
OutputProcessor deciding stops and text -> RequestOutputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from vibekit.cfg.guidance import GuidanceProcessor
from vibekit.config import (
    CacheConfig,
    EngineConfig,
    SchedulerConfig,
    SpecConfig,
    resolve_dtype,
)
from vibekit.core.outputs import RequestOutput
from vibekit.core.request import Request
from vibekit.core.sampling_params import SamplingParams
from vibekit.errors import InvalidRequestError
from vibekit.grammar import GrammarBackend, GrammarMasker
from vibekit.grammar.stop_ids import resolve_stop_token_ids
from vibekit.kvcache import PagedKVCache
from vibekit.logits import LogitsProcessor, PenaltiesProcessor
from vibekit.models.linear import pack_linears
from vibekit.runtime.cache import make_cache
from vibekit.runtime.input_processor import InputProcessor
from vibekit.runtime.invariant import invariant_config
from vibekit.runtime.model_runner import ModelRunner
from vibekit.runtime.output_processor import OutputProcessor
from vibekit.runtime.scheduler import Scheduler

# from_pretrained options: every field of these configs, by name.
_SUB_CONFIGS = {"cache": CacheConfig, "scheduler": SchedulerConfig, "spec": SpecConfig}
_ENGINE_FIELDS = {f.name for f in dataclasses.fields(EngineConfig)} - set(_SUB_CONFIGS) - {
    "model", "dtype", "device"}


def engine_options() -> dict[str, set[str]]:
    """Option names Engine.from_pretrained accepts, grouped by the config they set."""
    groups = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in
              _SUB_CONFIGS.items()}
    groups["engine"] = set(_ENGINE_FIELDS)
    return groups


class Engine:
    """Continuous-batching LLM engine over the model's caches (paged KV with prefix caching;
    recurrent-state slots for hybrid models).

    Example:
        engine = Engine.from_pretrained("dummy:tiny-llama")
        out = engine.generate(["Hello"], SamplingParams(max_tokens=16, temperature=0.0))[0]
        out.token_ids, out.text, out.finish_reason, out.usage.cached_prompt_tokens
    """

    def __init__(self, model: torch.nn.Module, config: EngineConfig, tokenizer: Any = None,
                 eos_token_ids: Sequence[int] = ()) -> None:
        config = invariant_config(config, model)  # batch_invariant=True: the invariant kernels
        self.config = config
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.model_config = config.model
        self.tokenizer = tokenizer
        # Prepack the projections for the CPU kernel (or keep nn.Linear); once per model. An MLX
        # model (device "mlx") keeps its own (possibly quantized) mlx.nn layers.
        mlx = config.device == "mlx"
        self.linear_backend = "mlx" if mlx else pack_linears(model, config.linear_backend,
                                                             config.quantization)
        self.model = model
        sched = config.scheduler
        if not sched.enable_chunked_prefill and sched.max_num_batched_tokens < config.max_model_len:
            raise ValueError(
                f"with chunked prefill off, max_num_batched_tokens ({sched.max_num_batched_tokens})"
                f" must be >= max_model_len ({config.max_model_len}) so any prompt fits one step"
            )
        self.cache = make_cache(model.cache_spec(), config)
        self.num_pages = self.cache.num_pages
        self.scheduler = Scheduler(config.scheduler, self.cache)
        # One stop set for the engine and its grammars (warns on ordinary-token EOS ids).
        self.eos_token_ids = frozenset(resolve_stop_token_ids(
            tokenizer, [*eos_token_ids, *config.model.eos_token_ids]))
        # Structured output: compiles nothing (nor imports a grammar library) until asked.
        self.grammars = GrammarBackend(tokenizer, config.model.vocab_size,
                                       sorted(self.eos_token_ids), backend=config.grammar_backend,
                                       whitespace=config.grammar_whitespace,
                                       jump_forward=config.grammar_jump_forward)
        overlap = {"auto": None, "always": True, "never": False}[config.grammar_overlap]
        self.grammar_masker = GrammarMasker(config.model.vocab_size,
                                            torch.device(config.host_device),
                                            overlap=overlap)
        # The logits processors, in order: guidance, grammar mask, penalties and biases.
        runner_cls = ModelRunner
        if mlx:
            from vibekit.runtime.mlx_runner import MLXModelRunner as runner_cls
        self.runner = runner_cls(model, config, self.cache,
                                 [GuidanceProcessor(), self.grammar_masker, PenaltiesProcessor()])
        self.inputs = InputProcessor(config, tokenizer, self.num_pages, self.grammars,
                                     supports_guidance=isinstance(self.cache, PagedKVCache))
        self.outputs = OutputProcessor(tokenizer, self.eos_token_ids)
        self.requests: dict[str, Request] = {}
        self._ids = itertools.count()
        self._arrivals = itertools.count()
        self.num_steps = 0

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, dtype: str | torch.dtype = "float32",
                        device: str = "cpu", **options: Any) -> Engine:
        """Load an HF checkpoint folder, "dummy:<preset>" or "dummy:/path/config.json", or
        "zoo:<name>", and build an engine.

        Options (any field of CacheConfig, SchedulerConfig, SpecConfig or EngineConfig):
        max_model_len, page_size, num_pages, memory_budget_bytes (KV cache),
        enable_prefix_caching, max_num_batched_tokens, max_num_seqs, enable_chunked_prefill,
        attention_backend ("auto", "cpu", "torch", "triton", "ref"), use_cuda_graphs,
        cuda_graph_batch_sizes, seed, num_threads (CPU, process-wide), linear_backend
        ("auto", "cpu", "torch"), quantization (None, "int8", "w8a8"; on device "mlx": None,
        "mlx-q4", "mlx-q8"); structured output:
        grammar_backend ("auto", "llguidance", "xgrammar"; see vibekit.grammar.backend),
        grammar_jump_forward, grammar_whitespace ("compact", "free"; defaults for requests that
        do not say), grammar_overlap ("auto", "always", "never": fill masks during the
        forward); predicted outputs: num_draft_tokens, adaptive_draft, max_draft_tokens,
        enable_predictions; hybrid models: snapshot_policy, snapshot_every_pages,
        snapshot_memory_bytes; tensor_parallel_size (dense llama-family models: shard over N
        ranks, vibekit.distributed.tp); batch_invariant (CPU: bit-identical rows whatever the
        batch, verify block, prefill chunking or prefix hit; vibekit.runtime.invariant).
        """
        from vibekit.models import load_model

        groups = engine_options()
        allowed = set().union(*groups.values())
        unknown = set(options) - allowed
        if unknown:
            raise TypeError(f"unknown engine options {sorted(unknown)}; allowed: {sorted(allowed)}")
        torch_dtype = resolve_dtype(dtype)
        if device == "mlx":  # the llama family on MLX arrays (vibekit.models.mlx)
            from vibekit.models.mlx import load_mlx_model

            model, model_config, tokenizer = load_mlx_model(
                source, torch_dtype, seed=options.get("seed", 0),
                quantization=options.get("quantization"))
        else:
            model, model_config, tokenizer = load_model(source, dtype=torch_dtype, device=device,
                                                        seed=options.get("seed", 0))
        engine_kw = {k: options[k] for k in groups["engine"] if k in options}
        engine_kw["max_model_len"] = options.get("max_model_len") or min(
            model_config.max_position_embeddings, 4096)
        config = EngineConfig(
            model=model_config, dtype=torch_dtype, device=str(device), **engine_kw,
            **{name: cls_(**{k: options[k] for k in groups[name] if k in options})
               for name, cls_ in _SUB_CONFIGS.items()},
        )
        if config.tensor_parallel_size > 1:
            from vibekit.distributed.tp import TPModel

            # Decode graphs would capture the collectives: eager steps under TP.
            config = dataclasses.replace(config, use_cuda_graphs=False)
            model = TPModel.start(model, model_config, config.tensor_parallel_size,
                                  source=os.fspath(source), dtype=torch_dtype, device=str(device),
                                  seed=config.seed, num_threads=config.num_threads)
        return cls(model, config, tokenizer, _generation_eos_ids(source))

    # -- requests -----------------------------------------------------------------------------

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
        if request_id is not None and request_id in self.requests:
            raise InvalidRequestError(f"request_id {request_id!r} is already in use")
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        req = self.inputs.make_request(rid, next(self._arrivals), prompt, params, prediction)
        self.requests[rid] = req
        self.outputs.add(req)
        self.scheduler.add(req)
        return rid

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its cache entries; returns its final output (None if
        unknown)."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        if not req.finished:
            self.scheduler.finish(req, "abort")
        return self.outputs.make_output(req, final=True)

    def add_logits_processor(self, processor: LogitsProcessor) -> None:
        """Append a processor (vibekit.logits.LogitsProcessor) after the built-in ones (guidance,
        grammar mask, penalties); it sees every step's sampling rows before the sampler."""
        self.runner.processors.append(processor)

    def close(self) -> None:
        """Release what outlives the engine object: a tensor-parallel model's worker ranks
        (a no-op otherwise; also done at interpreter exit)."""
        close = getattr(self.model, "close", None)
        if callable(close):
            close()

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- the step -----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one batch; returns an output for every request that produced a token (or
        finished) in this step. Finished requests are forgotten after being returned."""
        batch = self.scheduler.schedule()
        if not batch.requests:
            return []
        try:
            emitted = self.runner.execute(batch)
        except Exception:
            # NOTE: a step that raises gives back what it reserved (or, where a cache cannot
            # undo a half-run forward, requeues the request for recompute), so a retried step
            # computes exactly what this one would have.
            self.scheduler.undo(batch)
            raise
        self.num_steps += 1
        outputs = []
        for req in self.scheduler.postprocess(batch, emitted, self.outputs.append_token):
            outputs.append(self.outputs.make_output(req, final=req.finished))
            if req.finished:
                self.requests.pop(req.request_id, None)
        return outputs

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

    @property
    def num_generated_tokens(self) -> int:
        return self.outputs.num_generated_tokens

    def stats(self) -> dict[str, float]:
        """Queue depth, cache usage and prefix-cache hit rates, for logs and /metrics."""
        return {
            "num_running": self.scheduler.num_running,
            "num_waiting": self.scheduler.num_waiting,
            **self.cache.stats(),
            "num_preemptions": self.scheduler.num_preemptions,
            "num_generated_tokens": self.num_generated_tokens,
            "num_steps": self.num_steps,
        }


def _generation_eos_ids(source: str | os.PathLike) -> list[int]:
    """EOS ids from generation_config.json, which HF generate honours too."""
    from vibekit.models.loader import generation_config

    eos = generation_config(source).get("eos_token_id")
    if eos is None:
        return []
    return list(eos) if isinstance(eos, list) else [eos]
