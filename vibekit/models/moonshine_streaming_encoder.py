"""The Moonshine-streaming audio encoder, run incrementally over a growing audio stream.

HF's MoonshineStreamingEncoder sees the whole waveform: frames of `frame_len` samples ->
per-frame CMVN, asinh compression, linear + SiLU -> two causal stride-2 convolutions (kernel 5)
-> transformer layers whose attention is a per-layer sliding window (left, right): position p
sees keys p-left+1 .. p+right-1 -> a final norm. Everything before the attention is causal, and
each layer looks at most `right - 1` positions ahead, so an encoder output is final as soon as
enough later audio has arrived. `EncoderStream` keeps exactly the left context each stage needs
(the last conv inputs, each layer's K/V of the last `left - 1` positions, the queries still
waiting for their lookahead) and turns new samples into the encoder outputs that just became
final: streaming the audio in any chunking gives the outputs of one pass over the whole audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_ACTS = {"gelu": F.gelu, "silu": F.silu, "swish": F.silu, "relu": F.relu}


def activation(name: str):
    if name not in _ACTS:
        raise ValueError(f"hidden_act {name!r} is not supported; supported: {sorted(_ACTS)}")
    return _ACTS[name]


class UnitOffsetLayerNorm(nn.Module):
    """LayerNorm without affine terms, scaled by (gamma + 1) (HF MoonshineStreamingLayerNorm)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * (self.gamma + 1.0)


class Embedder(nn.Module):
    def __init__(self, hidden_size: int, frame_len: int) -> None:
        super().__init__()
        self.frame_len = frame_len
        self.comp = nn.Module()
        self.comp.log_k = nn.Parameter(torch.zeros(()))
        self.linear = nn.Linear(frame_len, hidden_size, bias=False)
        self.conv1 = nn.Conv1d(hidden_size, 2 * hidden_size, kernel_size=5, stride=2)
        self.conv2 = nn.Conv1d(2 * hidden_size, hidden_size, kernel_size=5, stride=2)

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        """[n * frame_len] samples -> [n, C] frame embeddings (position-wise: no context)."""
        x = samples.view(-1, self.frame_len)  # [n, frame_len]
        x = x - x.mean(dim=-1, keepdim=True)
        x = x / (x.pow(2).mean(dim=-1, keepdim=True) + 1e-6).sqrt()  # CMVN per frame
        x = torch.asinh(torch.exp(self.comp.log_k) * x)
        return F.silu(self.linear(x))


class EncoderLayer(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, num_qo_heads: int,
                 num_kv_heads: int, head_dim: int, bias: bool, act: str,
                 window: tuple[int, int]) -> None:
        super().__init__()
        self.num_qo_heads, self.num_kv_heads, self.head_dim = num_qo_heads, num_kv_heads, head_dim
        self.left, self.right = window
        if self.left < 1 or self.right < 0:
            raise ValueError(f"sliding window {window} must have left >= 1 and right >= 0")
        self.lookahead = max(self.right - 1, 0)
        self.act = activation(act)
        self.self_attn = nn.Module()
        for name, (i, o) in {"q_proj": (hidden_size, num_qo_heads * head_dim),
                             "k_proj": (hidden_size, num_kv_heads * head_dim),
                             "v_proj": (hidden_size, num_kv_heads * head_dim),
                             "o_proj": (num_qo_heads * head_dim, hidden_size)}.items():
            setattr(self.self_attn, name, nn.Linear(i, o, bias=bias))
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.mlp.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.input_layernorm = UnitOffsetLayerNorm(hidden_size)
        self.post_attention_layernorm = UnitOffsetLayerNorm(hidden_size)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.input_layernorm(x)
        a, d = self.self_attn, self.head_dim
        q = a.q_proj(h).view(-1, self.num_qo_heads, d).transpose(0, 1)  # [Hq, n, D]
        k = a.k_proj(h).view(-1, self.num_kv_heads, d).transpose(0, 1)  # [Hk, n, D]
        v = a.v_proj(h).view(-1, self.num_kv_heads, d).transpose(0, 1)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int,
               k_start: int) -> torch.Tensor:
        """Windowed attention of queries q [Hq, m, D] at positions q_start.. over keys k, v
        [Hk, L, D] at k_start.. -> [m, Hq * D] (before o_proj)."""
        q_pos = torch.arange(q_start, q_start + q.shape[1]).unsqueeze(1)
        k_pos = torch.arange(k_start, k_start + k.shape[1]).unsqueeze(0)
        dist = q_pos - k_pos
        mask = ((dist >= 0) & (dist < self.left)) | ((dist < 0) & (-dist < self.right))
        group = self.num_qo_heads // self.num_kv_heads
        k = k.repeat_interleave(group, dim=0)
        v = v.repeat_interleave(group, dim=0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.device),
                                           scale=self.head_dim ** -0.5)  # [Hq, m, D]
        return o.transpose(0, 1).reshape(q.shape[1], -1)

    def post(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Residual inputs x [m, C] and attention o [m, Hq * D] -> the layer outputs."""
        x = x + self.self_attn.o_proj(o)
        return x + self.mlp.fc2(self.act(self.mlp.fc1(self.post_attention_layernorm(x))))


@dataclass
class _ConvStream:
    buf: torch.Tensor | None = None  # inputs [n, C] from position buf_start on
    buf_start: int = 0
    num_in: int = 0
    num_out: int = 0


@dataclass
class _LayerStream:
    k: torch.Tensor | None = None  # [Hk, n, D] for positions kv_start .. num_in - 1
    v: torch.Tensor | None = None
    kv_start: int = 0
    q: torch.Tensor | None = None  # [Hq, m, D] queries of positions num_out .. num_in - 1
    x: torch.Tensor | None = None  # [m, C] their residual inputs
    num_in: int = 0
    num_out: int = 0


@dataclass
class EncoderStream:
    """One audio stream's encoder state: the left context of every stage, nothing more.

    `num_samples` samples were consumed (whole frames), `num_outputs` encoder outputs are final.
    """

    convs: list[_ConvStream] = field(default_factory=lambda: [_ConvStream(), _ConvStream()])
    layers: list[_LayerStream] = field(default_factory=list)
    num_samples: int = 0
    num_outputs: int = 0

    def nbytes(self) -> int:
        tensors = [c.buf for c in self.convs] + [t for s in self.layers
                                                 for t in (s.k, s.v, s.q, s.x)]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _cat(a: torch.Tensor | None, b: torch.Tensor, dim: int) -> torch.Tensor:
    return b if a is None else torch.cat([a, b], dim=dim)


def _conv_windows(conv: nn.Conv1d, s: _ConvStream, x: torch.Tensor) -> torch.Tensor:
    """Causal strided conv (left pad kernel-1), one stream: append new inputs x [n, C] and
    return the input windows [m, C * kernel] of the outputs that became computable."""
    k, stride = conv.kernel_size[0], conv.stride[0]
    s.buf = _cat(s.buf, x, 0)
    s.num_in += x.shape[0]
    num_avail = (s.num_in - 1) // stride + 1 if s.num_in else 0
    windows = x.new_zeros(0, x.shape[1] * k)
    if num_avail > s.num_out:
        first = s.num_out * stride - (k - 1)  # first input the next output reads
        last = (num_avail - 1) * stride
        seg = s.buf[max(first, s.buf_start) - s.buf_start: last + 1 - s.buf_start]
        seg = F.pad(seg, (0, 0, max(0, s.buf_start - first), 0))  # zeros before position 0
        windows = seg.unfold(0, k, stride).flatten(1)  # [m, C, k] -> [m, C * k]
        s.num_out = num_avail
    keep = max(0, s.num_out * stride - (k - 1))
    if keep > s.buf_start:
        s.buf = s.buf[keep - s.buf_start:]
        s.buf_start = keep
    return windows


def _conv_many(conv: nn.Conv1d, states: list[_ConvStream],
               xs: list[torch.Tensor]) -> list[torch.Tensor]:
    windows = [_conv_windows(conv, s, x) for s, x in zip(states, xs)]
    out = F.linear(torch.cat(windows), conv.weight.flatten(1), conv.bias)  # one GEMM for all
    return list(out.split([w.shape[0] for w in windows]))


def _layer_many(layer: EncoderLayer, states: list[_LayerStream], xs: list[torch.Tensor],
                finals: list[bool]) -> list[torch.Tensor]:
    """New layer inputs per stream -> the layer outputs no later input can change, batched:
    one projection GEMM over every stream's rows, attention per stream."""
    counts = [x.shape[0] for x in xs]
    if sum(counts):
        q, k, v = layer.qkv(torch.cat(xs))
        for s, x, qi, ki, vi in zip(states, xs, q.split(counts, 1), k.split(counts, 1),
                                    v.split(counts, 1)):
            if x.shape[0]:
                s.q, s.k, s.v = _cat(s.q, qi, 1), _cat(s.k, ki, 1), _cat(s.v, vi, 1)
                s.x = _cat(s.x, x, 0)
                s.num_in += x.shape[0]
    residual, attended, sizes = [], [], []
    for s, final in zip(states, finals):
        target = s.num_in if final else max(s.num_out, s.num_in - layer.lookahead)
        m = target - s.num_out
        sizes.append(max(m, 0))
        if m <= 0:
            continue
        attended.append(layer.attend(s.q[:, :m], s.k, s.v, s.num_out, s.kv_start))
        residual.append(s.x[:m])
        s.q, s.x = s.q[:, m:], s.x[m:]
        s.num_out = target
        drop = max(0, s.num_out - layer.left + 1) - s.kv_start  # keys no later query sees
        if drop > 0:
            s.k, s.v = s.k[:, drop:], s.v[:, drop:]
            s.kv_start += drop
    if not attended:
        return [xs[0].new_zeros(0, xs[0].shape[1]) for _ in states]
    out = layer.post(torch.cat(residual), torch.cat(attended))
    return list(out.split(sizes))


class StreamingEncoder(nn.Module):
    """HF MoonshineStreamingEncoder's math, fed incrementally (see the module docstring)."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_layers: int,
                 num_qo_heads: int, num_kv_heads: int, head_dim: int, bias: bool, act: str,
                 frame_len: int, windows: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        if len(windows) != num_layers:
            raise ValueError(f"sliding_windows has {len(windows)} entries for {num_layers} "
                             "encoder layers; one (left, right) pair per layer is required")
        self.frame_len = frame_len
        self.embedder = Embedder(hidden_size, frame_len)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden_size, intermediate_size, num_qo_heads, num_kv_heads, head_dim,
                         bias, act, tuple(w)) for w in windows)
        self.final_norm = UnitOffsetLayerNorm(hidden_size)

    def new_stream(self) -> EncoderStream:
        return EncoderStream(layers=[_LayerStream() for _ in self.layers])

    def lookahead_frames(self) -> int:
        """Encoder outputs (20 ms each at the defaults) that wait for later audio."""
        return sum(layer.lookahead for layer in self.layers)

    def step(self, stream: EncoderStream, samples: torch.Tensor, final: bool) -> torch.Tensor:
        """Consume samples [n * frame_len] (whole frames); return the encoder outputs [m, C]
        that became final. With final=True the stream ends: every remaining output is
        returned (the last ones see only the audio there is, as in one pass over it all)."""
        return self.step_many([stream], [samples], [final])[0]

    def step_many(self, streams: list[EncoderStream], samples: list[torch.Tensor],
                  finals: list[bool]) -> list[torch.Tensor]:
        """`step` for several streams at once: their new frames share every projection GEMM
        (streams need not be aligned: each keeps its own positions and context)."""
        for x in samples:
            if x.numel() % self.frame_len:
                raise ValueError(f"{x.numel()} samples is not a whole number of "
                                 f"{self.frame_len}-sample frames")
        for stream, x in zip(streams, samples):
            stream.num_samples += x.numel()
        frames = self.embedder.frames(torch.cat(samples))  # [sum n, C]
        xs = list(frames.split([x.numel() // self.frame_len for x in samples]))
        xs = [F.silu(x) for x in _conv_many(self.embedder.conv1, [s.convs[0] for s in streams],
                                            xs)]
        xs = _conv_many(self.embedder.conv2, [s.convs[1] for s in streams], xs)
        for i, layer in enumerate(self.layers):
            xs = _layer_many(layer, [s.layers[i] for s in streams], xs, finals)
        sizes = [x.shape[0] for x in xs]
        for stream, n in zip(streams, sizes):
            stream.num_outputs += n
        return list(self.final_norm(torch.cat(xs)).split(sizes))
