"""Numba-CUDA kernels (local-pairing persistence, matching) and their launch glue."""
from . import _compat  # noqa: F401  (before any kernel compiles: NumPy aliases numba-cuda needs)
