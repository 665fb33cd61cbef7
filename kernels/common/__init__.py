"""Scalar rules shared by the CPU and CUDA kernels, as plain ``numba.njit`` functions."""
