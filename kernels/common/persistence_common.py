"""Scalar rules of the GPU persistence pipeline, as ``njit`` functions callable from kernels.

One persistence *problem* is the H0 computation of one image in one pass: the primal pass
(sublevel order, dimension 0) or the dual pass (reversed order with a frame, dimension 1).
Every pixel of a problem has a 64-bit key that sorts in the pass's strict order:

* primal: ``(order_word << 32) | (index << 3)``,
* dual:   ``(~order_word << 32) | ((INDEX_LIMIT - index) << 3)``,

where ``order_word`` (uint32) is the order-preserving bit pattern of a float32 value, or the
rank + 1 of a float64 value inside its image (exact for every dtype). The dual key therefore
reverses ``(value, index)`` exactly. The frame of the dual pass has key 0 and precedes every
pixel. An edge between pixels ``v`` (the later one) and ``u`` has the key of ``v`` with the
neighbour slot ``k`` (0..7) of ``u`` in the low 3 bits: edge keys are unique, compare like the
pixel order of their weight pixel, and decode back to ``(v, k)``. The all-ones word
:data:`NO_EDGE` is never a valid key (float order words are below ``0xFF800001``, ranks + 1
are at least 1 and at most ``2**29``).
"""
from __future__ import annotations

from numba import njit, int64, uint64

from .scalar import neighbor_offset

__all__ = [
    "INDEX_LIMIT",
    "MAX_PIXELS",
    "NO_EDGE",
    "pixel_key",
    "key_pixel",
    "edge_slot",
    "neighbor_pixel",
    "pass_connectivity",
]

#: Largest pixel index a key can carry (29 bits).
INDEX_LIMIT = (1 << 29) - 1
#: Most pixels per image the keys support.
MAX_PIXELS = INDEX_LIMIT + 1
#: Sentinel "no edge" key (all bits set); never produced by :func:`pixel_key`.
NO_EDGE = (1 << 64) - 1


@njit(inline="always", cache=True)
def pixel_key(order_word, index, dual):
    """uint64 key of pixel ``index`` in the primal (``dual == 0``) or dual order."""
    word = uint64(order_word)
    if dual != 0:
        high = word ^ uint64(0xFFFFFFFF)
        low = uint64(INDEX_LIMIT) - uint64(index)
    else:
        high = word
        low = uint64(index)
    return (high << uint64(32)) | (low << uint64(3))


@njit(inline="always", cache=True)
def key_pixel(key, dual):
    """Pixel index stored in a pixel or edge key of the given pass."""
    low = int64((uint64(key) >> uint64(3)) & uint64(INDEX_LIMIT))
    if dual != 0:
        return int64(INDEX_LIMIT) - low
    return low


@njit(inline="always", cache=True)
def edge_slot(key):
    """Neighbour slot ``k`` (0..7) stored in the low bits of an edge key."""
    return int64(uint64(key) & uint64(7))


@njit(inline="always", cache=True)
def neighbor_pixel(index, k, height, width):
    """Flat index of neighbour ``k`` of pixel ``index``, or -1 outside the image."""
    row = index // width
    col = index - row * width
    drow, dcol = neighbor_offset(k)
    row += drow
    col += dcol
    if row < 0 or row >= height or col < 0 or col >= width:
        return int64(-1)
    return int64(row * width + col)


@njit(inline="always", cache=True)
def pass_connectivity(connectivity, dual):
    """Connectivity of a pass: the construction's for H0, the complementary one for H1."""
    if dual != 0:
        return 12 - connectivity
    return connectivity
