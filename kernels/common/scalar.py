"""Scalar logic shared by the CPU backend and the CUDA kernels.

Each function here is a plain ``numba.njit`` function: the CPU backend calls it from
``njit`` code and the Numba-CUDA kernels call it from device code, so the rules it encodes
(the strict pixel order, union-find) are written once.

The strict order of the tie rule (see :func:`satloss_gpu.cubical_persistence`): pixel ``a``
precedes pixel ``b`` when
``(value[a], a) < (value[b], b)`` lexicographically. For float32 images the pair packs into
one uint64 key (order-preserving bits of the value, then the index), which sorts and
compares, and works with 64-bit atomics, without a global sort.
"""
from __future__ import annotations

from numba import njit, uint32

__all__ = [
    "precedes",
    "float32_ordered_bits",
    "find_root",
]

@njit(inline="always", cache=True)
def precedes(value_a, index_a, value_b, index_b) -> bool:
    """Whether pixel a comes strictly before pixel b in the (value, index) order.

    Written without short-circuits so that compilers emit branch-free code.
    """
    return (value_a < value_b) | ((value_a == value_b) & (index_a < index_b))


@njit(inline="always", cache=True)
def float32_ordered_bits(bits):
    """Map the raw bits of a finite float32 to a uint32 with the same order.

    Negative numbers have all bits flipped, non-negative ones only the sign bit, so that
    unsigned comparison of the results equals float comparison of the inputs
    (``-0.0`` and ``0.0`` map to neighbouring keys; callers normalise ``-0.0`` first).
    """
    bits = uint32(bits)
    if bits & uint32(0x80000000):
        return uint32(~bits)
    return uint32(bits | uint32(0x80000000))


@njit(inline="always", cache=True)
def find_root(parent, x):
    """Root of ``x`` in the union-find forest ``parent``, halving the path on the way."""
    while parent[x] != x:
        grandparent = parent[parent[x]]
        parent[x] = grandparent
        x = grandparent
    return x
