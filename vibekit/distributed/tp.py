"""Tensor parallelism over torch.distributed for the dense (llama-family) models.

Rank 0 is the engine's own process: it runs the scheduler, the cache bookkeeping, the logits
processors and the sampler, and holds shard 0 of the model. `TPModel.start` spawns ranks
1..N-1 (torch.multiprocessing, spawn, loopback rendezvous on a free port); each loads the same
checkpoint, keeps its own shard and its own KV cache shard (the same page ids as rank 0, its own
KV heads). Every step rank 0 sends a small header over a pipe (so an idle engine never trips a
collective timeout), broadcasts the ForwardBatch's host-side inputs, and every rank runs its
shard: q/k/v and gate/up are column-parallel (split by heads / intermediate rows), o_proj and
down_proj row-parallel with an all_reduce, the lm_head split by vocabulary rows with the
logits gathered on rank 0. Embeddings and norms are replicated.

Sharding (N ranks): q heads / N per rank; KV heads / N per rank, or (fewer KV heads than ranks,
N a multiple of them) the one KV head a rank's q heads read, replicated; intermediate / N;
vocabulary padded up to a multiple of N. The shards are numerically the full model's: each
rank's partial o_proj / down_proj sums add up (in a different order) to the full product, so
greedy tokens match TP=1 and logits agree to float rounding.

Backends: gloo on the CPU (tested), NCCL on CUDA with rank r on cuda:r (untested here). Every
collective runs under the process group's timeout. Limits: one tensor-parallel engine per
process at a time (it owns the default process group); workers exit on `close()`, at
interpreter exit, or when the engine process dies.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vibekit.config import ModelConfig
from vibekit.core.forward_batch import ForwardBatch
from vibekit.models.base import CacheSpec
from vibekit.models.layers import Attention, GatedMLP
from vibekit.models.llama import LlamaForCausalLM

_CMD_FORWARD, _CMD_STOP = 0, 1
# Host-side ForwardBatch fields broadcast each step, in this order (all int64 on the wire).
_FIELDS = ("input_ids", "positions", "qo_indptr", "kv_lens", "page_table", "slot_mapping",
           "sample_indices")


# -- validation ----------------------------------------------------------------------------------


def check_tp_size(model: nn.Module, config: ModelConfig, tp: int, device: str) -> None:
    """Raise ValueError naming what is wrong if `model` cannot be split over `tp` ranks."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ValueError(f"tensor_parallel_size must be an integer >= 1, got {tp!r}")
    if tp == 1:
        return
    spec = model.cache_spec() if hasattr(model, "cache_spec") else None
    if spec is not None and spec.state is not None:
        raise ValueError(
            f"tensor_parallel_size={tp}: model_type {config.model_type!r} is a hybrid model "
            "(recurrent-state layers); tensor parallelism supports the dense llama-family "
            "models only (llama, mistral, qwen2, qwen3)")
    if not isinstance(model, LlamaForCausalLM):
        raise ValueError(
            f"tensor_parallel_size={tp}: {type(model).__name__} is not supported; tensor "
            "parallelism supports the dense llama-family models only (llama, mistral, qwen2, "
            "qwen3)")
    hq, hk, inter = config.num_qo_heads, config.num_kv_heads, config.intermediate_size
    if hq % tp:
        raise ValueError(f"tensor_parallel_size={tp} does not divide the model's "
                         f"{hq} attention (q) heads; allowed: a divisor of {hq}")
    if hk % tp and tp % hk:
        raise ValueError(f"tensor_parallel_size={tp} and the model's {hk} KV heads: each must "
                         "divide the other (KV heads are split, or replicated when fewer than "
                         "the ranks)")
    if inter % tp:
        raise ValueError(f"tensor_parallel_size={tp} does not divide the model's "
                         f"intermediate_size {inter}")
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index not in (None, 0):
            raise ValueError(f"tensor parallelism on CUDA puts rank r on cuda:r; pass "
                             f"device='cuda' (or 'cuda:0'), not {device!r}")
        if torch.cuda.device_count() < tp:
            raise ValueError(f"tensor_parallel_size={tp} needs {tp} CUDA devices; "
                             f"{torch.cuda.device_count()} visible")
    elif dev.type != "cpu":
        raise ValueError(f"tensor parallelism runs on 'cpu' (gloo) or 'cuda' (NCCL), "
                         f"not {device!r}")


# -- the sharded layers --------------------------------------------------------------------------


class RowParallelLinear(nn.Module):
    """y = all_reduce(x_shard @ W_shard^T) (+ bias, added once): o_proj and down_proj."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        dist.all_reduce(y)
        return y if self.bias is None else y + self.bias


class VocabParallelHead(nn.Module):
    """Logits of this rank's vocabulary rows, gathered on rank 0 into [S, vocab]; the other
    ranks return their own rows only (nobody reads them)."""

    def __init__(self, weight: torch.Tensor, vocab_size: int, rank: int, world: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [V_pad / N, h]
        self.vocab_size, self.rank, self.world = vocab_size, rank, world

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part = F.linear(x, self.weight).contiguous()  # [S, V_pad / N]
        if self.rank != 0:
            dist.gather(part, None, dst=0)
            return part
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.gather(part, parts, dst=0)
        return torch.cat(parts, dim=-1)[:, :self.vocab_size]


def _rows(w: torch.Tensor, start: int, size: int) -> torch.Tensor:
    return w.narrow(0, start, size).clone()


@torch.no_grad()
def shard_model(model: LlamaForCausalLM, rank: int, world: int) -> LlamaForCausalLM:
    """Cut `model` (full weights, loaded) down to rank `rank`'s shard of `world`, in place."""
    c = model.config
    d, hq, hk = c.head_dim, c.num_qo_heads, c.num_kv_heads
    hq_r, hk_r = hq // world, max(hk // world, 1)
    kv_start = rank * hk_r if hk >= world else rank * hk // world
    for module in list(model.modules()):
        if isinstance(module, Attention):
            q_per_head = 2 * d if module.output_gate else d
            q_rows, kv_rows = module.shard_sizes()[0], module.kv_size
            pieces = [(rank * hq_r * q_per_head, hq_r * q_per_head),
                      (q_rows + kv_start * d, hk_r * d),
                      (q_rows + kv_rows + kv_start * d, hk_r * d)]
            w, b = module.qkv_proj.weight, module.qkv_proj.bias
            qkv = nn.Linear(w.shape[1], sum(n for _, n in pieces), bias=b is not None,
                            device=w.device, dtype=w.dtype).requires_grad_(False)
            qkv.weight.copy_(torch.cat([_rows(w, s, n) for s, n in pieces]))
            if b is not None:
                qkv.bias.copy_(torch.cat([_rows(b, s, n) for s, n in pieces]))
            module.qkv_proj = qkv
            ow, ob = module.o_proj.weight, module.o_proj.bias
            module.o_proj = RowParallelLinear(
                ow[:, rank * hq_r * d:(rank + 1) * hq_r * d].clone(),
                None if ob is None else ob.clone())
            module.num_qo_heads, module.num_kv_heads = hq_r, hk_r
            module.q_size, module.kv_size = hq_r * d, hk_r * d
        elif isinstance(module, GatedMLP):
            inter = module.intermediate_size
            i_r = inter // world
            w, b = module.gate_up_proj.weight, module.gate_up_proj.bias
            pieces = [(rank * i_r, i_r), (inter + rank * i_r, i_r)]
            gu = nn.Linear(w.shape[1], 2 * i_r, bias=b is not None, device=w.device,
                           dtype=w.dtype).requires_grad_(False)
            gu.weight.copy_(torch.cat([_rows(w, s, n) for s, n in pieces]))
            if b is not None:
                gu.bias.copy_(torch.cat([_rows(b, s, n) for s, n in pieces]))
            module.gate_up_proj = gu
            dw, db = module.down_proj.weight, module.down_proj.bias
            module.down_proj = RowParallelLinear(dw[:, rank * i_r:(rank + 1) * i_r].clone(),
                                                 None if db is None else db.clone())
            module.intermediate_size = i_r
    head = model.model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight
    v_r = -(-c.vocab_size // world)
    part = head.new_zeros(v_r, head.shape[1])
    rows = head[rank * v_r:(rank + 1) * v_r]
    part[:rows.shape[0]] = rows
    model.lm_head = VocabParallelHead(part, c.vocab_size, rank, world)
    model.tp_kv_heads = hk_r
    return model


def _local_cache_spec(model: LlamaForCausalLM) -> CacheSpec:
    spec = LlamaForCausalLM.cache_spec(model)
    return CacheSpec(type(spec.kv)(spec.kv.num_layers, model.tp_kv_heads, spec.kv.head_dim))


# -- the wire ------------------------------------------------------------------------------------


def _pack(batch: ForwardBatch) -> tuple[list[int], torch.Tensor]:
    tensors = [getattr(batch, name).reshape(-1).to(torch.int64) for name in _FIELDS]
    sizes = [t.numel() for t in tensors]
    header = sizes + [batch.page_table.shape[1], batch.max_q_len, batch.max_kv_len]
    return header, torch.cat(tensors)


def _unpack(header: list[int], flat: torch.Tensor, kv_caches: list, backend: str) -> ForwardBatch:
    sizes, (pages, max_q, max_kv) = header[:len(_FIELDS)], header[len(_FIELDS):]
    parts = dict(zip(_FIELDS, flat.split(sizes)))
    return ForwardBatch(
        input_ids=parts["input_ids"], positions=parts["positions"],
        qo_indptr=parts["qo_indptr"].to(torch.int32), kv_lens=parts["kv_lens"].to(torch.int32),
        page_table=parts["page_table"].to(torch.int32).view(-1, pages),
        slot_mapping=parts["slot_mapping"], sample_indices=parts["sample_indices"],
        kv_caches=kv_caches, max_q_len=max_q, max_kv_len=max_kv, attention_backend=backend)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_group(rank: int, world: int, port: int, backend: str, timeout_s: float) -> None:
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s))


def _rank_device(device: str, rank: int) -> torch.device:
    return torch.device("cuda", rank) if torch.device(device).type == "cuda" else \
        torch.device("cpu")


# -- the workers (ranks 1..N-1) ------------------------------------------------------------------


def _worker_main(rank: int, world: int, port: int, load: dict[str, Any], conn: Any,
                 timeout_s: float, num_threads: int | None) -> None:
    """One worker rank: load and shard, report, join the group, then follow rank 0's steps."""
    import multiprocessing

    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        from vibekit.models import load_model

        device = _rank_device(load["device"], rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        model, _, _ = load_model(load["source"], dtype=load["dtype"], device=device,
                                 seed=load["seed"])
        model = shard_model(model, rank, world)
        conn.send(("ready", rank))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    _init_group(rank, world, port, backend, timeout_s)
    parent = multiprocessing.parent_process()
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    try:
        with torch.inference_mode():
            while True:
                while not conn.poll(1.0):  # idle: wait without a collective, watch the parent
                    if parent is not None and not parent.is_alive():
                        return
                msg = conn.recv()
                if msg[0] == _CMD_STOP:
                    return
                _, header, cache_shape, dtype, backend_name = msg
                if kv_caches is None:
                    kv_caches = [(torch.zeros(cache_shape, dtype=dtype, device=device),
                                  torch.zeros(cache_shape, dtype=dtype, device=device))
                                 for _ in range(model.config.num_layers)]
                flat = torch.empty(sum(header[:len(_FIELDS)]), dtype=torch.int64, device=device)
                dist.broadcast(flat, src=0)
                model(flat[:header[0]], _unpack(header, flat, kv_caches, backend_name))
    except (EOFError, OSError):
        return  # the engine went away
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Spawned children re-import the parent's __main__ (a user script without an
    `if __name__ == "__main__"` guard would run again, and start engines recursively). The
    workers need nothing from it, so hide it while they are started."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    spec, file = getattr(main, "__spec__", None), getattr(main, "__file__", None)
    main.__spec__ = None
    if file is not None:
        del main.__file__
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


# -- rank 0 --------------------------------------------------------------------------------------


class _Workers:
    """The spawned ranks and their pipes; `stop()` is idempotent and safe at exit."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.group = False
        self.lock = threading.Lock()

    def stop(self, join_s: float = 10.0) -> None:
        with self.lock:
            for conn in self.conns:
                try:
                    conn.send((_CMD_STOP,))
                except (OSError, BrokenPipeError):
                    pass
            deadline = time.monotonic() + join_s
            for p in self.procs:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.terminate()
                    p.join(2.0)
            for conn in self.conns:
                conn.close()
            self.procs, self.conns = [], []
            if self.group and dist.is_initialized():
                dist.destroy_process_group()
            self.group = False


class TPModel(nn.Module):
    """Rank 0's view of a tensor-parallel model; quacks like the model for ModelRunner:
    `forward(input_ids, batch) -> logits [S, V]` (every rank runs its shard in lockstep) and
    `cache_spec()` with the per-rank KV heads. Build it with `TPModel.start`; `close()` stops
    the workers (also at interpreter exit and when this object is collected).
    """

    def __init__(self, shard: LlamaForCausalLM, workers: _Workers, world: int) -> None:
        super().__init__()
        self.shard = shard
        self.config = shard.config
        self.tensor_parallel_size = world
        self._workers = workers
        self._finalizer = weakref.finalize(self, workers.stop)

    @classmethod
    def start(cls, model: LlamaForCausalLM, config: ModelConfig, tp: int, *, source: str,
              dtype: torch.dtype, device: str, seed: int, num_threads: int | None = None,
              timeout_s: float = 120.0) -> TPModel:
        """Shard `model` (rank 0, full weights loaded from `source`) and start ranks 1..tp-1,
        which load `source` themselves. Raises RuntimeError (with the worker's traceback) if
        a rank fails to start, within `timeout_s`; never hangs."""
        check_tp_size(model, config, tp, device)
        if dist.is_available() and dist.is_initialized():
            raise RuntimeError("a torch.distributed process group is already initialized in "
                               "this process (another tensor-parallel engine?); close it first: "
                               "one tensor-parallel engine per process")
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        port = _free_port()
        if num_threads is None and torch.device(device).type == "cpu":
            num_threads = max(1, torch.get_num_threads() // tp)
        load = {"source": os.fspath(source), "dtype": dtype, "device": str(device), "seed": seed}
        workers = _Workers()
        try:
            for rank in range(1, tp):
                parent_conn, child_conn = ctx.Pipe()
                p = ctx.Process(target=_worker_main, daemon=True, name=f"vibekit-tp{rank}",
                                args=(rank, tp, port, load, child_conn, timeout_s, num_threads))
                with _main_hidden():
                    p.start()
                child_conn.close()
                workers.procs.append(p)
                workers.conns.append(parent_conn)
            shard = shard_model(model, 0, tp)
            deadline = time.monotonic() + timeout_s
            for rank, (p, conn) in enumerate(zip(workers.procs, workers.conns), start=1):
                while not conn.poll(0.2):
                    if not p.is_alive():
                        raise RuntimeError(f"tensor-parallel rank {rank} exited during start "
                                           f"(exit code {p.exitcode})")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"tensor-parallel rank {rank} did not start within "
                                           f"{timeout_s:.0f} s")
                try:
                    status, info = conn.recv()
                except EOFError:
                    p.join(5.0)
                    raise RuntimeError(f"tensor-parallel rank {rank} exited during start "
                                       f"(exit code {p.exitcode})") from None
                if status != "ready":
                    raise RuntimeError(f"tensor-parallel rank {rank} failed to start:\n{info}")
            backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
            _init_group(0, tp, port, backend, timeout_s)
            workers.group = True
        except BaseException:
            workers.stop(join_s=2.0)
            raise
        return cls(shard, workers, tp)

    def cache_spec(self) -> CacheSpec:
        return _local_cache_spec(self.shard)

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        if not self._workers.procs:
            raise RuntimeError("this tensor-parallel model is closed")
        header, flat = _pack(batch)
        k0 = batch.kv_caches[0][0]
        msg = (_CMD_FORWARD, header, tuple(k0.shape), k0.dtype, batch.attention_backend)
        try:
            for conn in self._workers.conns:
                conn.send(msg)
            dist.broadcast(flat.to(input_ids.device), src=0)
            return self.shard(input_ids, batch)
        except (OSError, RuntimeError) as e:
            dead = [f"rank {r} (exit code {p.exitcode})"
                    for r, p in enumerate(self._workers.procs, start=1) if not p.is_alive()]
            if dead:
                raise RuntimeError(f"tensor-parallel worker {', '.join(dead)} is gone; this "
                                   "engine cannot step any more (close it and start a new "
                                   "one)") from e
            raise

    def close(self) -> None:
        """Stop the worker ranks and leave the process group (idempotent)."""
        self._finalizer()

    def load_weights(self, weights: Any) -> None:
        # Refused, not missing: each rank already holds its shard, cut at start.
        raise RuntimeError("a tensor-parallel model loads its weights at start "
                           "(TPModel.start); load the full model, then shard it")
