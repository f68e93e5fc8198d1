"""Tiny random HF hybrid checkpoints (Bamba, Qwen3.5) and a hand-rolled hybrid batch builder."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, BambaConfig, Qwen3_5TextConfig

from tests.models.paged_batch import PagedKV
from vibekit.core.forward_batch import ForwardBatch

FAMILIES = {
    # layers: mamba, attention, mamba; 2 groups of 4 heads of 8 dims, state 16; chunk 8 so a
    # 20-token prompt crosses chunk boundaries
    "bamba": lambda: BambaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, attn_layer_indices=[1],
        mamba_n_heads=8, mamba_d_head=8, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4,
        mamba_expand=2, mamba_chunk_size=8, max_position_embeddings=512, rms_norm_eps=1e-5,
        tie_word_embeddings=False, pad_token_id=None, bos_token_id=None, eos_token_id=None,
    ),
    # layers: delta, delta, attention, delta
    "qwen3_5": lambda: Qwen3_5TextConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, linear_conv_kernel_dim=4,
        linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
        linear_num_value_heads=4, full_attention_interval=3, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=None, bos_token_id=None,
        eos_token_id=None,
    ),
}


def make_hybrid_checkpoint(path: Path, family: str, seed: int = 0, **overrides):
    """Save a tiny HF hybrid model with O(1) random weights; returns the HF model (fp32, eval)."""
    config = FAMILIES[family]()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("A_log", "dt_bias", "D")):
                continue  # keep the families' own init: stable decays
            if "norm.weight" in name:
                param.copy_((0.0 if family == "qwen3_5" and "linear_attn.norm" not in name
                             else 1.0) + 0.2 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.normal_(0, 0.2)
            elif "embed_tokens" in name:
                param.normal_(0, 1.0)
            elif param.dim() >= 2:
                fan_in = param.shape[1] * (param.shape[2] if param.dim() == 3 else 1)
                param.normal_(0, 1.5 / math.sqrt(fan_in))
    model.save_pretrained(path)
    return model


class HybridBatches(PagedKV):
    """PagedKV plus one recurrent-state slot per sequence id (fresh slots start at zero)."""

    def __init__(self, model, dtype: torch.dtype, num_slots: int = 8, **kwargs) -> None:
        super().__init__(model.cache_spec().kv, dtype, **kwargs)
        spec = model.cache_spec().state
        self.state_caches = [
            (torch.zeros(num_slots, *spec.conv_shape, dtype=dtype),
             torch.zeros(num_slots, *spec.ssm_shape, dtype=spec.ssm_dtype))
            for _ in range(spec.num_layers)
        ]

    def batch(self, new_tokens: dict[int, list[int]], sample: str = "all") -> ForwardBatch:
        batch = super().batch(new_tokens, sample)
        batch.state_caches = self.state_caches
        batch.state_slots = torch.tensor(list(new_tokens), dtype=torch.int64)
        return batch


def hybrid_logits(model, prompts: dict[int, list[int]], chunks: int = 1,
                  dtype=torch.float32) -> dict[int, torch.Tensor]:
    """Logits of every position of each prompt, prefilled in `chunks` ragged steps."""
    kv = HybridBatches(model, dtype, num_pages=64, page_size=4)
    out: dict[int, list[torch.Tensor]] = {s: [] for s in prompts}
    with torch.inference_mode():
        for c in range(chunks):
            step = {}
            for s, p in prompts.items():
                size = -(-len(p) // chunks)
                if p[c * size:(c + 1) * size]:
                    step[s] = p[c * size:(c + 1) * size]
            batch = kv.batch(step)
            logits = model(batch.input_ids, batch)
            row = 0
            for s, toks in step.items():
                out[s].append(logits[row:row + len(toks)])
                row += len(toks)
    return {s: torch.cat(v) for s, v in out.items()}
