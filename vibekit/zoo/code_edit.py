"""Prompt format of the `zoo:code-edit-tiny` model (a small Llama trained here to edit code).

A training sequence is::

    <|edit|> {instruction}\\n<|original|>\\n{code}<|edited|>\\n{edited code}<|endoftext|>

where `code` and the edited code end with a newline. The model answers with the whole edited
code, so the natural prediction for predicted outputs is the original code itself. The weights
(vibekit/zoo/code-edit-tiny/, an HF Llama folder) come from scripts/train_code_model.py; their
held-out evaluation is "Zoo code model" in benchmarks/RESULTS.md.

Instructions the model was trained on (backticks are literal)::

    rename `old_name` to `new_name`              every whole-word occurrence
    change `42` to `7`                            a literal that occurs once
    delete the line `x = 1`                       a line (stripped) that occurs once
    insert `y = 2` after the line `x = 1`         same indent (one level deeper after a ':')
    replace the line `x = 1` with `x = 3`         keeps the line's indent
"""

from __future__ import annotations

from typing import Any

EDIT_TOKEN = "<|edit|>"
ORIGINAL_TOKEN = "<|original|>"
EDITED_TOKEN = "<|edited|>"
EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (EOS_TOKEN, EDIT_TOKEN, ORIGINAL_TOKEN, EDITED_TOKEN)


def normalize_code(code: str) -> str:
    """`code` with exactly one trailing newline (the model's outputs always end with one)."""
    return code.rstrip("\n") + "\n"


def make_edit_prompt(instruction: str, code: str) -> str:
    """The prompt asking the code-edit model to apply `instruction` to `code`.

    The model then generates the edited code (ending with a newline) and `<|endoftext|>`.
    Pass `normalize_code(code)` as the prediction for predicted outputs. Example::

        prompt = make_edit_prompt("rename `n` to `count`", "def f(n):\\n    return n + 1\\n")
    """
    if "\n" in instruction:
        raise ValueError("instruction must be a single line; got one containing a newline")
    return f"{EDIT_TOKEN} {instruction}\n{ORIGINAL_TOKEN}\n{normalize_code(code)}{EDITED_TOKEN}\n"


def load(**options: Any) -> Any:
    """An Engine on zoo:code-edit-tiny; `options` go to `Engine.from_pretrained`."""
    from vibekit import Engine

    return Engine.from_pretrained("zoo:code-edit-tiny", **options)
