"""A tiny random checkpoint with a real BPE tokenizer saved beside it, so HF transformers and
vibekit load the same folder; Triton kernels run under the interpreter when there is no CUDA."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("xgrammar")
pytest.importorskip("jsonschema")

from .checkpoint import make_bpe_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def bpe_ckpt(tmp_path_factory):
    """(path, hf_model, tokenizer): llama with vocab 640 over a 600-token byte-level BPE."""
    path = tmp_path_factory.mktemp("bpe_llama")
    model, tokenizer = make_bpe_checkpoint(path)
    return path, model, tokenizer


@pytest.fixture(scope="session")
def bpe_engine(bpe_ckpt):
    from vibekit import Engine

    path, _, _ = bpe_ckpt
    # xgrammar: these tests compare with HF generate + xgrammar's logits processor, and their
    # schemas leave additionalProperties open, which only xgrammar's strict mode closes.
    return Engine.from_pretrained(path, page_size=8, num_pages=1024, max_model_len=512,
                                  max_num_seqs=64, grammar_backend="xgrammar")
