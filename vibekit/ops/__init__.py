"""vibekit ops: each op has a plain-torch `<op>_ref` (the spec) and a dispatcher
`<op>(..., backend=)`.

Importing vibekit.ops never imports triton; the Triton kernels in `vibekit.ops.triton` load lazily.
"""

from vibekit.ops.activation import silu_and_mul, silu_and_mul_ref
from vibekit.ops.attention import (
    paged_attention,
    paged_attention_ref,
    paged_decode_attention_ref,
)
from vibekit.ops.conv1d import causal_conv1d, causal_conv1d_ref, causal_conv1d_update_ref
from vibekit.ops.gated_delta import gated_delta_rule, gated_delta_rule_ref, gated_delta_update_ref
from vibekit.ops.kv_append import kv_append, kv_append_ref

# NOTE: the module is vibekit.ops.linear; its dispatcher is vibekit.ops.linear.linear.
from vibekit.ops.linear import cpu_kernel_available, linear_cpu, linear_ref, pack_linear
from vibekit.ops.mamba2_scan import mamba2_scan, mamba2_scan_ref, mamba2_state_update_ref
from vibekit.ops.norm import rms_norm, rms_norm_ref
from vibekit.ops.rope import apply_rope, apply_rope_ref, rope_cos_sin_cache, rope_inv_freq
from vibekit.ops.sampling import sample, sample_ref, sampling_probs
from vibekit.ops.token_bitmask import apply_token_bitmask, apply_token_bitmask_ref

__all__ = [
    "apply_rope", "apply_rope_ref", "apply_token_bitmask", "apply_token_bitmask_ref",
    "causal_conv1d", "causal_conv1d_ref",
    "causal_conv1d_update_ref", "gated_delta_rule", "gated_delta_rule_ref",
    "gated_delta_update_ref", "kv_append", "cpu_kernel_available", "linear_cpu",
    "linear_ref", "pack_linear", "mamba2_scan", "mamba2_scan_ref",
    "mamba2_state_update_ref", "kv_append_ref", "paged_attention",
    "paged_attention_ref", "paged_decode_attention_ref", "rms_norm", "rms_norm_ref",
    "rope_cos_sin_cache", "rope_inv_freq", "sample", "sample_ref", "sampling_probs",
    "silu_and_mul", "silu_and_mul_ref",
]
