"""Numba njit kernels for the CPU: basin persistence and sparse shortest augmenting paths."""
