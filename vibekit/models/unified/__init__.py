"""A unified text + image model: a causal text prompt (K/V computed once per request) and a grid
of image-latent tokens denoised by flow matching in the same transformer. The MLX version lives
in `vibekit.models.unified.mlx` (imported lazily; needs `mlx`)."""

from vibekit.models.unified.config import UnifiedConfig
from vibekit.models.unified.model import PromptKV, UnifiedFlowModel, timestep_embedding
from vibekit.models.unified.tokenizer import PromptTokenizer

__all__ = ["PromptKV", "PromptTokenizer", "UnifiedConfig", "UnifiedFlowModel",
           "timestep_embedding"]
