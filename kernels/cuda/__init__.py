"""Numba-CUDA kernels of the GPU persistence backend (``backend="cuda"``)."""
