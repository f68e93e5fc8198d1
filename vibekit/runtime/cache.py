"""make_cache: the one cache object of an engine, sized from the model's CacheSpec and the
engine config."""

from __future__ import annotations

import torch

from vibekit.config import EngineConfig
from vibekit.core.cache import Cache
from vibekit.kvcache import PagedKVCache
from vibekit.models.base import CacheSpec
from vibekit.ssm import HybridCache, SnapshotPolicy

_DEFAULT_CPU_KV_BUDGET = 2 << 30
_DEFAULT_SNAPSHOT_POLICY = "last_page,divergence"


def make_cache(spec: CacheSpec, config: EngineConfig) -> Cache:
    """PagedKVCache for a dense model, HybridCache when the model has recurrent layers. Refuses
    settings the model's caches cannot honour, naming why."""
    cache = config.cache
    if spec.state is None:
        if (cache.snapshot_every_pages or cache.snapshot_memory_bytes is not None
                or cache.snapshot_policy != _DEFAULT_SNAPSHOT_POLICY):
            raise ValueError(
                "snapshot_policy / snapshot_every_pages / snapshot_memory_bytes configure "
                "recurrent-state snapshots, but this model has no recurrent layers (its KV cache "
                "is trimmed and shared by pages alone); drop these options"
            )
    policy = SnapshotPolicy.parse(cache.snapshot_policy, cache.snapshot_every_pages)
    if spec.state is not None and policy.enabled and not config.scheduler.enable_chunked_prefill \
            and (policy.divergence or policy.every_n_pages):
        raise ValueError(
            "snapshot_policy 'divergence' and snapshot_every_pages stop a prompt's prefill at "
            "page boundaries inside it to snapshot the recurrent state, which needs chunked "
            "prefill; enable_chunked_prefill=True, or snapshot_policy='last_page' / 'none'"
        )
    if config.device == "mlx":
        if spec.state is not None:
            raise ValueError("device 'mlx' serves dense models only (no recurrent-state cache)")
        from vibekit.kvcache.mlx import MLXPagedKVCache

        return MLXPagedKVCache(spec.kv, num_pages(spec, config), cache.page_size,
                               cache.enable_prefix_caching, config.dtype)
    kv = PagedKVCache(spec.kv, num_pages(spec, config), cache.page_size,
                      cache.enable_prefix_caching, config.dtype, config.device)
    if spec.state is None:
        return kv
    return HybridCache.create(kv, spec.state, config.scheduler.max_num_seqs, config.dtype,
                              policy, cache.snapshot_memory_bytes)


def num_pages(spec: CacheSpec, config: EngineConfig) -> int:
    """KV pages: `num_pages`, or what `memory_budget_bytes` holds after the recurrent-state
    slots, or 60% of free GPU memory, or on CPU enough for max_num_seqs full-length sequences
    (capped at 2 GiB)."""
    ps = config.cache.page_size
    per_page = spec.kv.bytes_per_page(ps, config.dtype)
    pages_per_seq = -(-config.max_model_len // ps)
    if config.cache.num_pages is not None:
        n = config.cache.num_pages
    elif config.cache.memory_budget_bytes is not None:
        reserved = 0
        if spec.state is not None:  # hybrid: recurrent-state slots first
            reserved = spec.state.bytes_per_slot(config.dtype) * config.scheduler.max_num_seqs
        n = (config.cache.memory_budget_bytes - reserved) // per_page
        if reserved and n < pages_per_seq:
            raise ValueError(
                f"memory_budget_bytes ({config.cache.memory_budget_bytes}) cannot hold one "
                f"request: the recurrent state of max_num_seqs={config.scheduler.max_num_seqs} "
                f"sequences takes {reserved} bytes and a max_model_len sequence needs "
                f"{pages_per_seq} KV pages of {per_page} bytes; raise memory_budget_bytes or "
                "lower max_num_seqs / max_model_len"
            )
    elif config.device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(config.device))
        n = int(free * 0.6) // per_page
    else:
        wanted = config.scheduler.max_num_seqs * pages_per_seq
        n = min(wanted, max(_DEFAULT_CPU_KV_BUDGET // per_page, pages_per_seq))
    if n < 1:
        raise ValueError(
            f"the KV cache budget holds no page ({per_page} bytes per page of {ps} tokens); "
            "raise memory_budget_bytes or num_pages"
        )
    return n
