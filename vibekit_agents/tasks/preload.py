"""Imported once by the sandbox's forkserver so that children start with these loaded."""

import tokenizers  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import vibekit  # noqa: F401
import vibekit.models  # noqa: F401
