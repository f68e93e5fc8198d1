"""ModelRunner: turns a ScheduledBatch into a ForwardBatch, runs the model, applies the logits
processors and samples or verifies."""

from __future__ import annotations

import torch

from vibekit.config import EngineConfig
from vibekit.core.cache import Cache
from vibekit.core.forward_batch import ForwardBatch, SeqChunk
from vibekit.core.scheduled import ScheduledBatch
from vibekit.logits import LogitsProcessor
from vibekit.ops import sample
from vibekit.runtime.cuda_graph import DecodeGraphRunner
from vibekit.spec import accept_greedy, accept_sampling


class ModelRunner:
    """Runs one step: `execute(batch)` returns, for each of `batch.groups`, the emitted tokens
    (one sampled token, or for a verify block the accepted drafts plus the model's next token).

    processors: logits processors applied in order to the sampling rows (vibekit.logits).
    """

    def __init__(self, model: torch.nn.Module, config: EngineConfig, cache: Cache,
                 processors: list[LogitsProcessor]) -> None:
        self.model = model
        self.config = config
        self.cache = cache
        self.processors = processors
        self.device = torch.device(config.device)
        self.page_size = config.cache.page_size
        self.attention_backend = config.attention_backend
        self.graphs: DecodeGraphRunner | None = None
        # Decode graphs capture the KV tensors only, not recurrent-state slots.
        kv_only = set(cache.forward_args([], self.device)) == {"kv_caches"}
        if self.device.type == "cuda" and config.use_cuda_graphs and kv_only:
            self.graphs = self.make_graph_runner(config.cuda_graph_batch_sizes)

    def make_graph_runner(self, batch_sizes: tuple[int, ...],
                          use_graphs: bool = True) -> DecodeGraphRunner:
        """CUDA graphs for decode batches of these sizes (use_graphs=False: the same static
        buffers replayed eagerly, for tests without CUDA)."""
        kv_caches = self.cache.forward_args([], self.device)["kv_caches"]
        return DecodeGraphRunner(self.model, kv_caches, batch_sizes, device=self.device,
                                 max_model_len=self.config.max_model_len,
                                 page_size=self.page_size,
                                 attention_backend=self.attention_backend,
                                 use_graphs=use_graphs)

    def prepare(self, batch: ScheduledBatch) -> ForwardBatch:
        sample_rows = [0] * len(batch)
        for group in batch.groups:
            sample_rows[group.index] = group.num_rows  # the last own token, then the drafts
            if group.aux_index >= 0:
                sample_rows[group.aux_index] = 1  # a guidance companion's last token
        chunks = []
        for req, n, draft, num_sample in zip(batch.requests, batch.num_new_tokens, batch.drafts,
                                             sample_rows):
            start = req.num_computed_tokens
            chunks.append(SeqChunk(req.token_ids[start:start + n - len(draft)] + draft, start,
                                   self.cache.page_ids(req), num_sample))
        return ForwardBatch.build(chunks, self.page_size, device=self.device,
                                  attention_backend=self.attention_backend,
                                  **self.cache.forward_args(batch.requests, self.device))

    @torch.inference_mode()
    def forward(self, batch: ScheduledBatch) -> torch.Tensor:
        """Run the model on one scheduled batch; logits [S, V] float32 for the sampling rows."""
        return self._forward(batch)

    # NOTE: execute runs these bodies under its own inference_mode: entering one per call
    # costs ~2 us, and a batch-1 step of a small model is ~80 us.
    def _forward(self, batch: ScheduledBatch) -> torch.Tensor:
        fb = self.prepare(batch)
        if self.graphs is not None and self.graphs.can_run(fb):
            return self.graphs.run(fb)
        return self.model(fb.input_ids, fb)

    @torch.inference_mode()
    def sample(self, batch: ScheduledBatch, logits: torch.Tensor) -> list[list[int]]:
        """The emitted tokens of each sampling group (greedy and seeded sampling per request;
        a verify block through accept_greedy / accept_sampling)."""
        return self._sample(batch, logits)

    def _sample(self, batch: ScheduledBatch, logits: torch.Tensor) -> list[list[int]]:
        if not batch.groups:
            return []
        greedy_ids = logits.argmax(dim=-1).tolist()
        emitted: list[list[int]] = []
        plain: list[int] = []  # groups of non-greedy requests without a draft: one batch
        for j, group in enumerate(batch.groups):
            p = group.request.params
            rows = group.rows
            if p.temperature == 0.0:
                emitted.append(accept_greedy(group.draft, greedy_ids[rows.start:rows.stop]))
            elif group.draft:
                emitted.append(accept_sampling(group.draft, logits[rows.start:rows.stop],
                                               p.temperature, p.top_k, p.top_p,
                                               group.request.generator))
            else:
                emitted.append([])
                plain.append(j)
        if plain:
            groups = [batch.groups[j] for j in plain]
            params = [g.request.params for g in groups]
            dev = logits.device
            tokens = sample(
                logits[torch.tensor([g.start for g in groups], device=dev)],
                torch.tensor([p.temperature for p in params], dtype=torch.float32, device=dev),
                torch.tensor([p.top_k for p in params], dtype=torch.int64, device=dev),
                torch.tensor([p.top_p for p in params], dtype=torch.float32, device=dev),
                [g.request.generator for g in groups],
            ).tolist()
            for j, t in zip(plain, tokens):
                emitted[j] = [t]
        return emitted

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> list[list[int]]:
        """Forward, logits processors, sample/verify: the emitted tokens of each sampling
        group, in `batch.groups` order."""
        pending = [p.start(batch) for p in self.processors]  # may work during the forward
        try:
            logits = self._forward(batch)
        except BaseException:
            # NOTE: background work (the grammar mask fill) must be done with the grammar
            # matchers before anyone (the next schedule's propose(), a retried step) touches
            # them again: they are not thread-safe.
            for work in pending:
                wait = getattr(work, "wait", None)
                if wait is not None:
                    wait()
            raise
        for work in pending:
            if work is not None:
                work.apply(logits)  # before greedy, verification and sampling alike
        return self._sample(batch, logits)
