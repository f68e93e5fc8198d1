"""CUDA graphs for decode steps: capture the model once per batch size, replay with new metadata."""

from __future__ import annotations

import torch
from torch import nn

from vibekit.core.forward_batch import ForwardBatch


class DecodeGraphRunner:
    """Captures `model(input_ids, batch)` for pure-decode batches of the given sizes.

    All metadata lives in static buffers sized for the largest batch and the longest sequence
    (max_model_len); a smaller batch is padded up to the next captured size with rows that write
    nowhere (slot -1) and read one token of page 0. The decode attention kernel loops to each
    sequence's own kv_len read from memory, so one graph serves every sequence length.
    """

    def __init__(self, model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 batch_sizes: tuple[int, ...], *, device: torch.device, max_model_len: int,
                 page_size: int, attention_backend: str, use_graphs: bool = True) -> None:
        """use_graphs=False replays by running the model eagerly on the static buffers (with the
        given attention backend): the padding and buffer logic, testable without CUDA."""
        self.model = model
        self.kv_caches = kv_caches
        self.device = device
        self.max_model_len = max_model_len
        self.max_pages_per_seq = -(-max_model_len // page_size)
        self.use_graphs = use_graphs
        self.backend = "triton" if use_graphs else attention_backend
        self.enabled = _graph_safe_backend(attention_backend) or not use_graphs
        self.batch_sizes = sorted(set(batch_sizes))
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        if self.enabled:
            self._allocate()
            if use_graphs:
                self._capture()

    def _allocate(self) -> None:
        dev = self.device
        max_bs = self.batch_sizes[-1]
        max_pages = self.max_pages_per_seq
        self.input_ids = torch.zeros(max_bs, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(max_bs, dtype=torch.int64, device=dev)
        self.qo_indptr = torch.arange(max_bs + 1, dtype=torch.int32, device=dev)
        self.kv_lens = torch.ones(max_bs, dtype=torch.int32, device=dev)
        self.page_table = torch.zeros(max_bs, max_pages, dtype=torch.int32, device=dev)
        self.slot_mapping = torch.full((max_bs,), -1, dtype=torch.int64, device=dev)
        self.sample_indices = torch.arange(max_bs, dtype=torch.int64, device=dev)

    def _capture(self) -> None:
        pool = None
        model = self.model
        for bs in reversed(self.batch_sizes):
            batch = self._static_batch(bs)
            with torch.inference_mode():
                model(batch.input_ids, batch)  # warm up (autotuning, lazy init) outside the graph
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.outputs[bs] = model(batch.input_ids, batch)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize()

    def _static_batch(self, bs: int) -> ForwardBatch:
        return ForwardBatch(
            input_ids=self.input_ids[:bs], positions=self.positions[:bs],
            qo_indptr=self.qo_indptr[:bs + 1], kv_lens=self.kv_lens[:bs],
            page_table=self.page_table[:bs], slot_mapping=self.slot_mapping[:bs],
            sample_indices=self.sample_indices[:bs], kv_caches=self.kv_caches,
            max_q_len=1, max_kv_len=self.max_model_len,
            attention_backend=self.backend,
        )

    def can_run(self, batch: ForwardBatch) -> bool:
        return (
            self.enabled
            and batch.is_decode
            and batch.num_seqs <= self.batch_sizes[-1]
            and batch.sample_indices.shape[0] == batch.num_seqs
        )

    def run(self, batch: ForwardBatch) -> torch.Tensor:
        n = batch.num_seqs
        bs = next(s for s in self.batch_sizes if s >= n)
        width = batch.page_table.shape[1]
        self.input_ids[:n].copy_(batch.input_ids)
        self.positions[:n].copy_(batch.positions)
        self.kv_lens[:n].copy_(batch.kv_lens)
        self.page_table[:n].zero_()
        self.page_table[:n, :width].copy_(batch.page_table)
        self.slot_mapping[:n].copy_(batch.slot_mapping)
        if bs > n:  # padding rows: read one token of page 0, write nothing
            self.input_ids[n:bs].zero_()
            self.positions[n:bs].zero_()
            self.kv_lens[n:bs].fill_(1)
            self.page_table[n:bs].zero_()
            self.slot_mapping[n:bs].fill_(-1)
        if not self.use_graphs:
            batch = self._static_batch(bs)
            return self.model(batch.input_ids, batch)[:n]
        self.graphs[bs].replay()
        return self.outputs[bs][:n]


def _graph_safe_backend(backend: str) -> bool:
    if backend not in ("auto", "triton"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
