"""The llama family (Llama, Mistral, Qwen2, Qwen3) on MLX arrays, loaded from the same HF folders
and dummy specs as the torch models, optionally weight-quantized the way mlx-lm does.

Imported lazily (the model registry skips this package): `import vibekit` never needs mlx.
`Engine.from_pretrained(path, device="mlx")` loads through `load_mlx_model`.
"""

from vibekit.models.mlx.llama import MLXLlamaForCausalLM
from vibekit.models.mlx.loader import QUANTIZATIONS, load_mlx_model, quantize_model

__all__ = ["QUANTIZATIONS", "MLXLlamaForCausalLM", "load_mlx_model", "quantize_model"]
