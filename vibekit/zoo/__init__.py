"""The zoo: tiny models trained in this repository from data that ships with Python or a PyPI
package, loadable by name. Each entry maps a name to a loader "module:function"; the module is
imported only when that model is loaded, and keyword arguments go to the loader.

    import vibekit.zoo
    vibekit.zoo.names()                                   # ("digits-flow", ...)
    model = vibekit.zoo.load("digits-flow")               # torch UnifiedFlowModel
    mlx_model = vibekit.zoo.load("digits-flow", backend="mlx")

To add a model: put its package (loader + weights) under vibekit/zoo/ and add one line to ZOO.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import MappingProxyType
from typing import Any

_ROOT = Path(__file__).resolve().parent

# name -> (loader "module:function", one-line description)
ZOO: MappingProxyType[str, tuple[str, str]] = MappingProxyType({
    "digits-flow": ("vibekit.zoo.digits_flow:load",
                    "unified text+image flow model, sklearn digits 16x16, prompts like "
                    "'a handwritten 7'"),
    "code-edit-tiny": ("vibekit.zoo.code_edit:load",
                       "Llama, 4.5M parameters, trained to edit Python snippets (rename, change a "
                       "literal, delete/insert/replace a line): copies well, edits rarely; "
                       "prompts: vibekit.zoo.code_edit"),
    "asr-tiny": ("vibekit.zoo.asr_tiny:load",
                 "MoonshineStreaming speech recognizer, 2.6M parameters, trained on espeak-ng "
                 "speech of random English word sequences (held-out WER 30% with the training "
                 "voices, 62% with an unseen voice); returns (model, processor) of HF "
                 "transformers; see vibekit.zoo.asr_tiny"),
})


def names() -> tuple[str, ...]:
    """The registered model names."""
    return tuple(ZOO)


def describe(name: str) -> str:
    """The one-line description of `name`."""
    return _entry(name)[1]


def load(name: str, **kwargs: Any) -> Any:
    """Load zoo model `name`; `kwargs` go to its loader (e.g. backend="mlx", device="cuda")."""
    module_name, _, func = _entry(name)[0].partition(":")
    return getattr(importlib.import_module(module_name), func)(**kwargs)


def path(name: str) -> Path:
    """The HF checkpoint folder of zoo model `name` (vibekit/zoo/<name>/, holding config.json);
    `Engine.from_pretrained("zoo:<name>")` loads it. Raises for models that are not HF folders."""
    _entry(name)
    folder = _ROOT / name.removeprefix("zoo:")
    if not (folder / "config.json").is_file():
        raise ValueError(f"zoo model {name!r} is not an HF checkpoint folder; "
                         f"load it with vibekit.zoo.load({name!r})")
    return folder


def _entry(name: str) -> tuple[str, str]:
    if name.startswith("zoo:"):
        name = name[len("zoo:"):]
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(ZOO)}")
    return ZOO[name]


__all__ = ["ZOO", "describe", "load", "names", "path"]
