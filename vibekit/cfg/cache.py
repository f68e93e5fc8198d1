"""CFGCache: the per-batch state of classifier-free guidance under a `CFGCachePolicy` (torch).

Each step the caller asks `uncond_rows(step)` which rows need the unconditional branch (a check,
no side effects), runs the model on all cond rows plus those uncond rows (one batched forward),
then calls `guide(step, cond, uncond, rows)`, which caches the fresh deltas and returns the
guided output for every row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vibekit.cfg.policy import CFGCachePolicy


def cfg_combine_ref(cond: torch.Tensor, uncond: torch.Tensor,
                    guidance_scale: float) -> torch.Tensor:
    """Reference implementation of classifier-free guidance.

    cond, uncond: [B, ...] (velocities, noise predictions or log-probabilities); returns
    uncond + s * (cond - uncond), written as cond + (s - 1) * (cond - uncond) [B, ...].
    """
    return cond + (guidance_scale - 1.0) * (cond - uncond)


def frequency_reweight_ref(delta: torch.Tensor, w_low: float, w_high: float,
                           radius: float) -> torch.Tensor:
    """Reference implementation of FasterCache's frequency reweighting of a guidance delta.

    delta: [B, C, H, W]. Frequencies within `radius * min(H, W)` (an integer, at least 1) of DC
    (the centre after fftshift) are scaled by w_low, the rest by w_high. Returns [B, C, H, W].
    """
    h, w = delta.shape[-2:]
    r = max(1, int(radius * min(h, w)))
    fy = torch.fft.fftfreq(h, d=1.0 / h, device=delta.device)  # signed integer frequencies
    fx = torch.fft.fftfreq(w, d=1.0 / w, device=delta.device)
    low = fy[:, None] ** 2 + fx[None, :] ** 2 <= r * r  # [H, W]
    gain = torch.where(low, w_low, w_high).to(torch.float32)
    spectrum = torch.fft.fft2(delta.float()) * gain  # [B, C, H, W] complex
    return torch.fft.ifft2(spectrum).real.to(delta.dtype)


class CFGCache:
    """Guidance state of `batch_size` requests that started together (one row each).

    `to_grid` / `from_grid` map a row's output to an image grid [B, C, H, W] and back; they are
    needed only by the FasterCache reweighting.

    Example::

        cache = CFGCache(CFGCachePolicy.every(3), num_steps=20, guidance_scale=4.0, batch_size=B)
        for step in range(20):
            rows = cache.uncond_rows(step)
            cond, uncond = forward(x, rows)           # uncond only for `rows`
            guided = cache.guide(step, cond, uncond, rows)
    """

    def __init__(self, policy: CFGCachePolicy, num_steps: int, guidance_scale: float,
                 batch_size: int, to_grid: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 from_grid: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        policy.check(num_steps)
        if policy.reweights and (to_grid is None or from_grid is None):
            raise ValueError("FasterCache reweighting (alpha_low/alpha_high != 1) needs "
                             "to_grid/from_grid to see the output as an image")
        self.policy = policy
        self.num_steps = num_steps
        self.scale = float(guidance_scale)
        self.batch_size = batch_size
        self.to_grid, self.from_grid = to_grid, from_grid
        self.delta: torch.Tensor | None = None  # [B, ...] cond - uncond of each row's last run
        self.prev_delta: torch.Tensor | None = None  # the run before (for extrapolation)
        self.last_step: list[int] = [-1] * batch_size
        self.prev_step: list[int | None] = [None] * batch_size
        self.gated = [False] * batch_size
        self.num_uncond_rows = 0  # rows the uncond branch actually ran, over all steps

    @property
    def needs_uncond(self) -> bool:
        """False when guidance is a no-op (scale 1): the uncond branch never runs."""
        return self.scale != 1.0

    def uncond_rows(self, step: int) -> list[int]:
        """Rows that must run the unconditional branch at `step`. No side effects."""
        if not self.needs_uncond:
            return []
        return [b for b in range(self.batch_size) if self.policy.runs_uncond(step, self.gated[b])]

    def guide(self, step: int, cond: torch.Tensor, uncond: torch.Tensor | None,
              rows: list[int]) -> torch.Tensor:
        """Guided output [B, ...] from cond [B, ...] and uncond [len(rows), ...] for `rows` (as
        returned by `uncond_rows(step)`); caches the new deltas of those rows."""
        assert rows == self.uncond_rows(step), "rows must be uncond_rows(step)"
        if not self.needs_uncond:
            return cond
        if rows:
            assert uncond is not None and uncond.shape[0] == len(rows)
            idx = torch.tensor(rows, device=cond.device)
            fresh = cond.index_select(0, idx) - uncond  # [R, ...]
            if self.delta is None:
                self.delta = torch.zeros_like(cond)
            if self.policy.extrapolate:
                if self.prev_delta is None:
                    self.prev_delta = torch.zeros_like(cond)
                self.prev_delta.index_copy_(0, idx, self.delta.index_select(0, idx))
                for b in rows:
                    self.prev_step[b] = self.last_step[b] if self.last_step[b] >= 0 else None
            self.delta.index_copy_(0, idx, fresh)
            for b in rows:
                self.last_step[b] = step
            self.num_uncond_rows += len(rows)
            if self.policy.gate_cos is not None:
                self._update_gates(rows, cond.index_select(0, idx), uncond)
        assert self.delta is not None, "step 0 must run the unconditional branch"
        delta = self.delta
        coeffs = [self.policy.extrapolation(step, self.last_step[b], self.prev_step[b])
                  for b in range(self.batch_size)]
        if any(coeffs):
            c = torch.tensor(coeffs, dtype=delta.dtype, device=delta.device)
            delta = delta + c.view(-1, *[1] * (delta.dim() - 1)) * (delta - self.prev_delta)
        if len(rows) < self.batch_size and self.policy.reweights:
            w_low, w_high = self.policy.delta_weights(step, self.num_steps)
            if (w_low, w_high) != (1.0, 1.0):
                reused = self.from_grid(frequency_reweight_ref(
                    self.to_grid(delta), w_low, w_high, self.policy.freq_radius))
                fresh_rows = torch.zeros(self.batch_size, dtype=torch.bool, device=cond.device)
                fresh_rows[rows] = True
                delta = torch.where(fresh_rows.view(-1, *[1] * (cond.dim() - 1)), delta, reused)
        guided = cond + (self.scale - 1.0) * delta
        dropped = [b for b in range(self.batch_size)
                   if b not in rows and self.policy.drops(step, self.gated[b])]
        if dropped:
            idx = torch.tensor(dropped, device=cond.device)
            guided.index_copy_(0, idx, cond.index_select(0, idx))
        return guided

    def _update_gates(self, rows: list[int], cond: torch.Tensor, uncond: torch.Tensor) -> None:
        cos = torch.nn.functional.cosine_similarity(cond.flatten(1).float(),
                                                    uncond.flatten(1).float(), dim=1)
        for b, c in zip(rows, cos.tolist()):
            if c >= self.policy.gate_cos:
                self.gated[b] = True
