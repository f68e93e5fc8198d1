"""Write new K/V into the paged cache."""

from __future__ import annotations

import torch


def kv_append_ref(
    k: torch.Tensor, v: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
) -> None:
    """Reference implementation of KV append: scatter new tokens' K/V into their page slots.

    k, v: [T, Hk, D]; k_cache, v_cache: [num_pages, page_size, Hk, D];
    slot_mapping: [T] int64, flat slot page_id * page_size + offset. Negative slots are skipped
    (padding). Writes in place.
    """
    num_pages, page_size, hk, d = k_cache.shape
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(num_pages * page_size, hk, d)[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(num_pages * page_size, hk, d)[slots] = v[keep].to(v_cache.dtype)


def kv_append(
    k: torch.Tensor, v: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
    backend: str = "auto",
) -> None:
    """Scatter k, v [T, Hk, D] into k_cache, v_cache [num_pages, page_size, Hk, D] at
    slot_mapping [T].

    Backends: "ref"/"torch" (index_put), "triton" (CUDA), "auto" (triton on CUDA when installed).
    """
    if backend == "auto":
        backend = "triton" if k.is_cuda and _has_triton() else "torch"
    if backend in ("ref", "torch"):
        kv_append_ref(k, v, k_cache, v_cache, slot_mapping)
    elif backend == "triton":
        from vibekit.ops.triton.kv_append import kv_append_triton

        kv_append_triton(k, v, k_cache, v_cache, slot_mapping)
    else:
        raise ValueError(
            f"unknown backend {backend!r} for kv_append; allowed: auto, ref, torch, triton"
        )


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
