"""Compiled code of satloss-gpu, installed as ``satloss_gpu.kernels``; imports nothing else of it.

``common``: scalar rules written once as ``numba.njit`` functions (keys, neighbours, matching
scalars), called by both targets; ``cpu``: Numba njit kernels; ``cuda``: Numba-CUDA kernels and
their launch glue. Kernels assume valid, contiguous input: the library validates.
"""
