"""UnifiedFlowModel: one transformer that reads a text prompt causally and denoises a grid of
image-latent tokens by flow matching, in the spirit of Show-o2 / Transfusion.

Both modalities share every layer. Text tokens attend causally to the prompt only, so their
K/V do not depend on the image or on the timestep: `encode_prompt` computes them once per request
and `velocity` reuses them at every denoising step. Image tokens attend to the whole (unpadded)
prompt and to each other (bidirectionally). The timestep enters through adaLN-single
modulation (PixArt-alpha): one shared projection of the timestep embedding, plus a learned
per-layer table; text tokens get a learned constant modulation instead.

Flow matching convention: x_t = (1 - t) * noise + t * image, t from 0 (noise) to 1 (image), and the
model predicts the velocity image - noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vibekit.models.unified.config import UnifiedConfig
from vibekit.models.unified.tokenizer import PromptTokenizer

TIME_EMBED_DIM = 256


@dataclass
class PromptKV:
    """The prompt's K/V in every layer, computed once and read by every denoising step.

    keys[l], values[l]: [B, num_heads, max_prompt_len, head_dim]; mask: [B, max_prompt_len] bool
    (True for real tokens; padding keys are masked out).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.mask.shape[0]

    def index(self, rows: torch.Tensor | Sequence[int]) -> PromptKV:
        """The rows `rows` of the batch (a gather; shares nothing with self)."""
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.mask.device)
        return PromptKV([k.index_select(0, rows) for k in self.keys],
                        [v.index_select(0, rows) for v in self.values],
                        self.mask.index_select(0, rows))

    @staticmethod
    def cat(parts: Sequence[PromptKV]) -> PromptKV:
        """Concatenate batches (e.g. the cond rows, then the uncond rows)."""
        num_layers = len(parts[0].keys)
        return PromptKV([torch.cat([p.keys[i] for p in parts]) for i in range(num_layers)],
                        [torch.cat([p.values[i] for p in parts]) for i in range(num_layers)],
                        torch.cat([p.mask for p in parts]))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def timestep_embedding(t: torch.Tensor, dim: int = TIME_EMBED_DIM) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to [0, 1000]): [B] -> [B, dim] float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs.to(t.device)[None]  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class UnifiedBlock(nn.Module):
    """Pre-norm attention + MLP block shared by text and image tokens; modulation per stream."""

    def __init__(self, config: UnifiedConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.norm1 = nn.LayerNorm(h, elementwise_affine=False, eps=config.norm_eps)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.norm2 = nn.LayerNorm(h, elementwise_affine=False, eps=config.norm_eps)
        self.fc1 = nn.Linear(h, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, h)
        # (shift1, scale1, gate1, shift2, scale2, gate2), added to the shared timestep modulation
        # for image tokens; the whole modulation of text tokens.
        self.image_table = nn.Parameter(torch.zeros(6, h))
        self.text_table = nn.Parameter(torch.zeros(6, h))

    def qkv_heads(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, L, h] -> q, k, v each [B, H, L, D]."""
        b, length, _ = y.shape
        qkv = self.qkv(y).view(b, length, 3, self.num_heads, self.head_dim)  # [B, L, 3, H, D]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, D]
        return q, k, v

    def mlp(self, y: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(y), approximate="tanh"))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, attn_mask: torch.Tensor,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
                need_mlp: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, h]; mod [B, L or 1, 6, h]; attn_mask [B, 1, L or 1, Lprefix + L] bool.

        `prefix` (k, v) [B, H, Lp, D] are cached keys placed before this stream's own keys.
        Returns (x, k, v) with this stream's k, v [B, H, L, D].
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(2)  # each [B, L or 1, h]
        q, k, v = self.qkv_heads(_modulate(self.norm1(x), shift1, scale1))
        keys, values = (k, v) if prefix is None else (torch.cat([prefix[0], k], dim=2),
                                                     torch.cat([prefix[1], v], dim=2))
        attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)  # [B,H,L,D]
        b, length = x.shape[:2]
        x = x + gate1 * self.proj(attn.transpose(1, 2).reshape(b, length, -1))
        if need_mlp:
            x = x + gate2 * self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x, k, v


class UnifiedFlowModel(nn.Module):
    """Text prompt + image-latent grid in one transformer; predicts the flow-matching velocity.

    Example::

        model = vibekit.zoo.load("digits-flow")
        ids, mask = model.tokenizer.batch(["a handwritten 7"])
        kv = model.encode_prompt(ids, mask)                      # once per request
        x = torch.randn(1, model.config.num_patches, model.config.patch_dim)
        v = model.velocity(x, torch.tensor([0.0]), kv)           # [1, N, P], every step
        v_naive = model(ids, mask, x, torch.tensor([0.0]))      # prompt recomputed: same values
    """

    def __init__(self, config: UnifiedConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.tokenizer = PromptTokenizer(config)
        self.tok_embed = nn.Embedding(config.vocab_size, h)
        self.text_pos = nn.Parameter(torch.zeros(config.max_prompt_len, h))
        self.patch_in = nn.Linear(config.patch_dim, h)
        self.image_pos = nn.Parameter(torch.zeros(config.num_patches, h))
        self.time_mlp = nn.Sequential(nn.Linear(TIME_EMBED_DIM, h), nn.SiLU(), nn.Linear(h, h))
        self.time_mod = nn.Linear(h, 6 * h)  # adaLN-single: shared by all layers
        self.blocks = nn.ModuleList(UnifiedBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(h, elementwise_affine=False, eps=config.norm_eps)
        self.final_table = nn.Parameter(torch.zeros(2, h))
        self.patch_out = nn.Linear(h, config.patch_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DiT-style init: xavier linears, small position tables, zero modulation and output (so
        every block starts as the identity on image tokens)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        nn.init.normal_(self.text_pos, std=0.02)
        nn.init.normal_(self.image_pos, std=0.02)
        for layer in self.time_mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        for param in (self.time_mod.weight, self.time_mod.bias, self.patch_out.weight,
                      self.patch_out.bias):
            nn.init.zeros_(param)

    # -- image <-> latent tokens ---------------------------------------------------------------

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] -> [B, N, P] (row-major grid of patch_size squares)."""
        c, p, g = self.config.num_channels, self.config.patch_size, self.config.grid_size
        b = images.shape[0]
        x = images.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)  # [B, g, g, C, p, p]
        return x.reshape(b, g * g, c * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, P] -> [B, C, S, S]."""
        c, p, g = self.config.num_channels, self.config.patch_size, self.config.grid_size
        b = x.shape[0]
        x = x.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)  # [B, C, g, p, g, p]
        return x.reshape(b, c, g * p, g * p)

    # -- forward paths -------------------------------------------------------------------------

    def _time_mod(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B] -> (c [B, h], shared modulation [B, 6, h])."""
        c = self.time_mlp(timestep_embedding(t).to(self.patch_in.weight.dtype))
        return c, self.time_mod(F.silu(c)).view(-1, 6, self.config.hidden_size)

    def _embed_text(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        return self.tok_embed(prompt_ids) + self.text_pos[:prompt_ids.shape[1]]  # [B, Lp, h]

    def _embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_in(x) + self.image_pos  # [B, N, h]

    def _out(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.final_table[None] + c[:, None]).unbind(1)  # each [B, h]
        y = _modulate(self.final_norm(x), shift[:, None], scale[:, None])
        return self.patch_out(y)  # [B, N, P]

    @staticmethod
    def _text_mask(prompt_mask: torch.Tensor) -> torch.Tensor:
        """Causal attention within the prompt, padding keys hidden: [B, 1, Lp, Lp] bool.

        NOTE: pad queries still see BOS, so no row of the mask is empty (no NaN)."""
        length = prompt_mask.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=prompt_mask.device).tril()
        return (causal[None] & prompt_mask[:, None, :])[:, None]

    def encode_prompt(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> PromptKV:
        """Run the prompt (causally) through every layer and keep its K/V.

        prompt_ids [B, Lp] int64, prompt_mask [B, Lp] bool (from `tokenizer.batch`).
        """
        x = self._embed_text(prompt_ids)
        mask = self._text_mask(prompt_mask)
        keys, values = [], []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # NOTE: the text stream's last MLP feeds nothing the image tokens read; skip it.
            x, k, v = block(x, block.text_table[None, None], mask, need_mlp=i < last)
            keys.append(k)
            values.append(v)
        return PromptKV(keys, values, prompt_mask)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, prompt_kv: PromptKV) -> torch.Tensor:
        """Image tokens only, reading the cached prompt K/V: x [B, N, P], t [B] -> [B, N, P]."""
        if len(prompt_kv) != x.shape[0]:
            raise ValueError(f"prompt_kv has {len(prompt_kv)} rows; x has {x.shape[0]}")
        c, tmod = self._time_mod(t)
        h = self._embed_image(x)
        n = x.shape[1]
        image_keys = torch.ones(x.shape[0], n, dtype=torch.bool, device=x.device)
        mask = torch.cat([prompt_kv.mask, image_keys], dim=1)[:, None, None]  # [B, 1, 1, Lp+N]
        for i, block in enumerate(self.blocks):
            mod = (tmod + block.image_table)[:, None]  # [B, 1, 6, h]
            h, _, _ = block(h, mod, mask, prefix=(prompt_kv.keys[i], prompt_kv.values[i]))
        return self._out(h, c)

    def forward(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, x: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """The plain path: prompt and image tokens in one sequence, the prompt recomputed on
        every call. Same contract and values as `velocity(x, t, encode_prompt(...))`."""
        b, lp = prompt_ids.shape
        n = x.shape[1]
        c, tmod = self._time_mod(t)
        hidden = torch.cat([self._embed_text(prompt_ids), self._embed_image(x)], dim=1)
        # Text rows: causal over the prompt; image rows: the whole prompt and every image token.
        mask = torch.zeros(b, lp + n, lp + n, dtype=torch.bool, device=x.device)
        mask[:, :lp, :lp] = self._text_mask(prompt_mask)[:, 0]
        mask[:, lp:, :lp] = prompt_mask[:, None, :]
        mask[:, lp:, lp:] = True
        for block in self.blocks:
            mod = torch.cat([block.text_table.expand(b, lp, 6, -1),
                             (tmod + block.image_table)[:, None].expand(b, n, 6, -1)], dim=1)
            hidden, _, _ = block(hidden, mod, mask[:, None])
        return self._out(hidden[:, lp:], c)
