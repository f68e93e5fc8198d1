"""The MLX llama family (vibekit.models.mlx) matches HF transformers and vibekit's torch model:
logits of every prompt position, ragged batches, a prefill continued over cached KV pages
(float32 on both sides; the gap is rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_reference import FAMILIES, hf_logits, make_hf_checkpoint
from test_llama_vs_hf import PROMPT, vibekit_logits

mx = pytest.importorskip("mlx.core")

from vibekit.kvcache.mlx import MLXPagedKVCache  # noqa: E402
from vibekit.models import load_model  # noqa: E402
from vibekit.models.mlx import load_mlx_model  # noqa: E402
from vibekit.ops.mlx import AttentionPlan  # noqa: E402

ATOL = 1e-4


class MLXPages:
    """Sequence i owns pages i * 64 .. : each step feeds some sequences one chunk."""

    def __init__(self, model, page_size: int = 4) -> None:
        self.model = model
        self.page_size = page_size
        self.cache = MLXPagedKVCache(model.cache_spec().kv, 64 * 8, page_size)
        self.lens: dict[int, int] = {}

    def step(self, chunks: dict[int, list[int]]) -> list[np.ndarray]:
        ids, q_lens, kv_lens, tables, rows = [], [], [], [], []
        for seq, chunk in chunks.items():
            start = self.lens.get(seq, 0)
            self.lens[seq] = start + len(chunk)
            rows += range(len(ids), len(ids) + len(chunk))
            ids += chunk
            q_lens.append(len(chunk))
            kv_lens.append(start + len(chunk))
            tables.append([seq * 64 + p for p in range(64)])
        plan = AttentionPlan.build(q_lens, kv_lens, tables, self.page_size)
        logits = self.model(mx.array(ids), plan, mx.array(rows), self.cache.kv_caches)
        out = np.array(logits)
        split = np.cumsum(q_lens)[:-1]
        return np.split(out, split)


def close(got: np.ndarray, expected: torch.Tensor) -> None:
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mlx_logits_match_hf_and_torch_for_every_prompt_position(tmp_path, family):
    path = make_hf_checkpoint(tmp_path, family)
    expected = hf_logits(path, PROMPT)
    assert expected.std() > 0.5  # near-zero logits could not fail the test
    model, config, _ = load_mlx_model(path, "float32")
    [got] = MLXPages(model).step({0: PROMPT})
    close(got, expected)
    torch_model, _, _ = load_model(path, torch.float32, "cpu")
    [torch_got] = vibekit_logits(torch_model, torch.float32, [[PROMPT]])
    close(got, torch_got)


@pytest.mark.parametrize("family", ["llama3", "qwen3", "qwen2"])
def test_mlx_ragged_batch_and_chunked_prefill_match_hf(tmp_path, family):
    path = make_hf_checkpoint(tmp_path, family)
    model, _, _ = load_mlx_model(path, "float32")
    pages = MLXPages(model, page_size=4)
    prompts = [PROMPT, PROMPT[3:10][::-1], [7]]
    # Step 1: sequence 0's first 11 tokens beside the whole of 1 and 2; step 2: the rest of 0
    # (over its cached pages, starting mid-page) beside one decode token of 1.
    first = pages.step({0: PROMPT[:11], 1: prompts[1], 2: prompts[2]})
    second = pages.step({0: PROMPT[11:], 1: [123]})
    close(np.concatenate([first[0], second[0]]), hf_logits(path, PROMPT))
    close(np.concatenate([first[1], second[1]]), hf_logits(path, prompts[1] + [123]))
    close(first[2], hf_logits(path, prompts[2]))


def test_dummy_sources_load_the_torch_paths_weights():
    model, config, tok = load_mlx_model("dummy:tiny-llama", "float32", seed=3)
    torch_model, _, _ = load_model("dummy:tiny-llama", torch.float32, "cpu", seed=3)
    [got] = MLXPages(model).step({0: PROMPT})
    [expected] = vibekit_logits(torch_model, torch.float32, [[PROMPT]])
    close(got, expected)
    assert tok is not None and config.model_type == "llama"


def test_hybrid_and_unknown_sources_are_refused_with_what_is_supported(tmp_path):
    with pytest.raises(ValueError, match="dense llama family"):
        load_mlx_model("dummy:tiny-bamba")
    with pytest.raises(ValueError, match="HF checkpoint folder"):
        load_mlx_model(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="not supported on MLX"):
        load_mlx_model("dummy:tiny-llama", quantization="int8")
