"""Scaling out: tensor parallelism over torch.distributed (vibekit.distributed.tp)."""

from vibekit.distributed.tp import TPModel, check_tp_size, shard_model

__all__ = ["TPModel", "check_tp_size", "shard_model"]
