"""Numba njit kernels for the CPU: local-pairing persistence and the matching solvers."""
