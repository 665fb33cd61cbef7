"""CPU (Numba) kernels."""
