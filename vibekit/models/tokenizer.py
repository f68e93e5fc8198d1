"""A byte-level tokenizer built in code, for dummy models (no files, no downloads)."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (EOS_TOKEN, "<|im_start|>", "<|im_end|>")
# ChatML, so chat requests work against dummy models.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: ids 0..255 are the bytes, then the specials.

    Ids 256, 257, 258 are <|endoftext|> (eos and pad), <|im_start|>, <|im_end|>; it has a ChatML
    chat template. `vocab_size` is the model's vocab (>= 259); ids past the tokenizer's 259
    decode to "". Example::

        tok = byte_level_tokenizer(512)
        tok.encode("héllo")            # [104, 195, 169, 108, 108, 111]
        tok.decode([104, 105, 256])    # "hi<|endoftext|>"
        tok.eos_token_id               # 256
    """
    num_tokens = 256 + len(SPECIAL_TOKENS)
    if vocab_size < num_tokens:
        raise ValueError(f"vocab_size {vocab_size} is too small for the byte-level tokenizer; "
                         f"it needs >= {num_tokens} (256 bytes + {len(SPECIAL_TOKENS)} specials)")
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    byte_to_char = _bytes_to_unicode()
    assert sorted(alphabet) == sorted(byte_to_char.values())
    vocab = {byte_to_char[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
        chat_template=CHAT_TEMPLATE, model_max_length=1 << 30,
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-character map (what the ByteLevel pre-tokenizer emits)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}
