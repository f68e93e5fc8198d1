"""Triton kernels (CUDA; CPU under TRITON_INTERPRET=1). Imported lazily by the dispatchers."""
