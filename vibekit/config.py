"""Frozen configuration objects: model shape, KV cache, scheduler, engine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

LINEAR_BACKENDS = ("auto", "cpu", "torch")  # see vibekit/models/linear.py

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a dtype name ("float32", "bfloat16", "float16") or a torch dtype to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; allowed: float32, bfloat16, float16"
        ) from None


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder-only transformer. Each model family maps its HF config.json onto
    it in its own file (`config_from_hf` in vibekit/models/<family>.py, found through
    vibekit.models.registry); `hf_common_fields` maps the fields every family shares."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_qo_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # The HF `rope_parameters` / `rope_scaling` dict without rope_theta, or None for plain RoPE.
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on q/k/v projections (qwen2: True)
    o_proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # RMSNorm on q and k per head before RoPE (qwen3)
    hidden_act: str = "silu"
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_qo_heads", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_qo_heads % self.num_kv_heads:
            raise ValueError(
                f"num_qo_heads ({self.num_qo_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.hidden_act not in ("silu", "swish"):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; only silu")
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))
            if rope_type not in ("default", "llama3", "linear"):
                raise ValueError(
                    f"rope_type {rope_type!r} is not supported; supported: default, llama3, linear"
                )

    @property
    def rope_type(self) -> str:
        if not self.rope_scaling:
            return "default"
        return self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_qo_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attn += q + 2 * kv
        if self.qk_norm:
            attn += 2 * self.head_dim
        mlp = 3 * h * i
        layer = attn + mlp + 2 * h
        emb = v * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + emb + h


def hf_common_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The ModelConfig fields every family reads the same way from an HF config.json dict:
    sizes, heads, RoPE (rope_parameters / rope_scaling, rope_theta), norms, embeddings tying,
    special token ids. A family's `config_from_hf` adds or overrides its own."""
    num_qo_heads = hf["num_attention_heads"]
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3" and "original_max_position_embeddings" not in rope:
        # HF falls back to the top-level field, then to max_position_embeddings (not 8192).
        rope["original_max_position_embeddings"] = hf.get(
            "original_max_position_embeddings", hf.get("max_position_embeddings", 2048))
    eos = hf.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None
                                                                 else ())
    return dict(
        model_type=hf.get("model_type"),
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_qo_heads=num_qo_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_qo_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_qo_heads,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        rope_scaling=None if rope_type == "default" else rope,
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        hidden_act=hf.get("hidden_act", "silu"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=eos_ids,
        pad_token_id=hf.get("pad_token_id"),
    )


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV cache: `num_pages` pages of `page_size` tokens each, per layer.

    `num_pages=None` sizes the pool from `memory_budget_bytes` (or, if that is None too, from
    `max_num_seqs * max_model_len` tokens, enough that preemption never happens).
    """

    page_size: int = 16
    num_pages: int | None = None
    memory_budget_bytes: int | None = None
    enable_prefix_caching: bool = True
    # Hybrid models only (recurrent-state layers, see vibekit.ssm): where prompts snapshot their
    # state for prefix reuse ("last_page", "divergence", or "none"; comma-separated), every N
    # pages too when snapshot_every_pages > 0, and the snapshots' memory budget (None: 512 MiB).
    snapshot_policy: str = "last_page,divergence"
    snapshot_every_pages: int = 0
    snapshot_memory_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.page_size <= 0:
            raise ValueError(f"page_size must be positive, got {self.page_size}")
        if self.num_pages is not None and self.num_pages <= 0:
            raise ValueError(f"num_pages must be positive, got {self.num_pages}")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes <= 0:
            raise ValueError(
                f"memory_budget_bytes must be positive, got {self.memory_budget_bytes}"
            )
        points = {p.strip() for p in self.snapshot_policy.split(",") if p.strip()}
        if not points or points - {"last_page", "divergence", "none"}:
            raise ValueError(f"snapshot_policy {self.snapshot_policy!r} must list last_page, "
                             "divergence (comma-separated) or be 'none'")
        if self.snapshot_every_pages < 0:
            raise ValueError(f"snapshot_every_pages must be >= 0, got {self.snapshot_every_pages}")
        if self.snapshot_memory_bytes is not None and self.snapshot_memory_bytes < 0:
            raise ValueError(f"snapshot_memory_bytes must be >= 0, got "
                             f"{self.snapshot_memory_bytes}")


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching limits.

    max_num_batched_tokens: token budget of one step (prefill chunks + decodes).
    max_num_seqs: most sequences running at once.
    enable_chunked_prefill: split prompts longer than the remaining budget across steps.
    """

    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 64
    enable_chunked_prefill: bool = True

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens <= 0:
            raise ValueError(
                f"max_num_batched_tokens must be positive, got {self.max_num_batched_tokens}"
            )
        if self.max_num_seqs <= 0:
            raise ValueError(f"max_num_seqs must be positive, got {self.max_num_seqs}")


@dataclass(frozen=True)
class SpecConfig:
    """Predicted outputs: draft block length (fixed, or adaptive between 4 and max_draft_tokens).
    enable_predictions=False ignores every request's prediction (plain decoding, the same
    output: a baseline for measuring what predictions gain)."""

    num_draft_tokens: int = 16
    adaptive_draft: bool = True
    max_draft_tokens: int = 64
    enable_predictions: bool = True

    def __post_init__(self) -> None:
        if self.num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {self.num_draft_tokens}")
        if self.max_draft_tokens < self.num_draft_tokens:
            raise ValueError(
                f"max_draft_tokens ({self.max_draft_tokens}) must be >= num_draft_tokens "
                f"({self.num_draft_tokens})"
            )


@dataclass(frozen=True)
class EngineConfig:
    """Everything an Engine needs besides weights."""

    model: ModelConfig
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    spec: SpecConfig = field(default_factory=SpecConfig)
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    max_model_len: int = 2048
    attention_backend: str = "auto"  # "auto" | "cpu" | "torch" | "triton" | "ref"
    use_cuda_graphs: bool = True
    cuda_graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    seed: int = 0
    # CPU: torch intra-op threads (process-wide; None leaves torch's setting). On a shared or
    # small machine, fewer threads than cores avoids OpenMP oversubscription stalls.
    num_threads: int | None = None
    # Linear layers: "auto" (the prepacked CPU kernel where it builds, else torch),
    # "cpu" (that kernel, or an error), "torch" (nn.Linear); quantization None, "int8"
    # (weight-only, per-output-channel scales) or "w8a8" (int8 weights and per-row int8
    # activations, the numerics of llama.cpp's Q8_0). See vibekit/ops/linear.py. On device
    # "mlx": None, "mlx-q4" or "mlx-q8" (mx.quantize affine, group size 64; vibekit/models/mlx).
    linear_backend: str = "auto"
    quantization: str | None = None
    # Tensor parallelism (vibekit.distributed.tp): shard the model over this many ranks.
    tensor_parallel_size: int = 1
    # Batch-invariant numerics: every op computes each row in an order that does not depend on
    # how many rows share the call, so batching, predicted outputs, chunked prefill, prefix hits
    # and preemption give bit-identical tokens (CPU kernels; see vibekit/runtime/invariant.py).
    batch_invariant: bool = False

    # Structured output: "auto" (per schema, a backend that enforces every keyword),
    # "llguidance" or "xgrammar"; a request may override it (vibekit.grammar.backend).
    grammar_backend: str = "auto"
    # Defaults for requests that do not set them in response_format, and when the token masks
    # are filled during the forward ("auto": by measured fill time; see GrammarMasker).
    grammar_jump_forward: bool = True
    grammar_whitespace: str = "compact"  # "compact" | "free"
    grammar_overlap: str = "auto"  # "auto" | "always" | "never"


    @property
    def host_device(self) -> str:
        """Where host-side torch work runs (generators, masks, logits processors): the device
        itself, or "cpu" for the MLX backend (device "mlx": the model and KV on MLX arrays)."""
        return "cpu" if self.device == "mlx" else self.device

    def __post_init__(self) -> None:
        if self.linear_backend not in LINEAR_BACKENDS:
            raise ValueError(f"linear_backend={self.linear_backend!r} is not supported; use one "
                             f"of {list(LINEAR_BACKENDS)}")
        mlx = self.device == "mlx"
        if self.quantization not in ((None, "mlx-q4", "mlx-q8") if mlx
                                     else (None, "int8", "w8a8")):
            allowed = "None, 'mlx-q4' or 'mlx-q8'" if mlx else "None, 'int8' or 'w8a8'"
            raise ValueError(f"quantization={self.quantization!r} is not supported on device "
                             f"{self.device!r}; use {allowed}")
        if self.device == "mlx" and self.tensor_parallel_size != 1:
            raise ValueError("tensor_parallel_size > 1 is not supported on device 'mlx'")
        if (not isinstance(self.tensor_parallel_size, int)
                or isinstance(self.tensor_parallel_size, bool) or self.tensor_parallel_size < 1):
            raise ValueError(f"tensor_parallel_size must be an integer >= 1, got "
                             f"{self.tensor_parallel_size!r}")
        for name, allowed in (("grammar_backend", ("auto", "llguidance", "xgrammar")),
                              ("grammar_whitespace", ("compact", "free")),
                              ("grammar_overlap", ("auto", "always", "never"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of "
                                 f"{', '.join(allowed)}")
        if self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be positive, got {self.max_model_len}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.attention_backend not in ("auto", "cpu", "torch", "triton", "ref"):
            raise ValueError(
                f"attention_backend {self.attention_backend!r} is not one of "
                "auto, cpu, torch, triton, ref"
            )
        if self.batch_invariant:
            for name, allowed in (("attention_backend", ("auto", "cpu")),
                                  ("linear_backend", ("auto", "cpu"))):
                if getattr(self, name) not in allowed:
                    raise ValueError(f"batch_invariant=True runs the invariant CPU kernels; "
                                     f"{name}={getattr(self, name)!r} must be 'auto' or 'cpu'")
            if torch.device(self.device).type != "cpu":
                raise ValueError(f"batch_invariant=True is implemented on the CPU only, not "
                                 f"device={self.device!r}")
            if self.tensor_parallel_size != 1:
                raise ValueError("batch_invariant=True does not support tensor_parallel_size > 1")
        if self.model.sliding_window is not None and self.max_model_len > self.model.sliding_window:
            raise ValueError(
                f"max_model_len {self.max_model_len} exceeds the model's sliding_window "
                f"{self.model.sliding_window}; sliding-window attention is not implemented, so "
                f"max_model_len must be <= {self.model.sliding_window}"
            )
