"""Sampling from logits: greedy, temperature, top-k, top-p, with a generator per row."""

from __future__ import annotations

import torch

from vibekit.ops.registry import register, resolve


def apply_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """Mask logits [S, V] outside each row's top-k (k <= 0: off) and top-p nucleus (p >= 1: off).

    The nucleus is the smallest set of most likely tokens whose probability reaches top_p; the
    most likely token is always kept. Rows with neither (the default) are returned as they are,
    without the sort: on a CPU, sorting a 16 x 4096 batch cost ~3 ms, 6x a decode step of the zoo
    model. (Before this, top_p = 1 also dropped the tail tokens whose preceding cumulative mass
    rounded to 1.0 in float32; "off" now means off.)
    """
    vocab = logits.shape[-1]
    top_k, top_p = top_k.to(logits.device), top_p.to(logits.device)
    active = ((top_k > 0) & (top_k < vocab)) | (top_p < 1)
    if not bool(active.any()):
        return logits  # no row masks anything: skip the sort (most of the cost)
    if not bool(active.all()):
        rows = torch.nonzero(active).flatten()
        out = logits.clone()
        out[rows] = apply_top_k_top_p(logits[rows], top_k[rows], top_p[rows])
        return out
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    k = torch.where(top_k <= 0, vocab, top_k.clamp(max=vocab))
    ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
    remove = ranks >= k.unsqueeze(1)
    probs = sorted_logits.masked_fill(remove, float("-inf")).softmax(dim=-1)
    cum_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    remove |= cum_before >= top_p.unsqueeze(1)
    remove[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, sorted_idx, sorted_logits)


def sampling_probs(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """The distribution that `sample_ref` draws from: softmax of the tempered, top-k / top-p
    masked logits.

    Rows with temperature 0 get a one-hot at the argmax. logits [S, V] -> probs [S, V] float32.
    """
    logits = logits.float()
    greedy = temperature <= 0
    t = torch.where(greedy, torch.ones_like(temperature), temperature).to(logits.device)
    probs = apply_top_k_top_p(logits / t.unsqueeze(1), top_k, top_p).softmax(dim=-1)
    if bool(greedy.any()):
        one_hot = torch.zeros_like(probs)
        one_hot.scatter_(1, logits.argmax(dim=-1, keepdim=True), 1.0)
        probs = torch.where(greedy.to(logits.device).unsqueeze(1), one_hot, probs)
    return probs


def sample_ref(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
    generators: list[torch.Generator | None],
) -> torch.Tensor:
    """Reference implementation of sampling.

    logits: [S, V]; temperature: [S] float (0 = greedy); top_k: [S] int (<= 0 = off);
    top_p: [S] float (1 = off); generators: S generators (None: torch's default generator).
    Each row draws with the exponential race argmax(p / E), E ~ Exp(1) from its own generator, so
    a seeded request samples the same tokens whatever else is in the batch. Returns [S] int64.
    """
    greedy = temperature <= 0
    out = logits.argmax(dim=-1)
    if bool(greedy.all()):
        return out
    probs = sampling_probs(logits, temperature, top_k, top_p)
    for i in torch.nonzero(~greedy).flatten().tolist():
        e = torch.empty(probs.shape[1], device=probs.device).exponential_(generator=generators[i])
        out[i] = (probs[i] / e).argmax()
    return out


def sample(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
    generators: list[torch.Generator | None], backend: str = "auto",
) -> torch.Tensor:
    """Sample one token per row of logits [S, V]; see `sample_ref`. Backends: ref."""
    return resolve("sample", backend, logits.device)(logits, temperature, top_k, top_p,
                                                     generators)


register("sample", "ref", sample_ref)
