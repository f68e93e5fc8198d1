"""MLXModelRunner: the ModelRunner of device "mlx". The same scheduled batches, logits processors
and sampler / verifier as the torch runner; the forward runs on MLX arrays (vibekit.models.mlx
over vibekit.kvcache.mlx) and the grammar mask is applied to the MLX logits. When every sampling
request of the step is greedy and no host-side processor needs the logits, the argmax runs on
MLX too and only the token ids cross to the host; otherwise the sampling rows cross as one small
torch tensor for the sampler, the verifier and any processor written for torch (penalties,
guidance, your own). Imported lazily (needs mlx)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import torch

from vibekit.config import EngineConfig
from vibekit.core.scheduled import ScheduledBatch
from vibekit.kvcache.mlx import MLXPagedKVCache
from vibekit.logits import LogitsProcessor
from vibekit.ops.mlx import AttentionPlan
from vibekit.runtime.model_runner import ModelRunner
from vibekit.spec import accept_greedy


class MLXModelRunner(ModelRunner):
    """`execute(batch)` returns the emitted tokens of each sampling group, exactly as
    ModelRunner does; `model` is an MLXLlamaForCausalLM, `cache` an MLXPagedKVCache."""

    def __init__(self, model, config: EngineConfig, cache: MLXPagedKVCache,
                 processors: list[LogitsProcessor]) -> None:
        self.model = model
        self.config = config
        self.cache = cache
        self.processors = processors
        self.device = torch.device("cpu")  # where the sampler runs
        self.page_size = config.cache.page_size
        self.attention_backend = "mlx"
        self.graphs = None

    def forward(self, batch: ScheduledBatch) -> mx.array:  # type: ignore[override]
        """Run the model on one scheduled batch; MLX logits [S, V] float32 of the sampling
        rows, being evaluated (with this step's KV writes) in the background: the logits
        processors finish their host work (the grammar mask fill) meanwhile."""
        sample_rows = [0] * len(batch)
        for group in batch.groups:
            sample_rows[group.index] = group.num_rows  # the last own token, then the drafts
            if group.aux_index >= 0:
                sample_rows[group.aux_index] = 1  # a guidance companion's last token
        input_ids: list[int] = []
        q_lens, kv_lens, tables, sample_indices = [], [], [], []
        for req, n, draft, num_sample in zip(batch.requests, batch.num_new_tokens, batch.drafts,
                                             sample_rows):
            start = req.num_computed_tokens
            input_ids += req.token_ids[start:start + n - len(draft)] + draft
            q_lens.append(n)
            kv_lens.append(start + n)
            tables.append(self.cache.page_ids(req))
            sample_indices += range(len(input_ids) - num_sample, len(input_ids))
        plan = AttentionPlan.build(q_lens, kv_lens, tables, self.page_size)
        logits = self.model(mx.array(np.asarray(input_ids, dtype=np.int32)), plan,
                            mx.array(np.asarray(sample_indices, dtype=np.int32)),
                            self.cache.kv_caches)
        mx.async_eval(logits, *self.cache.arrays())
        return logits

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> list[list[int]]:
        """Forward, logits processors, sample/verify (see ModelRunner.execute)."""
        pending = [p.start(batch) for p in self.processors]  # may work during the forward
        try:
            logits = self.forward(batch)
        except BaseException:
            for work in pending:  # see ModelRunner.execute: finish the background fill first
                wait = getattr(work, "wait", None)
                if wait is not None:
                    wait()
            raise
        host: torch.Tensor | None = None
        for work in pending:
            if work is None:
                continue
            # A processor with an MLX path (the grammar mask) edits the MLX logits while they
            # are still on MLX; any other runs on the host copy, in list order.
            apply_mlx = getattr(work, "apply_mlx", None)
            if host is None and apply_mlx is not None:
                logits = apply_mlx(logits)
                continue
            if host is None:
                host = _to_torch(logits)
            work.apply(host)
        if host is None:
            if all(g.request.params.temperature == 0.0 for g in batch.groups):
                # Greedy rows (decode or verify): argmax on MLX, only [S] ids cross.
                ids = np.array(mx.argmax(logits, axis=-1)).tolist()
                return [accept_greedy(g.draft, ids[g.start:g.start + g.num_rows])
                        for g in batch.groups]
            host = _to_torch(logits)
        return self.sample(batch, host)


def _to_torch(logits: mx.array) -> torch.Tensor:
    """MLX logits [S, V] float32 -> a writable host torch tensor (one copy)."""
    return torch.from_numpy(np.array(logits, copy=True))
