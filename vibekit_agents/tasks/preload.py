"""Imported once by the sandbox's forkserver so that children start with these loaded."""

import tokenizers  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import vibekit  # noqa: F401
import vibekit.models  # noqa: F401

# Build (or import the cached build of) every CPU kernel here, before any child installs its
# audit hook: a build spawns the compiler and writes the kernel cache, which the judge records as
# a candidate's spawn and a write outside its scratch folder.
from vibekit.ops.build_kernels import build_all  # noqa: E402

build_all()
