"""zoo:code-edit-tiny: one folder, identical greedy output in vibekit and HF transformers."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vibekit import Engine, SamplingParams, zoo
from vibekit.zoo.code_edit import EOS_TOKEN, make_edit_prompt, normalize_code

NAME = "code-edit-tiny"

CODE = '''def mean(values):
    total = 0
    for value in values:
        total += value
    return total / len(values)
'''

PROMPTS = [
    make_edit_prompt("rename `total` to `acc`", CODE),
    make_edit_prompt("change `0` to `0.0`", CODE),
    make_edit_prompt("delete the line `return total / len(values)`", CODE),
    make_edit_prompt("insert `print(value)` after the line `for value in values:`", CODE),
]


@pytest.fixture(scope="module")
def folder():
    """The trained checkpoint, vibekit/zoo/code-edit-tiny/ (scripts/train_code_model.py)."""
    return zoo.path(NAME)


def test_folder_is_an_hf_checkpoint_within_size_budget(folder):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert (folder / name).is_file(), name
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 20 * 2**20
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == EOS_TOKEN and tok.bos_token == EOS_TOKEN
    assert tok.convert_tokens_to_ids(EOS_TOKEN) == config["eos_token_id"]


def test_unknown_zoo_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.path("no-such-model")
    with pytest.raises(ValueError, match="unknown zoo model"):
        Engine.from_pretrained("zoo:digits_flow")


def test_prompt_format():
    assert make_edit_prompt("delete the line `x = 1`", "x = 1\ny = 2") == (
        "<|edit|> delete the line `x = 1`\n<|original|>\nx = 1\ny = 2\n<|edited|>\n"
    )
    assert normalize_code("a\n\n") == "a\n"
    with pytest.raises(ValueError, match="single line"):
        make_edit_prompt("two\nlines", "x = 1")


def test_vibekit_and_hf_give_identical_greedy_output(folder):
    engine = Engine.from_pretrained(f"zoo:{NAME}", dtype="float32", device="cpu")
    outs = engine.generate(PROMPTS, SamplingParams(max_tokens=80, temperature=0.0))

    tok = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    for prompt, out in zip(PROMPTS, outs):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert out.prompt_token_ids == ids
        with torch.inference_mode():
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=80, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        ref_ids = ref[0, len(ids):].tolist()
        if tok.eos_token_id in ref_ids:  # both end with the EOS token they stop on
            ref_ids = ref_ids[:ref_ids.index(tok.eos_token_id) + 1]
        assert out.token_ids == ref_ids, prompt


def test_model_copies_the_unedited_code(folder):
    engine = Engine.from_pretrained(f"zoo:{NAME}", dtype="float32", device="cpu")
    outs = engine.generate(PROMPTS, SamplingParams(max_tokens=80, temperature=0.0))
    # every edit leaves the first line alone, and the last one except for the rename
    for out in outs:
        assert out.text.startswith("def mean(values):\n"), out.text
    for prompt, out in zip(PROMPTS[1:], outs[1:]):
        if "delete" not in prompt:
            assert out.text.endswith("    return total / len(values)\n"), out.text


def test_zoo_lists_and_describes_the_model():
    assert NAME in zoo.names() and "Python snippets" in zoo.describe(NAME)
    assert (zoo.path(f"zoo:{NAME}") / "config.json").is_file()
