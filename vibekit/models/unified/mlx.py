"""MLX version of `UnifiedFlowModel` (same weights, same math), for Apple Silicon; also runs on
Linux with `pip install "mlx[cpu]"`. Imported lazily: `import vibekit` never needs mlx.

    model = vibekit.zoo.load("digits-flow", backend="mlx")
    kv = model.encode_prompt(ids, mask)          # mx arrays; ids / mask as from the tokenizer
    v = model.velocity(x, t, kv)                 # [B, N, P]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from vibekit.models.unified.config import UnifiedConfig
from vibekit.models.unified.model import TIME_EMBED_DIM
from vibekit.models.unified.tokenizer import PromptTokenizer

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass
class MLXPromptKV:
    """keys[l], values[l]: [B, H, Lp, D]; mask [B, Lp] bool (see `PromptKV`)."""

    keys: list[mx.array]
    values: list[mx.array]
    mask: mx.array

    def __len__(self) -> int:
        return self.mask.shape[0]

    def index(self, rows: Sequence[int]) -> MLXPromptKV:
        idx = mx.array(list(rows), dtype=mx.int32)
        return MLXPromptKV([k[idx] for k in self.keys], [v[idx] for v in self.values],
                           self.mask[idx])

    @staticmethod
    def cat(parts: Sequence[MLXPromptKV]) -> MLXPromptKV:
        n = len(parts[0].keys)
        return MLXPromptKV([mx.concatenate([p.keys[i] for p in parts]) for i in range(n)],
                           [mx.concatenate([p.values[i] for p in parts]) for i in range(n)],
                           mx.concatenate([p.mask for p in parts]))


def _to_mx(value: Any) -> mx.array:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    return mx.array(np.asarray(value, dtype=np.float32))


def _gelu_tanh(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + mx.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


def _modulate(x: mx.array, shift: mx.array, scale: mx.array) -> mx.array:
    return x * (1 + scale) + shift


def timestep_embedding_mlx(t: mx.array, dim: int = TIME_EMBED_DIM) -> mx.array:
    half = dim // 2
    freqs = mx.exp(-math.log(10000.0) * mx.arange(half, dtype=mx.float32) / half)
    args = t.astype(mx.float32)[:, None] * 1000.0 * freqs[None]
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)


class MLXUnifiedFlowModel:
    """`UnifiedFlowModel` on MLX arrays (float32). Built from the torch state dict names."""

    def __init__(self, config: UnifiedConfig, weights: Mapping[str, Any]) -> None:
        self.config = config
        self.tokenizer = PromptTokenizer(config)
        self.w = {name: _to_mx(value) for name, value in weights.items()}
        # NOTE: linear weights are stored transposed ([in, out]) so x @ w needs no copy.
        for name in list(self.w):
            if name.endswith(".weight") and self.w[name].ndim == 2 and name != "tok_embed.weight":
                self.w[name] = mx.array(self.w[name].T)
        mx.eval(self.w)
        self.scale = config.head_dim**-0.5

    def _linear(self, x: mx.array, name: str) -> mx.array:
        return x @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _norm(self, x: mx.array) -> mx.array:
        return mx.fast.layer_norm(x, None, None, self.config.norm_eps)

    # -- image <-> latent tokens ---------------------------------------------------------------

    def patchify(self, images: mx.array) -> mx.array:
        """[B, C, S, S] -> [B, N, P]."""
        c, p, g = self.config.num_channels, self.config.patch_size, self.config.grid_size
        b = images.shape[0]
        x = images.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, c * p * p)

    def unpatchify(self, x: mx.array) -> mx.array:
        """[B, N, P] -> [B, C, S, S]."""
        c, p, g = self.config.num_channels, self.config.patch_size, self.config.grid_size
        b = x.shape[0]
        x = x.reshape(b, g, g, c, p, p).transpose(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, g * p, g * p)

    # -- forward paths -------------------------------------------------------------------------

    def _block(self, i: int, x: mx.array, mod: mx.array, mask: mx.array,
               prefix: tuple[mx.array, mx.array] | None = None,
               need_mlp: bool = True) -> tuple[mx.array, mx.array, mx.array]:
        """Same contract as `UnifiedBlock.forward`; mask is additive [B, 1, L or 1, K]."""
        p = f"blocks.{i}"
        cfg = self.config
        b, length, _ = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod[:, :, j] for j in range(6))
        qkv = self._linear(_modulate(self._norm(x), shift1, scale1), f"{p}.qkv")
        qkv = qkv.reshape(b, length, 3, cfg.num_heads, cfg.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, H, L, D]
        keys, values = (k, v) if prefix is None else (mx.concatenate([prefix[0], k], axis=2),
                                                     mx.concatenate([prefix[1], v], axis=2))
        attn = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.scale, mask=mask)
        x = x + gate1 * self._linear(attn.transpose(0, 2, 1, 3).reshape(b, length, -1),
                                     f"{p}.proj")
        if need_mlp:
            y = _modulate(self._norm(x), shift2, scale2)
            x = x + gate2 * self._linear(_gelu_tanh(self._linear(y, f"{p}.fc1")), f"{p}.fc2")
        return x, k, v

    def _time_mod(self, t: mx.array) -> tuple[mx.array, mx.array]:
        c = self._linear(timestep_embedding_mlx(t), "time_mlp.0")
        c = self._linear(c * mx.sigmoid(c), "time_mlp.2")
        tmod = self._linear(c * mx.sigmoid(c), "time_mod")
        return c, tmod.reshape(-1, 6, self.config.hidden_size)

    @staticmethod
    def _additive(mask: mx.array) -> mx.array:
        return mx.where(mask, mx.array(0.0, dtype=mx.float32), mx.array(-mx.inf, dtype=mx.float32))

    def encode_prompt(self, prompt_ids: Any, prompt_mask: Any) -> MLXPromptKV:
        """prompt_ids [B, Lp] ints, prompt_mask [B, Lp] bool (numpy, torch or mx)."""
        ids = mx.array(np.asarray(prompt_ids), dtype=mx.int32)
        pmask = mx.array(np.asarray(prompt_mask), dtype=mx.bool_)
        length = ids.shape[1]
        x = self.w["tok_embed.weight"][ids] + self.w["text_pos"][:length]
        causal = mx.tril(mx.ones((length, length), dtype=mx.bool_))
        mask = self._additive(causal[None] & pmask[:, None, :])[:, None]  # [B, 1, Lp, Lp]
        keys, values = [], []
        last = self.config.num_layers - 1
        for i in range(self.config.num_layers):
            mod = self.w[f"blocks.{i}.text_table"][None, None]
            x, k, v = self._block(i, x, mod, mask, need_mlp=i < last)
            keys.append(k)
            values.append(v)
        return MLXPromptKV(keys, values, pmask)

    def velocity(self, x: mx.array, t: mx.array, prompt_kv: MLXPromptKV) -> mx.array:
        """x [B, N, P], t [B] -> velocity [B, N, P], reading the cached prompt K/V."""
        if len(prompt_kv) != x.shape[0]:
            raise ValueError(f"prompt_kv has {len(prompt_kv)} rows; x has {x.shape[0]}")
        c, tmod = self._time_mod(t)
        h = self._linear(x, "patch_in") + self.w["image_pos"]
        image_keys = mx.ones((x.shape[0], x.shape[1]), dtype=mx.bool_)
        mask = self._additive(mx.concatenate([prompt_kv.mask, image_keys], axis=1))[:, None, None]
        for i in range(self.config.num_layers):
            mod = (tmod + self.w[f"blocks.{i}.image_table"])[:, None]
            h, _, _ = self._block(i, h, mod, mask, prefix=(prompt_kv.keys[i], prompt_kv.values[i]))
        return self._out(h, c)

    def _out(self, h: mx.array, c: mx.array) -> mx.array:
        mod = self.w["final_table"][None] + c[:, None]  # [B, 2, h]
        y = _modulate(self._norm(h), mod[:, 0:1], mod[:, 1:2])
        return self._linear(y, "patch_out")

    def __call__(self, prompt_ids: Any, prompt_mask: Any, x: mx.array, t: mx.array) -> mx.array:
        """The plain path (prompt recomputed); same values as velocity(x, t, encode_prompt())."""
        ids = mx.array(np.asarray(prompt_ids), dtype=mx.int32)
        pmask = mx.array(np.asarray(prompt_mask), dtype=mx.bool_)
        b, lp = ids.shape
        n = x.shape[1]
        c, tmod = self._time_mod(t)
        hidden = mx.concatenate([self.w["tok_embed.weight"][ids] + self.w["text_pos"][:lp],
                                 self._linear(x, "patch_in") + self.w["image_pos"]], axis=1)
        causal = mx.tril(mx.ones((lp, lp), dtype=mx.bool_))
        text_rows = mx.concatenate([causal[None] & pmask[:, None, :],
                                    mx.zeros((b, lp, n), dtype=mx.bool_)], axis=2)
        image_rows = mx.concatenate([mx.broadcast_to(pmask[:, None, :], (b, n, lp)),
                                     mx.ones((b, n, n), dtype=mx.bool_)], axis=2)
        mask = self._additive(mx.concatenate([text_rows, image_rows], axis=1))[:, None]
        for i in range(self.config.num_layers):
            text_mod = mx.broadcast_to(self.w[f"blocks.{i}.text_table"][None, None], (b, lp, 6,
                                       self.config.hidden_size))
            image_mod = mx.broadcast_to((tmod + self.w[f"blocks.{i}.image_table"])[:, None],
                                        (b, n, 6, self.config.hidden_size))
            hidden, _, _ = self._block(i, hidden, mx.concatenate([text_mod, image_mod], axis=1),
                                       mask)
        return self._out(hidden[:, lp:], c)
