"""Model files on vibekit ops and the paged KV cache, HF checkpoint loading, and dummy models."""

from vibekit.kvcache.spec import KVCacheSpec
from vibekit.models.bamba import BambaForCausalLM
from vibekit.models.base import CacheSpec, CausalLM
from vibekit.models.dummy import DUMMY_PRESETS, dummy_weights, save_dummy_checkpoint
from vibekit.models.hybrid_config import HybridConfig
from vibekit.models.llama import LlamaForCausalLM
from vibekit.models.loader import load_model
from vibekit.models.qwen3_5 import Qwen3_5ForCausalLM
from vibekit.models.registry import MODEL_CLASSES, build_model
from vibekit.models.tokenizer import byte_level_tokenizer

__all__ = [
    "DUMMY_PRESETS", "MODEL_CLASSES", "BambaForCausalLM", "CacheSpec", "CausalLM", "HybridConfig",
    "KVCacheSpec", "LlamaForCausalLM", "Qwen3_5ForCausalLM",
    "build_model", "byte_level_tokenizer", "dummy_weights", "load_model", "save_dummy_checkpoint",
]
