"""The torch ops that batch_invariant=True keeps (RMSNorm, RoPE, SiLU-and-mul, softmax sampling
probabilities) compute each row alone: a row is bit-identical whatever the number of rows in
the call or the thread count (vibekit/runtime/invariant.py relies on it)."""

from __future__ import annotations

import pytest
import torch

from vibekit.ops import apply_rope, rms_norm, rope_cos_sin_cache, rope_inv_freq, silu_and_mul
from vibekit.ops.linear import cpu_kernel_available, linear, pack_linear
from vibekit.ops.sampling import sampling_probs

DTYPES = [torch.float32, torch.bfloat16]
ROWS = [1, 2, 7, 64, 129, 700]  # decode, verify blocks, prefill chunks
WIDTHS = [99, 576, 989, 1536]


def _rows_alone_and_together(fn, x: torch.Tensor, rows=tuple(ROWS)) -> None:
    """fn(x[3:4]) == fn(x[:m])[3:4] bitwise for every row count m in `rows`, on 1 and 2
    threads."""
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            alone = fn(x[3:4])
            for m in rows:
                batch = x[:max(m, 4)]
                assert torch.equal(fn(batch)[3:4], alone), f"{m} rows, {n} threads"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_rms_norm_rows_are_batch_invariant(dtype, width):
    x = torch.randn(700, width).to(dtype)
    weight = torch.rand(width).to(dtype) + 0.5
    _rows_alone_and_together(lambda t: rms_norm(t, weight, 1e-5), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_silu_and_mul_rows_are_batch_invariant(dtype, width):
    _rows_alone_and_together(silu_and_mul, torch.randn(700, 2 * width).to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 80])
def test_rope_rows_are_batch_invariant(dtype, head_dim):
    cos, sin = rope_cos_sin_cache(rope_inv_freq(head_dim, 10000.0), 1024)
    q = torch.randn(700, 9, head_dim).to(dtype)
    k = torch.randn(700, 3, head_dim).to(dtype)
    positions = torch.randint(0, 1024, (700,))

    def both(rows):  # rows [n, 1]: which tokens
        idx = rows[:, 0]
        q_out, k_out = apply_rope(q[idx], k[idx], positions[idx], cos, sin)
        return torch.cat([q_out.flatten(1), k_out.flatten(1)], dim=1)

    _rows_alone_and_together(both, torch.arange(700)[:, None])


def test_sampling_probabilities_rows_are_batch_invariant():
    logits = torch.randn(129, 49152) * 3

    def probs(t):
        n = t.shape[0]
        return sampling_probs(t, torch.full((n,), 0.8), torch.full((n,), 40, dtype=torch.int64),
                              torch.full((n,), 0.9))

    _rows_alone_and_together(probs, logits, rows=(1, 2, 7, 64, 129))


@pytest.mark.skipif(not cpu_kernel_available(), reason="AVX512 linear kernel unavailable")
@pytest.mark.parametrize("dtype", DTYPES)
def test_lm_head_rows_are_batch_invariant(dtype):
    # The tied head of the SmolLM shape (49152 x 576) on the packed kernel, float32 logits.
    packed = pack_linear((torch.randn(49152, 576) * 0.05).to(dtype), keep_weight=False)
    _rows_alone_and_together(lambda t: linear(t, packed, backend="cpu").float(),
                             torch.randn(65, 576).to(dtype), rows=(1, 2, 7, 65))
