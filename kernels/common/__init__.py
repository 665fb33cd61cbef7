"""Scalar rules shared by the CPU kernels and the CUDA kernels (plain ``numba.njit`` functions)."""
