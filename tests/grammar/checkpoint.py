"""Build a tiny llama checkpoint whose folder also holds a BPE tokenizer trained here."""

from __future__ import annotations

import json
import random

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .schemas import SCHEMAS

EOS = "<|endoftext|>"
TOKENIZER_VOCAB = 600
MODEL_VOCAB = 640  # padded past the tokenizer, as many real checkpoints are


def training_text(seed: int = 0) -> list[str]:
    """JSON-ish lines (keys and enum values of the schema suite, numbers, dates) and prose."""
    rng = random.Random(seed)
    words = set()
    for schema in SCHEMAS.values():
        text = json.dumps(schema)
        words.update(w for w in text.replace('"', " ").replace(",", " ").split() if w.isalpha())
    words = sorted(words)
    lines = [json.dumps(s, separators=(",", ":")) for s in SCHEMAS.values()]
    for _ in range(400):
        obj = {rng.choice(words): rng.choice([rng.randint(0, 9999), rng.choice(words),
                                               round(rng.uniform(-100, 100), 2), None, True])
               for _ in range(rng.randint(1, 5))}
        lines.append(json.dumps(obj, separators=(",", ":")))
        lines.append(json.dumps(obj))
    lines += [json.__doc__ or "", random.__doc__ or "", "The quick brown fox jumps over it."] * 3
    return lines


def make_bpe_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(training_text(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                   clean_up_tokenization_spaces=False)


def make_bpe_checkpoint(path, seed: int = 0, eos_token: str | None = None):
    """Save the model (float32, eval) and the tokenizer to `path`; returns both. eos_token: the
    token the config names as eos_token_id (default: the tokenizer's EOS)."""
    tokenizer = make_bpe_tokenizer()
    eos = tokenizer.eos_token_id
    if eos_token is not None:
        eos = tokenizer.convert_tokens_to_ids(eos_token)
    config = transformers.LlamaConfig(
        vocab_size=MODEL_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=eos, pad_token_id=eos,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # std 1 embeddings: varied greedy output (see tests/runtime/conftest)
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.lm_head.weight.normal_(0.0, 0.125)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer
