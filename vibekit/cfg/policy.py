"""CFGCachePolicy: on which denoising (or decode) steps the unconditional branch runs, and what
stands in for it on the steps it is skipped. Pure Python; shared by the torch and MLX paths.

Classifier-free guidance with scale s combines the two branches as
    guided = cond + (s - 1) * delta,        delta = cond - uncond
(equal to uncond + s * (cond - uncond)). On a step that skips the unconditional branch the cached
delta of the last step that ran it is reused ("reuse"), optionally reweighted by frequency band
(FasterCache), or guidance is dropped altogether ("drop", Adaptive Guidance).

The variants, as the literature has them:
  full CFG           uncond on every step (the reference).
  every k            uncond on the first `warmup_steps` steps, then every `interval` steps; the
                     delta is reused in between (FasterCache's CFG-Cache, without reweighting).
  FasterCache        the same schedule; the reused delta's low frequencies are scaled by
                     `alpha_low` in the early part of sampling and its high frequencies by
                     `alpha_high` in the late part (Lv et al. 2024, Eq. 9-11; defaults as in
                     diffusers' FasterCacheConfig: 1.1 and 1.1).
  extrapolated       any schedule, with the reused delta extrapolated linearly from the last two
                     steps that ran uncond (first order, as LinearAG in Castillo et al. 2023 and
                     TaylorSeer predict skipped outputs from earlier ones), never further ahead
                     than the gap between those two steps.
  gate               full guidance until `gate_step`, then no more uncond: reuse the last delta
                     or drop guidance (Adaptive Guidance, Castillo et al. 2023, which gates on
                     the cosine similarity of the two branches: `gate_cos`).
"""

from __future__ import annotations

from dataclasses import dataclass

AFTER_GATE = ("reuse", "drop")


@dataclass(frozen=True)
class CFGCachePolicy:
    """When to run the unconditional branch (the default is full CFG: every step).

    interval      after the warmup, run uncond every `interval` steps and reuse the cached delta
                  in between (1 = every step).
    warmup_steps  run uncond on each of the first `warmup_steps` steps.
    gate_step     from this step on never run uncond (None: no fixed gate).
    gate_cos      adaptive gate: stop running uncond for a request once the cosine similarity of
                  its cond and uncond outputs reaches this value (None: off).
    after_gate    past a gate: "reuse" the last delta, or "drop" guidance (cond only).
    alpha_low, alpha_high   FasterCache weights of the reused delta's low / high frequencies,
                  applied while the step's progress (step / num_steps) lies in `low_range` /
                  `high_range` (1.0 and 1.0: plain reuse).
    freq_radius   the low band: frequencies within `freq_radius * min(H, W)` of DC.
    extrapolate   reuse a linear extrapolation of the last two deltas instead of the last one.

    Example::

        CFGCachePolicy()                                  # full CFG
        CFGCachePolicy.every(3, warmup_steps=4)           # uncond on steps 0-3, 4, 7, 10, ...
        CFGCachePolicy.fastercache(interval=3, warmup_steps=4)
        CFGCachePolicy.gate(gate_step=10, after_gate="drop")   # Adaptive Guidance
    """

    interval: int = 1
    warmup_steps: int = 0
    gate_step: int | None = None
    gate_cos: float | None = None
    after_gate: str = "reuse"
    alpha_low: float = 1.0
    alpha_high: float = 1.0
    low_range: tuple[float, float] = (0.1, 0.9)
    high_range: tuple[float, float] = (0.7, 1.0)
    freq_radius: float = 0.2
    extrapolate: bool = False

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.gate_step is not None and self.gate_step < 1:
            raise ValueError(f"gate_step must be >= 1 (step 0 always runs uncond), "
                             f"got {self.gate_step}")
        if self.gate_cos is not None and not -1.0 <= self.gate_cos <= 1.0:
            raise ValueError(f"gate_cos must be in [-1, 1], got {self.gate_cos}")
        if self.after_gate not in AFTER_GATE:
            raise ValueError(f"after_gate must be one of {AFTER_GATE}, got {self.after_gate!r}")
        for name in ("alpha_low", "alpha_high"):
            if not 0.0 <= getattr(self, name) <= 4.0:
                raise ValueError(f"{name} must be in [0, 4], got {getattr(self, name)}")
        for name in ("low_range", "high_range"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")
        if not 0.0 < self.freq_radius <= 1.0:
            raise ValueError(f"freq_radius must be in (0, 1], got {self.freq_radius}")

    # -- presets --------------------------------------------------------------------------------

    @classmethod
    def full(cls) -> CFGCachePolicy:
        """Full CFG: the unconditional branch on every step."""
        return cls()

    @classmethod
    def every(cls, interval: int, warmup_steps: int = 0,
              extrapolate: bool = False) -> CFGCachePolicy:
        """Uncond on the first `warmup_steps` steps, then every `interval` steps; reuse the delta
        (extrapolated from the last two when `extrapolate`)."""
        return cls(interval=interval, warmup_steps=warmup_steps, extrapolate=extrapolate)

    @classmethod
    def fastercache(cls, interval: int = 2, warmup_steps: int = 0, alpha_low: float = 1.1,
                    alpha_high: float = 1.1) -> CFGCachePolicy:
        """FasterCache's CFG-Cache: `every` with the frequency-reweighted delta."""
        return cls(interval=interval, warmup_steps=warmup_steps, alpha_low=alpha_low,
                   alpha_high=alpha_high)

    @classmethod
    def gate(cls, gate_step: int | None = None, gate_cos: float | None = None,
             after_gate: str = "drop") -> CFGCachePolicy:
        """Full guidance until a gate (a fixed step, or when cond and uncond agree to
        `gate_cos`), then `after_gate`: "drop" (Adaptive Guidance) or "reuse" the delta."""
        if gate_step is None and gate_cos is None:
            raise ValueError("gate needs gate_step or gate_cos")
        return cls(interval=1, gate_step=gate_step, gate_cos=gate_cos, after_gate=after_gate)

    # -- per-step decisions ---------------------------------------------------------------------

    @property
    def is_full(self) -> bool:
        """Uncond on every step whatever the step count."""
        return self.interval == 1 and self.gate_step is None and self.gate_cos is None

    @property
    def reweights(self) -> bool:
        return self.alpha_low != 1.0 or self.alpha_high != 1.0

    def check(self, num_steps: int) -> None:
        """Raise ValueError if the policy does not fit `num_steps` steps (no side effects)."""
        if self.interval > num_steps:
            raise ValueError(f"cache interval {self.interval} is larger than the step count "
                             f"{num_steps}; use an interval <= {num_steps}")
        if self.warmup_steps > num_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} is larger than the step count "
                             f"{num_steps}")
        if self.gate_step is not None and self.gate_step > num_steps:
            raise ValueError(f"gate_step {self.gate_step} is larger than the step count "
                             f"{num_steps}")

    def runs_uncond(self, step: int, gated: bool = False) -> bool:
        """Whether step `step` runs the unconditional branch (`gated`: the adaptive gate of this
        request has closed). Step 0 always runs it, so a delta exists before any reuse."""
        if step == 0:
            return True
        if gated or (self.gate_step is not None and step >= self.gate_step):
            return False
        if step < self.warmup_steps:
            return True
        return (step - self.warmup_steps) % self.interval == 0

    def drops(self, step: int, gated: bool = False) -> bool:
        """Whether a step that skips uncond uses no guidance at all (past a "drop" gate)."""
        past_gate = gated or (self.gate_step is not None and step >= self.gate_step)
        return past_gate and self.after_gate == "drop"

    def extrapolation(self, step: int, last: int, prev: int | None) -> float:
        """The coefficient c of a delta reused at `step` whose row last ran uncond at `last`
        and before that at `prev`: delta = d_last + c * (d_last - d_prev). 0 without
        `extrapolate` or a second delta; at most 1 (no further ahead than last - prev)."""
        if not self.extrapolate or prev is None or step <= last:
            return 0.0
        return min((step - last) / (last - prev), 1.0)

    def delta_weights(self, step: int, num_steps: int) -> tuple[float, float]:
        """FasterCache's (low, high) frequency weights for a delta reused at `step`."""
        progress = step / num_steps
        w_low = self.alpha_low if self.low_range[0] <= progress < self.low_range[1] else 1.0
        w_high = self.alpha_high if self.high_range[0] <= progress <= self.high_range[1] else 1.0
        return w_low, w_high

    def num_uncond_steps(self, num_steps: int) -> int:
        """Steps that run uncond without an adaptive gate (an upper bound with `gate_cos`)."""
        return sum(self.runs_uncond(step) for step in range(num_steps))
