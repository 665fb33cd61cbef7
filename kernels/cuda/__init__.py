"""Numba-CUDA kernels (local-pairing persistence, matching) and their launch glue."""
