"""Moonshine-streaming (HF `moonshine_streaming`): a streaming audio encoder and a text decoder
with paged self-attention KV and a paged cross-attention KV written once per encoder output.

The math follows transformers' modeling_moonshine_streaming.py: the encoder is in
`moonshine_streaming_encoder.py` (run incrementally over the audio); the decoder is pre-norm
LayerNorm (no bias) blocks of causal self-attention with partial interleaved RoPE,
cross-attention over the encoder outputs (plus a learned position embedding, projected to the
decoder width), and a SiLU-gated MLP (`fc1` -> value, gate halves).

Cross-attention K/V depend on one encoder output each (its value and position), so they are
computed once, when that output becomes final, into pages of their own, and every decoder step
of every hypothesis reads them there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.core.forward_batch import ForwardBatch
from vibekit.kvcache.spec import KVCacheSpec
from vibekit.models.moonshine_streaming_encoder import StreamingEncoder, activation
from vibekit.ops.attention import paged_attention
from vibekit.ops.kv_append import kv_append

MODEL_TYPES = {"moonshine_streaming": "MoonshineStreamingForConditionalGeneration"}


@dataclass(frozen=True)
class MoonshineStreamingConfig:
    """The shape of a Moonshine-streaming checkpoint (encoder fields prefixed `encoder_`)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_qo_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_act: str
    rope_theta: float
    partial_rotary_factor: float
    max_position_embeddings: int
    attention_bias: bool
    tie_word_embeddings: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    decoder_start_token_id: int
    encoder_hidden_size: int
    encoder_intermediate_size: int
    encoder_num_layers: int
    encoder_num_qo_heads: int
    encoder_num_kv_heads: int
    encoder_head_dim: int
    encoder_hidden_act: str
    encoder_attention_bias: bool
    encoder_max_position_embeddings: int
    sliding_windows: tuple[tuple[int, int], ...]
    sample_rate: int
    frame_len: int

    def __post_init__(self) -> None:
        if self.num_qo_heads != self.num_kv_heads:
            raise ValueError(  # HF views the decoder's queries with num_key_value_heads
                f"decoder num_attention_heads ({self.num_qo_heads}) must equal "
                f"num_key_value_heads ({self.num_kv_heads}) for moonshine_streaming")
        if self.encoder_num_qo_heads % self.encoder_num_kv_heads:
            raise ValueError("encoder num_attention_heads must be a multiple of "
                             "num_key_value_heads")
        activation(self.hidden_act)
        activation(self.encoder_hidden_act)

    @property
    def rope_dim(self) -> int:
        """HF's `dim` of the rotary frequencies; ceil(dim / 2) pairs are rotated."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def samples_per_output(self) -> int:
        """Audio samples per encoder output (frame_len x the two stride-2 convolutions)."""
        return 4 * self.frame_len


def config_from_hf(hf: dict) -> MoonshineStreamingConfig:
    enc = dict(hf.get("encoder_config") or {})
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type {rope.get('rope_type')!r} is not supported; only default")
    eos = hf.get("eos_token_id", 2)
    eos = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    heads = hf.get("num_attention_heads", 8)
    hidden = hf.get("hidden_size", 320)
    enc_hidden = enc.get("hidden_size", 320)
    enc_heads = enc.get("num_attention_heads", 8)
    start = hf.get("decoder_start_token_id")
    if start is None:
        start = hf.get("bos_token_id", 1)
    return MoonshineStreamingConfig(
        model_type="moonshine_streaming",
        vocab_size=hf.get("vocab_size", 32768),
        hidden_size=hidden,
        intermediate_size=hf.get("intermediate_size", 1280),
        num_layers=hf.get("num_hidden_layers", 6),
        num_qo_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        hidden_act=hf.get("hidden_act", "silu"),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        partial_rotary_factor=float(rope.get("partial_rotary_factor", 0.8)),
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        attention_bias=bool(hf.get("attention_bias", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=hf.get("bos_token_id", 1),
        eos_token_ids=eos,
        pad_token_id=hf.get("pad_token_id", 0),
        decoder_start_token_id=start,
        encoder_hidden_size=enc_hidden,
        encoder_intermediate_size=enc.get("intermediate_size", 1280),
        encoder_num_layers=enc.get("num_hidden_layers", 6),
        encoder_num_qo_heads=enc_heads,
        encoder_num_kv_heads=enc.get("num_key_value_heads") or enc_heads,
        encoder_head_dim=enc.get("head_dim") or enc_hidden // enc_heads,
        encoder_hidden_act=enc.get("hidden_act", "gelu"),
        encoder_attention_bias=bool(enc.get("attention_bias", False)),
        encoder_max_position_embeddings=enc.get("max_position_embeddings", 4096),
        sliding_windows=tuple(tuple(w) for w in enc.get(
            "sliding_windows", [[16, 4], [16, 4], [16, 0], [16, 0], [16, 4], [16, 4]])),
        sample_rate=enc.get("sample_rate", 16000),
        frame_len=int(round(enc.get("sample_rate", 16000) * enc.get("frame_ms", 5.0) / 1000.0)),
    )


def model_class(config: MoonshineStreamingConfig) -> type[nn.Module]:
    return MoonshineStreamingForConditionalGeneration


def _linears(module: nn.Module, shapes: dict[str, tuple[int, int, bool]]) -> None:
    for name, (i, o, bias) in shapes.items():
        setattr(module, name, nn.Linear(i, o, bias=bias))


class _Attention(nn.Module):
    def __init__(self, c: MoonshineStreamingConfig) -> None:
        super().__init__()
        h, qd, b = c.hidden_size, c.num_qo_heads * c.head_dim, c.attention_bias
        _linears(self, {"q_proj": (h, qd, b), "k_proj": (h, qd, b), "v_proj": (h, qd, b),
                        "o_proj": (qd, h, False)})


class _DecoderLayer(nn.Module):
    def __init__(self, c: MoonshineStreamingConfig) -> None:
        super().__init__()
        self.self_attn = _Attention(c)
        self.encoder_attn = _Attention(c)
        self.mlp = nn.Module()
        _linears(self.mlp, {"fc1": (c.hidden_size, 2 * c.intermediate_size, True),
                            "fc2": (c.intermediate_size, c.hidden_size, True)})
        for name in ("input_layernorm", "post_attention_layernorm", "final_layernorm"):
            setattr(self, name, nn.LayerNorm(c.hidden_size, bias=False))


class _Decoder(nn.Module):
    def __init__(self, c: MoonshineStreamingConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(_DecoderLayer(c) for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(c.hidden_size, bias=False)
        self.pos_emb = nn.Embedding(c.max_position_embeddings, c.encoder_hidden_size)
        self.proj = (nn.Linear(c.encoder_hidden_size, c.hidden_size, bias=False)
                     if c.encoder_hidden_size != c.hidden_size else nn.Identity())


def apply_interleaved_rope(x: torch.Tensor, positions: torch.Tensor, rope_dim: int,
                           theta: float) -> torch.Tensor:
    """Rotate the pairs (x[2i], x[2i+1]), i < ceil(rope_dim / 2), of x [T, H, D] by
    positions [T] (HF moonshine's interleaved partial RoPE); the other dims pass through."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32,
                                             device=x.device) / rope_dim))
    rotary_dim = 2 * inv_freq.numel()
    freqs = positions.float().unsqueeze(1) * inv_freq  # [T, R/2]
    cos = freqs.cos().repeat_interleave(2, dim=-1).unsqueeze(1).to(x.dtype)  # [T, 1, R]
    sin = freqs.sin().repeat_interleave(2, dim=-1).unsqueeze(1).to(x.dtype)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    pairs = rot.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat([rot * cos + rotated * sin, rest], dim=-1)


class MoonshineStreamingForConditionalGeneration(nn.Module):
    """Encoder (`self.model.encoder`, a StreamingEncoder) + paged decoder.

    `write_cross_kv` turns final encoder outputs into cross-attention K/V pages;
    `decode(input_ids, batch, cross)` runs the decoder over one ragged batch: `batch` is the
    self-attention ForwardBatch, `cross` a ForwardBatch with one single-token sequence per query
    token of `batch`, whose pages hold that sequence's cross K/V (kv_lens = encoder outputs).
    Example::

        model = build_model(config); model.load_weights(weights)
        stream = model.model.encoder.new_stream()
        frames = model.encoder.step(stream, samples, final=True)   # [L, C_enc]
    """

    def __init__(self, config: MoonshineStreamingConfig) -> None:
        super().__init__()
        c = self.config = config
        self.model = nn.Module()
        self.model.encoder = StreamingEncoder(
            c.encoder_hidden_size, c.encoder_intermediate_size, c.encoder_num_layers,
            c.encoder_num_qo_heads, c.encoder_num_kv_heads, c.encoder_head_dim,
            c.encoder_attention_bias, c.encoder_hidden_act, c.frame_len, c.sliding_windows)
        self.model.decoder = _Decoder(c)
        self.proj_out = None if c.tie_word_embeddings else nn.Linear(
            c.hidden_size, c.vocab_size, bias=False)
        self.act = activation(c.hidden_act)

    @property
    def encoder(self) -> StreamingEncoder:
        return self.model.encoder

    def kv_spec(self) -> KVCacheSpec:
        """Self- and cross-attention KV share this shape (one pool each)."""
        c = self.config
        return KVCacheSpec(c.num_layers, c.num_kv_heads, c.head_dim)

    def max_encoder_outputs(self) -> int:
        """Cross-attention positions the learned position embedding covers."""
        return self.config.max_position_embeddings

    @torch.no_grad()
    def write_cross_kv(self, frames: torch.Tensor, positions: torch.Tensor,
                       slot_mapping: torch.Tensor,
                       cross_kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                       backend: str = "auto") -> None:
        """Encoder outputs frames [n, C_enc] (of any streams) at their positions [n] within
        their streams -> cross K/V into the slots slot_mapping [n] of every layer's cache."""
        c, dec = self.config, self.model.decoder
        h = dec.proj(frames + dec.pos_emb(positions))  # [n, C]
        for layer, (k_cache, v_cache) in zip(dec.layers, cross_kv_caches):
            a = layer.encoder_attn
            k = a.k_proj(h).view(-1, c.num_kv_heads, c.head_dim)
            v = a.v_proj(h).view(-1, c.num_kv_heads, c.head_dim)
            kv_append(k, v, k_cache, v_cache, slot_mapping, backend=backend)

    @torch.no_grad()
    def decode(self, batch: ForwardBatch, cross: ForwardBatch) -> torch.Tensor:
        """Logits [S, V] of batch.sample_indices (see the class docstring for the batches)."""
        c, dec = self.config, self.model.decoder
        scale = c.head_dim ** -0.5
        x = dec.embed_tokens(batch.input_ids)  # [T, C]
        for layer, (k_cache, v_cache), (xk_cache, xv_cache) in zip(
                dec.layers, batch.kv_caches, cross.kv_caches):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h).view(-1, c.num_qo_heads, c.head_dim)  # [T, H, D]
            k = a.k_proj(h).view(-1, c.num_kv_heads, c.head_dim)
            v = a.v_proj(h).view(-1, c.num_kv_heads, c.head_dim)
            q = apply_interleaved_rope(q, batch.positions, c.rope_dim, c.rope_theta)
            k = apply_interleaved_rope(k, batch.positions, c.rope_dim, c.rope_theta)
            kv_append(k, v, k_cache, v_cache, batch.slot_mapping, backend=batch.kv_append_backend)
            o = paged_attention(q, k_cache, v_cache, batch.qo_indptr, batch.page_table,
                                batch.kv_lens, scale, max_q_len=batch.max_q_len,
                                max_kv_len=batch.max_kv_len, backend=batch.attention_backend)
            x = x + a.o_proj(o.flatten(1))
            a = layer.encoder_attn
            q = a.q_proj(layer.post_attention_layernorm(x)).view(-1, c.num_qo_heads, c.head_dim)
            o = paged_attention(q, xk_cache, xv_cache, cross.qo_indptr, cross.page_table,
                                cross.kv_lens, scale, max_q_len=1, max_kv_len=cross.max_kv_len,
                                backend=cross.attention_backend)
            x = x + a.o_proj(o.flatten(1))
            value, gate = layer.mlp.fc1(layer.final_layernorm(x)).chunk(2, dim=-1)
            x = x + layer.mlp.fc2(self.act(gate) * value)
        x = dec.norm(x[batch.sample_indices])
        if self.proj_out is None:
            return F.linear(x, dec.embed_tokens.weight)
        return self.proj_out(x)

    def packable_linears(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Every nn.Linear (vibekit.models.linear.pack_linears may swap them for prepacked
        kernels): each is only ever called, never read as a weight."""
        return {name: (m.weight, m.bias) for name, m in self.named_modules()
                if isinstance(m, nn.Linear)}

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors in (a tied checkpoint's proj_out.weight is skipped).

        Raises ValueError on an unknown name or a shape mismatch, and after the last tensor if
        any parameter was never loaded."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if name == "proj_out.weight" and self.proj_out is None:
                continue
            param = params.get(name)
            if param is None:
                raise ValueError(f"checkpoint tensor {name!r} has no place in "
                                 f"{type(self).__name__} (moonshine_streaming)")
            if param.shape != tensor.shape:
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}; "
                                 f"the model expects {tuple(param.shape)} (config mismatch?)")
            param.data.copy_(tensor)
            loaded.add(name)
        missing = sorted(set(params) - loaded)
        if missing:
            raise ValueError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}")
