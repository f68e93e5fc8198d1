"""The direct calls into the Rust tokenizer backend give exactly HF's ids and text."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import transformers

import vibekit
from vibekit.core.tokenize import text_decoder, text_encoder
from vibekit.models.tokenizer import byte_level_tokenizer
from vibekit.runtime.output_processor import IncrementalDetokenizer

ZOO_CODE = Path(vibekit.__file__).parent / "zoo" / "code-edit-tiny"


@pytest.fixture(scope="module")
def zoo_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(ZOO_CODE)


def _sequences(tok, n: int, seed: int = 0) -> list[list[int]]:
    """Random ids, encoded text with non-ASCII characters, and special tokens mixed in."""
    rng = random.Random(seed)
    vocab = len(tok)
    special = list(tok.all_special_ids)
    text = "déjà vu: naïve café — 日本語 ✓ def f(x):\n    return x"
    out = [tok.encode(text, add_special_tokens=False)]
    for _ in range(n):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 40))]
        if special and rng.random() < 0.5:
            ids.insert(rng.randrange(len(ids) + 1), rng.choice(special))
        out.append(ids)
    return out


def test_the_fast_decoder_gives_hf_decode_text(zoo_tokenizer):
    decode = text_decoder(zoo_tokenizer)
    assert decode.func == zoo_tokenizer._tokenizer.decode  # the fast path was taken
    for ids in _sequences(zoo_tokenizer, 300):
        assert decode(ids) == zoo_tokenizer.decode(ids, skip_special_tokens=True)


def test_incremental_text_is_the_same_on_the_fast_and_the_hf_path(zoo_tokenizer):
    slow = lambda ids: zoo_tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    for seq in _sequences(zoo_tokenizer, 100, seed=1):
        prompt, output = seq[:3], seq[3:]
        fast_d = IncrementalDetokenizer(zoo_tokenizer, prompt)
        slow_d = IncrementalDetokenizer(zoo_tokenizer, prompt, slow)
        ids = list(prompt)
        for token in output:
            ids.append(token)
            assert fast_d.step(ids) == slow_d.step(ids)
        assert fast_d.text == slow_d.text


def test_tokenizers_that_clean_up_spaces_keep_hf_decode(zoo_tokenizer, tmp_path):
    zoo_tokenizer.save_pretrained(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, clean_up_tokenization_spaces=True)
    decode = text_decoder(tok)
    assert decode.func == tok.decode  # HF's decode does the clean-up: not bypassed
    ids = tok.encode("a , b . c", add_special_tokens=False)
    assert decode(ids) == tok.decode(ids, skip_special_tokens=True)


def test_other_tokenizers_go_through_their_decode():
    class Plain:
        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(97 + i % 26) for i in ids)

    tok = Plain()
    assert text_decoder(tok)([0, 1, 2]) == "abc"
    d = IncrementalDetokenizer(tok, [0])
    assert d.step([0, 1]) == "b"


TEXTS = ["", " ", "hello world", "  leading and trailing  ", "déjà vu: naïve café — 日本語 ✓",
         "def f(x):\n\treturn x  # <|endoftext|> inside", "<|endoftext|><|edited|>a<|endoftext|>",
         "\n\n\r\n\x00\x7f", "emoji 🙂🙂 and combining é"]


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_the_fast_encoder_gives_hf_ids(zoo_tokenizer, add_special_tokens):
    encode = text_encoder(zoo_tokenizer, add_special_tokens)
    assert hasattr(encode, "backend")  # the fast path was taken
    rng = random.Random(2)
    texts = TEXTS + ["".join(rng.choice("ab <|>()\n\té日") for _ in range(rng.randint(1, 60)))
                     for _ in range(200)]
    for text in texts:
        assert encode(text) == zoo_tokenizer(text, add_special_tokens=add_special_tokens)[
            "input_ids"], text


def test_the_byte_tokenizer_of_dummy_models_takes_the_fast_paths_exactly():
    tok = byte_level_tokenizer(512)
    encode, decode = text_encoder(tok), text_decoder(tok)
    assert hasattr(encode, "backend")
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert encode(text) == ids
        assert decode(ids) == tok.decode(ids, skip_special_tokens=True)


def test_a_backend_that_truncates_or_splits_specials_keeps_hf_encode(zoo_tokenizer, tmp_path):
    zoo_tokenizer.save_pretrained(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    encode = text_encoder(tok)
    text = "a<|endoftext|>b c d e f"
    tok._tokenizer.enable_truncation(4)  # HF's call turns it off; the backend's would not
    assert encode(text) == tok(text)["input_ids"]
    assert len(encode(text)) > 4
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, split_special_tokens=True)
    encode = text_encoder(tok)
    assert encode(text) == tok(text)["input_ids"]
    tok._tokenizer.encode_special_tokens = False  # as a call with split_special_tokens=False
    assert encode(text) == tok(text)["input_ids"]
