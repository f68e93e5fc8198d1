"""Verification of a draft block: greedy exact, or rejection sampling with the draft as proposal."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vibekit.ops.sampling import sampling_probs


def accept_greedy(draft: Sequence[int], target_ids: Sequence[int]) -> list[int]:
    """Greedy verification.

    target_ids[i] is the model's argmax after the prefix + draft[:i] (len(draft) + 1 entries).
    Returns the emitted tokens: the longest prefix of `draft` that equals the model's own choices,
    then the model's token at the first disagreement (or after the whole draft). This is exactly
    what plain greedy decoding would emit.
    """
    n = 0
    while n < len(draft) and draft[n] == target_ids[n]:
        n += 1
    return list(draft[:n]) + [target_ids[n]]


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    e = torch.empty(probs.shape[-1], device=probs.device).exponential_(generator=generator)
    return int((probs / e).argmax())


def accept_sampling(draft: Sequence[int], logits: torch.Tensor, temperature: float, top_k: int,
                    top_p: float, generator: torch.Generator | None) -> list[int]:
    """Speculative sampling with a deterministic proposal (the prediction).

    logits: [len(draft) + 1, V], row i scoring the position of draft[i] (the last row: the bonus
    position). With proposal q = one-hot(draft[i]), the acceptance rule min(1, p/q) accepts
    draft[i] with probability p(draft[i]); on rejection the replacement is drawn from the residual
    max(p - q, 0) renormalized, i.e. p with draft[i] removed. The emitted tokens are therefore
    distributed exactly as plain sampling from p (temperature, top-k and top-p included).
    """
    rows = logits.shape[0]
    probs = sampling_probs(
        logits,
        torch.full((rows,), float(temperature), device=logits.device),
        torch.full((rows,), int(top_k), dtype=torch.int64, device=logits.device),
        torch.full((rows,), float(top_p), device=logits.device),
    )
    out: list[int] = []
    for i, token in enumerate(draft):
        p = probs[i]
        u = float(torch.rand((), generator=generator, device=p.device))
        if u < float(p[token]):
            out.append(int(token))
            continue
        residual = p.clone()
        residual[token] = 0.0
        out.append(_draw(residual / residual.sum(), generator))
        return out
    out.append(_draw(probs[len(draft)], generator))
    return out
