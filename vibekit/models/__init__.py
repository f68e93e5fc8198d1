"""Model files on vibekit ops and the model's caches, HF checkpoint loading, and dummy models.

Each family is one file (llama.py, bamba.py, qwen3_5.py) that declares the model_types it
implements and maps their HF config; `registry` finds them on first use."""

from vibekit.kvcache.spec import KVCacheSpec
from vibekit.models.base import CacheSpec, CausalLM
from vibekit.models.dummy import DUMMY_PRESETS, dummy_weights, save_dummy_checkpoint
from vibekit.models.hybrid_config import HybridConfig
from vibekit.models.loader import load_model
from vibekit.models.registry import build_model, config_from_hf, model_types
from vibekit.models.tokenizer import byte_level_tokenizer

__all__ = [
    "DUMMY_PRESETS", "CacheSpec", "CausalLM", "HybridConfig", "KVCacheSpec", "build_model",
    "byte_level_tokenizer", "config_from_hf", "dummy_weights", "load_model", "model_types",
    "save_dummy_checkpoint",
]
