"""Sampling: greedy, top-k / top-p masks, per-request seeds, and the law of the drawn tokens."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from vibekit.ops import sample, sampling_probs
from vibekit.ops.sampling import apply_top_k_top_p


def _logits(num_rows: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(num_rows, vocab, generator=torch.Generator().manual_seed(seed))


def _params(num_rows: int, temperature: float, top_k: int = 0, top_p: float = 1.0):
    return (torch.full((num_rows,), temperature), torch.full((num_rows,), top_k),
            torch.full((num_rows,), top_p))


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_greedy_rows_take_the_argmax_even_beside_sampled_rows():
    logits = _logits(7, 99)
    temperature = torch.tensor([0.0, 1.0, 0.0, 0.7, 0.0, 2.0, 0.0])
    top_k, top_p = torch.zeros(7, dtype=torch.int64), torch.ones(7)
    out = sample(logits, temperature, top_k, top_p, _generators(range(7)))
    greedy = temperature == 0
    assert torch.equal(out[greedy], logits.argmax(dim=-1)[greedy])
    assert out.dtype == torch.int64 and out.shape == (7,)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_top_k_of_one_is_greedy(temperature):
    logits = _logits(19, 99, seed=1)
    out = sample(logits, *_params(19, temperature, top_k=1), _generators(range(19)))
    assert torch.equal(out, logits.argmax(dim=-1))


def test_a_seeded_request_draws_the_same_tokens_whatever_else_is_in_the_batch():
    mine = _logits(1, 99, seed=2)
    others = _logits(4, 99, seed=3)

    def draws(batch_logits, row, seeds, steps=20):
        gens = _generators(seeds)
        temperature = torch.tensor([0.9, 1.5, 0.0, 1.0, 0.6][: len(seeds)])
        temperature[row] = 1.2
        top_k = torch.tensor([0, 5, 0, 3, 0][: len(seeds)])
        top_k[row] = 0
        top_p = torch.tensor([1.0, 0.8, 1.0, 0.5, 0.9][: len(seeds)])
        top_p[row] = 0.95
        return [int(sample(batch_logits, temperature, top_k, top_p, gens)[row])
                for _ in range(steps)]

    alone = draws(mine, 0, [1234])
    in_a_batch = draws(torch.cat([others[:2], mine, others[2:]]), 2, [7, 8, 1234, 9, 10])
    assert alone == in_a_batch
    assert len(set(alone)) > 1  # it really samples
    assert draws(mine, 0, [4321]) != alone  # and the seed matters


def _kept_plain(logits_row: list[float], top_k: int, top_p: float) -> set[int]:
    """Top-k, then the smallest set of most likely tokens whose renormalized mass reaches top_p."""
    order = sorted(range(len(logits_row)), key=lambda i: -logits_row[i])
    if top_k > 0:
        order = order[:top_k]
    top = logits_row[order[0]]
    weights = [math.exp(logits_row[i] - top) for i in order]
    total = sum(weights)
    kept, mass = set(), 0.0
    for i, w in zip(order, weights):
        kept.add(i)
        mass += w / total
        if mass >= top_p:
            break
    return kept


def _kept_hf(logits_row: torch.Tensor, top_k: int, top_p: float) -> set[int]:
    scores = logits_row[None].clone()
    if top_k > 0:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return set(torch.nonzero(scores[0].isfinite()).flatten().tolist())


def test_top_k_top_p_masks_match_a_plain_implementation_and_hf_warpers():
    settings = [(k, p) for k in (0, 1, 5, 50, 70) for p in (1.0, 0.95, 0.5, 0.01)]
    logits = _logits(len(settings), 50, seed=4) / 2  # flatter: nuclei of many sizes
    top_k = torch.tensor([k for k, _ in settings])
    top_p = torch.tensor([p for _, p in settings])
    masked = apply_top_k_top_p(logits, top_k, top_p)
    for row, (k, p) in enumerate(settings):
        kept = set(torch.nonzero(masked[row].isfinite()).flatten().tolist())
        assert kept == _kept_plain(logits[row].double().tolist(), k, p), (k, p)
        assert kept == _kept_hf(logits[row], k, p), (k, p)
        assert torch.equal(masked[row][list(kept)], logits[row][list(kept)])


def test_sampling_probs_are_the_tempered_softmax_over_the_kept_tokens():
    logits = _logits(3, 30, seed=5)
    temperature, top_k, top_p = torch.tensor([0.7, 1.0, 0.0]), torch.tensor([4, 0, 0]), \
        torch.tensor([1.0, 0.6, 1.0])
    probs = sampling_probs(logits, temperature, top_k, top_p)
    for row in range(2):
        kept = sorted(_kept_plain((logits[row] / temperature[row]).double().tolist(),
                                  int(top_k[row]), float(top_p[row])))
        expected = torch.zeros(30)
        expected[kept] = (logits[row, kept] / temperature[row]).softmax(dim=-1)
        torch.testing.assert_close(probs[row], expected)
    assert probs[2].argmax() == logits[2].argmax() and probs[2].max() == 1.0


def _chi2_quantile(df: int, z: float = 3.719) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile at normal quantile z (1e-4)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_sample_frequencies_match_sampling_probs():
    num_draws, vocab = 4000, 8
    logits = _logits(1, vocab, seed=6).expand(num_draws, vocab)
    temperature, top_k, top_p = _params(num_draws, 1.5, top_k=6, top_p=0.97)
    probs = sampling_probs(logits[:1], temperature[:1], top_k[:1], top_p[:1])[0]
    tokens = sample(logits, temperature, top_k, top_p, _generators(range(num_draws)))
    counts = torch.bincount(tokens, minlength=vocab).double()
    support = probs > 0
    assert counts[~support].sum() == 0, "a masked token was drawn"
    assert int(support.sum()) >= 3, "the test needs a spread-out distribution"
    expected = num_draws * probs[support].double()
    chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
    assert chi2 < _chi2_quantile(int(support.sum()) - 1), (chi2, counts, expected)


def test_rows_without_top_k_or_top_p_are_left_as_they_are_and_the_others_masked_alone():
    torch.manual_seed(3)
    logits = torch.randn(5, 300)
    off_k, off_p = torch.zeros(5, dtype=torch.int64), torch.ones(5)
    assert apply_top_k_top_p(logits, off_k, off_p) is logits  # nothing to mask: no sort
    top_k = torch.tensor([0, 7, 0, 300, 2])
    top_p = torch.tensor([1.0, 1.0, 0.5, 1.0, 0.9])
    mixed = apply_top_k_top_p(logits, top_k, top_p)
    for i in range(5):
        alone = apply_top_k_top_p(logits[i:i + 1], top_k[i:i + 1], top_p[i:i + 1])[0]
        assert torch.equal(mixed[i], alone)
    assert torch.equal(mixed[0], logits[0]) and torch.equal(mixed[3], logits[3])
    assert int(torch.isfinite(mixed[1]).sum()) == 7 and int(torch.isfinite(mixed[4]).sum()) <= 2
