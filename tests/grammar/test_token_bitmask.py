"""apply_token_bitmask: the reference against a plain loop, every backend against the reference."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vibekit.ops.token_bitmask import apply_token_bitmask, apply_token_bitmask_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [
    "ref",
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(
        importlib.util.find_spec("triton") is None, reason="triton not installed")),
    pytest.param("xgrammar", marks=pytest.mark.skipif(
        importlib.util.find_spec("xgrammar") is None, reason="xgrammar not installed")),
    "auto",
]


def _case(num_rows, vocab, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, vocab, generator=g).to(dtype)
    bitmask = torch.randint(-2**31, 2**31 - 1, (num_rows, -(-vocab // 32)), dtype=torch.int32,
                            generator=g)
    return logits.to(DEVICE), bitmask.to(DEVICE)


def test_reference_sets_exactly_the_forbidden_tokens_to_minus_inf():
    logits, bitmask = _case(3, 70, torch.float32)
    out = apply_token_bitmask_ref(logits.clone(), bitmask).cpu()
    for i in range(3):
        for j in range(70):
            allowed = (int(bitmask[i, j // 32]) >> (j % 32)) & 1
            assert out[i, j] == (logits[i, j].cpu() if allowed else float("-inf"))


def test_reference_masks_only_the_given_rows():
    logits, bitmask = _case(4, 33, torch.float32)
    out = apply_token_bitmask_ref(logits.clone(), bitmask, torch.tensor([3, 1], device=DEVICE))
    assert torch.equal(out[[0, 2]], logits[[0, 2]])
    assert torch.equal(out[[1, 3]], apply_token_bitmask_ref(logits.clone(), bitmask)[[1, 3]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vocab", [1, 19, 99, 989])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", ["all", "some"])
def test_backend_matches_reference(backend, vocab, dtype, rows):
    if backend == "xgrammar" and vocab < 32:
        with pytest.raises(ValueError, match="V >= 32"):
            apply_token_bitmask(*_case(2, vocab, dtype), backend=backend)
        return
    logits, bitmask = _case(5, vocab, dtype, seed=vocab)
    indices = None if rows == "all" else torch.tensor([4, 0, 2], device=DEVICE)
    expected = apply_token_bitmask_ref(logits.clone(), bitmask, indices)
    out = apply_token_bitmask(logits.clone(), bitmask, indices, backend=backend)
    assert torch.equal(out, expected)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="no .cuda. backend; it has: auto, ref, torch, triton, xg"):
        apply_token_bitmask(*_case(1, 40, torch.float32), backend="cuda")
