"""Imported once by the sandbox's forkserver so that children start with these loaded."""

import tokenizers  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import vibekit  # noqa: F401
import vibekit.models  # noqa: F401

# Build (or import the cached build of) the CPU linear kernel here, before any child installs
# its audit hook: a build spawns the compiler, which the judge records as a candidate's spawn.
from vibekit.ops.linear import cpu_kernel_available  # noqa: E402

cpu_kernel_available()
