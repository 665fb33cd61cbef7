"""Numba-CUDA kernels (persistence pipeline, matching) and their launch glue."""
