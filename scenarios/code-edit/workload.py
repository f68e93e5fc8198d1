"""Code-edit workload: edit a real source file; the file (or a near copy of the answer) is the
prediction.

Two modes ("auto" picks "derived" for dummy weights, "file" otherwise):
  "file"     prompt = an edit instruction + a snippet of a real stdlib file, prediction = the
             snippet. Meaningful with a model that follows edit instructions (the zoo code model;
             its instruction forms are used when vibekit.zoo.code_edit is installed).
  "derived"  for dummy (random) weights, which never copy their input: the prediction is the
             model's own plain greedy output with controlled edits applied (token "lines" changed,
             inserted or deleted at `edit_density`). Clearly a synthetic proxy: it measures how
             verification copes with edits of a given density, not how well a model edits code.
"""

from __future__ import annotations

import random
import re
import sysconfig
from pathlib import Path
from typing import Any

INSTRUCTIONS = (
    "Rename the variable `{old}` to `{new}`.",
    "Add a docstring to the first function.",
    "Replace tabs with four spaces and keep everything else unchanged.",
    "Fix any typo in the comments; keep the code unchanged.",
)


def stdlib_snippets(seed: int, n: int, num_lines: int = 40) -> list[tuple[str, str]]:
    """n (file name, snippet) pairs: windows of `num_lines` lines from stdlib .py files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 4000)
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        path = rng.choice(files)
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if len(lines) <= num_lines:
            continue
        start = rng.randrange(0, len(lines) - num_lines)
        snippet = "\n".join(lines[start:start + num_lines]) + "\n"
        if snippet.strip():
            out.append((path.name, snippet))
    return out


_KEYWORDS = frozenset("""False None True and as assert async await break class continue def
del elif else except finally for from global if import in is lambda nonlocal not or pass raise
return self try while with yield""".split())


def zoo_instruction(code: str, rng: random.Random) -> str | None:
    """An instruction in a form the zoo code-edit model was trained on, valid for `code`:
    rename an identifier, change a literal that occurs once, or delete a line that occurs once."""
    words = [w for w in re.findall(r"\b[A-Za-z_][A-Za-z0-9_]{2,}\b", code) if w not in _KEYWORDS]
    numbers = [n for n in re.findall(r"\b\d+\b", code) if code.count(n) == 1]
    lines = [ln.strip() for ln in code.splitlines()
             if ln.strip() and "`" not in ln and [x.strip() for x in code.splitlines()].count(
                 ln.strip()) == 1]
    choices = []
    if words:
        old = rng.choice(sorted(set(words)))
        choices.append(f"rename `{old}` to `{old}_{rng.choice(('new', 'v2', 'tmp'))}`")
    if numbers:
        choices.append(f"change `{rng.choice(numbers)}` to `{rng.randrange(2, 99)}`")
    if lines:
        choices.append(f"delete the line `{rng.choice(lines)}`")
    return rng.choice(choices) if choices else None


def edit_prompt(instruction: str, code: str) -> str:
    try:  # the zoo code model's own prompt format, when it is installed
        from vibekit.zoo.code_edit import make_edit_prompt
    except ImportError:
        return f"{instruction}\n\n```python\n{code}```\n\nThe edited file:\n\n```python\n"
    return make_edit_prompt(instruction, code)


def _zoo_format() -> bool:
    try:
        import vibekit.zoo.code_edit  # noqa: F401
    except ImportError:
        return False
    return True


def apply_line_edits(ids: list[int], density: float, rng: random.Random, vocab: int,
                     line_len: int = 12) -> list[int]:
    """Edit a token list as if it were lines of `line_len` tokens: each line is changed, deleted
    or followed by an inserted line with total probability `density`."""
    out: list[int] = []
    for start in range(0, len(ids), line_len):
        line = ids[start:start + line_len]
        if rng.random() >= density:
            out += line
            continue
        kind = rng.choice(("change", "delete", "insert"))
        if kind == "change":
            line = list(line)
            for i in rng.sample(range(len(line)), max(1, len(line) // 4)):
                line[i] = rng.randrange(vocab)
            out += line
        elif kind == "insert":
            out += line + [rng.randrange(vocab) for _ in range(line_len)]
    return out


def model_unfit(model: str, num_lines: int = 40, max_tokens: int = 256, dtype: str = "float32",
                model_seed: int = 0, n: int = 3, min_similarity: float = 0.6,
                **_: Any) -> str | None:
    """Why `model` cannot serve file mode (None when it can): plain greedy outputs of a few edit
    tasks must resemble the file they edit (difflib similarity >= min_similarity on average).
    A model that does not follow edit instructions would make the prediction worthless and the
    scenario meaningless, so the harness then falls back to the declared fallback model."""
    import difflib

    from vibekit import Engine, SamplingParams

    requests = make_requests(1234, n, mode="file", num_lines=num_lines, max_tokens=max_tokens)
    engine = Engine.from_pretrained(model, dtype=dtype, seed=model_seed,
                                    enable_prefix_caching=False)
    outs = engine.generate([r["prompt"] for r in requests],
                           SamplingParams(max_tokens=max_tokens, temperature=0.0))
    sims = [difflib.SequenceMatcher(None, o.text, r["prediction"]["content"][:len(o.text) + 1]
                                    if o.finish_reason == "length"
                                    else r["prediction"]["content"]).ratio()
            for o, r in zip(outs, requests)]
    mean = sum(sims) / len(sims)
    if mean < min_similarity:
        return (f"its greedy edits resemble the edited files only {mean:.0%} on average (needs "
                f"{min_similarity:.0%}): it does not follow edit instructions yet")
    return None


def make_requests(seed: int, n: int, mode: str = "file", edit_density: float = 0.05,
                  num_lines: int = 40, max_tokens: int = 256, model: str | None = None,
                  dtype: str = "float32", model_seed: int = 0, **_: Any) -> list[dict[str, Any]]:
    """Requests in the OpenAI completion shape: prompt, max_tokens, temperature 0 and
    `prediction` ({"type": "content", "content": text}; derived mode uses token ids under
    "content_token_ids" because random-weight output is not valid text)."""
    if mode == "auto":
        mode = "derived" if model is not None and model.startswith("dummy:") else "file"
    if mode not in ("file", "derived"):
        raise ValueError(f"mode must be 'auto', 'file' or 'derived', got {mode!r}")
    if not 0.0 <= edit_density <= 1.0:
        raise ValueError(f"edit_density must be in [0, 1], got {edit_density}")
    rng = random.Random(seed)
    requests = []
    for name, code in stdlib_snippets(seed, n, num_lines):
        instruction = None
        if mode == "file" and _zoo_format():
            instruction = zoo_instruction(code, rng)
        if instruction is None:
            instruction = rng.choice(INSTRUCTIONS).format(old="x", new="value")
        if _zoo_format():
            from vibekit.zoo.code_edit import normalize_code

            code = normalize_code(code)
        requests.append({
            "prompt": edit_prompt(instruction, code),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "prediction": {"type": "content", "content": code},
            "metadata": {"file": name, "mode": mode, "edit_density": edit_density},
        })
    if mode == "derived":
        if model is None:
            raise ValueError("derived mode needs the model source to produce plain greedy outputs")
        from vibekit import Engine, SamplingParams

        engine = Engine.from_pretrained(model, dtype=dtype, enable_prefix_caching=False,
                                        max_model_len=4096, seed=model_seed)
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        plain = engine.generate([r["prompt"] for r in requests], params)
        vocab = engine.model_config.vocab_size
        for req, out in zip(requests, plain):
            pred = apply_line_edits(out.token_ids, edit_density, rng, vocab)
            req["prediction"] = {"type": "content", "content_token_ids": pred}
            req["ignore_eos"] = True
    return requests
