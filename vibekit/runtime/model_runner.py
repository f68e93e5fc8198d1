"""ModelRunner: owns the KV cache tensors, turns a ScheduledBatch into a ForwardBatch, runs the
model and samples."""

from __future__ import annotations

import torch

from vibekit.config import EngineConfig
from vibekit.grammar.masker import GrammarMasker
from vibekit.ops import sample
from vibekit.runtime.cuda_graph import DecodeGraphRunner
from vibekit.runtime.forward_batch import ForwardBatch
from vibekit.runtime.scheduler import ScheduledBatch
from vibekit.spec import accept_greedy, accept_sampling
from vibekit.ssm import HybridStateManager


def kv_bytes_per_page(num_layers: int, num_kv_heads: int, head_dim: int, page_size: int,
                      dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * num_layers * page_size * num_kv_heads * head_dim * elem


class ModelRunner:
    def __init__(self, model: torch.nn.Module, config: EngineConfig, num_pages: int) -> None:
        self.model = model
        self.config = config
        self.device = torch.device(config.device)
        self.page_size = config.cache.page_size
        self.max_pages_per_seq = -(-config.max_model_len // self.page_size)
        spec = model.kv_cache_spec()
        shape = (num_pages, self.page_size, spec.num_kv_heads, spec.head_dim)
        self.kv_caches = [
            (torch.zeros(shape, dtype=config.dtype, device=self.device),
             torch.zeros(shape, dtype=config.dtype, device=self.device))
            for _ in range(spec.num_layers)
        ]
        self.attention_backend = config.attention_backend
        self.graphs: DecodeGraphRunner | None = None
        self.state: HybridStateManager | None = None  # hybrid models: see attach_state
        self.grammar_masker = GrammarMasker(config.model.vocab_size, self.device)
        is_hybrid = hasattr(model, "state_spec")  # decode graphs do not capture state slots
        if self.device.type == "cuda" and config.use_cuda_graphs and not is_hybrid:
            self.graphs = DecodeGraphRunner(self, config.cuda_graph_batch_sizes)

    def attach_state(self, state: HybridStateManager) -> None:
        """Hybrid models: every batch carries the recurrent-state caches and slots. The decode
        CUDA graphs do not capture state slots, so they are turned off."""
        self.state = state
        self.graphs = None

    # -- batch metadata -----------------------------------------------------------------------

    def prepare(self, sched: ScheduledBatch) -> ForwardBatch:
        """Build the step's ForwardBatch on the host, then move it to the device in one go."""
        ps = self.page_size
        input_ids: list[int] = []
        positions: list[int] = []
        qo_indptr = [0]
        kv_lens: list[int] = []
        sample_indices: list[int] = []
        max_pages = 1
        for req, n, samples, draft in zip(sched.requests, sched.num_new_tokens, sched.samples,
                                          sched.drafts):
            start = req.num_computed_tokens
            input_ids += req.token_ids[start:start + n - len(draft)]
            input_ids += draft
            positions += range(start, start + n)
            qo_indptr.append(qo_indptr[-1] + n)
            kv_lens.append(start + n)
            if samples:  # the last own token, then one row per draft token
                sample_indices += range(qo_indptr[-1] - 1 - len(draft), qo_indptr[-1])
            max_pages = max(max_pages, len(req.page_table.pages))
        page_table = torch.zeros(len(sched.requests), max_pages, dtype=torch.int32)
        for b, req in enumerate(sched.requests):
            pages = req.page_table.pages
            page_table[b, :len(pages)] = torch.tensor(pages, dtype=torch.int32)
        pos_t = torch.tensor(positions, dtype=torch.int64)
        qo_t = torch.tensor(qo_indptr, dtype=torch.int32)
        seq_of_token = torch.repeat_interleave(
            torch.arange(len(sched.requests)), torch.tensor(sched.num_new_tokens)
        )
        slot_mapping = page_table[seq_of_token, pos_t // ps].long() * ps + pos_t % ps
        dev = self.device
        state_slots = state_caches = None
        if self.state is not None:
            state_slots = self.state.slots(sched.requests, dev)
            state_caches = self.state.pool.caches
        return ForwardBatch(
            input_ids=torch.tensor(input_ids, dtype=torch.int64).to(dev, non_blocking=True),
            positions=pos_t.to(dev, non_blocking=True),
            qo_indptr=qo_t.to(dev, non_blocking=True),
            kv_lens=torch.tensor(kv_lens, dtype=torch.int32).to(dev, non_blocking=True),
            page_table=page_table.to(dev, non_blocking=True),
            slot_mapping=slot_mapping.to(dev, non_blocking=True),
            sample_indices=torch.tensor(sample_indices, dtype=torch.int64).to(
                dev, non_blocking=True),
            kv_caches=self.kv_caches,
            max_q_len=max(sched.num_new_tokens),
            max_kv_len=max(kv_lens),
            attention_backend=self.attention_backend,
            state_slots=state_slots,
            state_caches=state_caches,
        )

    def copy_pages(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate KV pages before a sequence appends into a shared page."""
        if not copies:
            return
        src = torch.tensor([s for s, _ in copies], device=self.device)
        dst = torch.tensor([d for _, d in copies], device=self.device)
        for k_cache, v_cache in self.kv_caches:
            k_cache[dst] = k_cache[src]
            v_cache[dst] = v_cache[src]

    # -- execution ----------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, sched: ScheduledBatch) -> torch.Tensor:
        """Run the model on one scheduled batch; logits [S, V] float32 for the sampling rows."""
        self.copy_pages(sched.page_copies)
        batch = self.prepare(sched)
        if self.graphs is not None and self.graphs.can_run(batch):
            return self.graphs.run(batch)
        return self.model(batch.input_ids, batch)

    @torch.inference_mode()
    def sample(self, sched: ScheduledBatch, logits: torch.Tensor) -> list[list[int]]:
        """The emitted tokens of each sampling request: one sampled token, or for a verify block
        the accepted draft tokens plus the model's next token."""
        reqs = [(r, d) for r, s, d in zip(sched.requests, sched.samples, sched.drafts) if s]
        if not reqs:
            return []
        greedy_ids = logits.argmax(dim=-1).tolist()
        emitted: list[list[int]] = []
        plain_rows: list[int] = []  # rows of non-greedy requests without a draft: one batch
        row = 0
        for req, draft in reqs:
            n = len(draft) + 1
            if req.params.temperature == 0.0:
                emitted.append(accept_greedy(draft, greedy_ids[row:row + n]))
            elif draft:
                p = req.params
                emitted.append(accept_sampling(draft, logits[row:row + n], p.temperature,
                                               p.top_k, p.top_p, req.generator))
            else:
                emitted.append([])
                plain_rows.append(row)
            row += n
        if plain_rows:
            idx = [i for i, e in enumerate(emitted) if not e]
            rs = [reqs[i][0] for i in idx]
            dev = logits.device
            tokens = sample(
                logits[torch.tensor(plain_rows, device=dev)],
                torch.tensor([r.params.temperature for r in rs], dtype=torch.float32, device=dev),
                torch.tensor([r.params.top_k for r in rs], dtype=torch.int64, device=dev),
                torch.tensor([r.params.top_p for r in rs], dtype=torch.float32, device=dev),
                [r.generator for r in rs],
            ).tolist()
            for i, t in zip(idx, tokens):
                emitted[i] = [t]
        return emitted

    def execute(self, sched: ScheduledBatch) -> list[list[int]]:
        """Forward + sample/verify: the emitted tokens of each request whose `samples` is set."""
        masks = self.grammar_masker.start(sched)  # may fill on a thread during the forward
        try:
            logits = self.forward(sched)
        except BaseException:
            # NOTE: the fill thread must be done with the grammar matchers before anyone (the
            # next schedule's propose(), a retried step) touches them again: they are not
            # thread-safe.
            if masks is not None and masks.future is not None:
                masks.future.exception()  # waits; its own failure is secondary here
            raise
        if masks is not None:
            masks.apply(logits)  # before greedy, verification and sampling alike
        return self.sample(sched, logits)
