"""MLX versions of the ops the MLX backend needs (vibekit.models.mlx, vibekit.runtime.mlx_runner).

Imported lazily: `import vibekit` or `vibekit.ops` never imports mlx. Each op computes what its
torch `<op>_ref` in vibekit.ops computes (tests/ops/test_mlx_ops.py compares them).
"""

from vibekit.ops.mlx.attention import AttentionPlan, paged_attention_mlx
from vibekit.ops.mlx.rope import rope_fast_mlx, rope_freqs_mlx
from vibekit.ops.mlx.token_bitmask import apply_token_bitmask_mlx

__all__ = ["AttentionPlan", "apply_token_bitmask_mlx", "paged_attention_mlx", "rope_fast_mlx",
           "rope_freqs_mlx"]
