"""The byte-level tokenizer that dummy models ship with."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from vibekit.models import byte_level_tokenizer

TEXT = "Héllo, wörld!\n\tdef f(x):  return x → ∞ 🙂"


def test_every_byte_is_one_token_and_text_round_trips():
    tok = byte_level_tokenizer(512)
    ids = tok.encode(TEXT)
    assert ids == list(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT


def test_special_tokens_follow_the_bytes_and_eos_is_endoftext():
    tok = byte_level_tokenizer(300)
    assert tok.eos_token_id == tok.pad_token_id == 256
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [257, 258]
    assert tok.encode("hi<|endoftext|>") == [104, 105, 256]
    assert tok.decode([104, 105, 256], skip_special_tokens=True) == "hi"


def test_ids_past_the_tokenizer_decode_to_nothing():
    tok = byte_level_tokenizer(49152)
    assert tok.decode([104, 300, 49151, 105]) == "hi"


def test_chat_template_is_chatml():
    tok = byte_level_tokenizer(512)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_save_pretrained_reloads_with_auto_tokenizer(tmp_path):
    byte_level_tokenizer(512).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.encode(TEXT) == list(TEXT.encode("utf-8"))
    assert tok.eos_token_id == 256


def test_vocab_too_small_for_the_bytes_is_rejected():
    with pytest.raises(ValueError, match="needs >= 259"):
        byte_level_tokenizer(256)
