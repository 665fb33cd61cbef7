"""Numba kernels compiled for the CPU."""
