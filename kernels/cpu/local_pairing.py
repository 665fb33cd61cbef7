"""The CPU persistence core: local pairing, critical edges only, one sort for H0 and H1.

Per image (see :mod:`satloss_gpu.kernels.common.local_pairing` for the complex and the rule):

1. The first and last pixels of the (value, index) order, by an integer reduction.
2. One raster pass, row by row: every pixel's neighbourhood mask (inner pixels branch-free,
   border pixels with the shared scalar function), the rule's code, then the gradient
   parents of the owned corners, the dual parent of the square, and the critical edges: a
   sort key (the order-preserving bits of the pixel's value) and a payload
   ``4 * pixel + side``. Generated in raster order, so a stable sort orders them by
   (value, pixel, side).
3. Numbering: one branch-free pass over the corner parents and one over the square parents
   give the critical corners and squares numbers 1, 2, ... in raster order, hence in pixel
   order (0: the exterior corner, the outside square).
4. One pass over the critical edges in raster order: the numbers of the critical cells at
   the ends of the gradient paths of each edge's two corners and two squares (the paths stay
   near the edge, so the cache holds them), packed with the pixel into a 24-byte record.
5. One stable LSD radix sort of the records by key.
6. H0: Kruskal over the sorted records with a union-find over corner numbers (the elder
   rule compares values, then numbers), the records that merge nothing kept, in place, for
   H1.
7. H1: those records in reverse, a union-find over square numbers; the younger square dies.

Memory locality: the passes that follow the sorted order (6, 7) stream over the records and
touch only union-find nodes of 8 or 16 bytes per critical cell (parent and value key side by
side, prefetched a few records ahead on large images), never arrays the size of the image;
steps 2 to 4 visit the image-sized arrays in raster order; the work arrays come from NumPy,
whose large allocations use huge pages (fewer page faults). The plain passes
(:func:`_h0_pass`, :func:`_h1_pass`: the sorted edges' corners and squares looked up in the
image-sized parent arrays, no steps 3 and 4) missed the caches and the TLB at every find on
large images: their H0 pass took 13 ns per pixel on 256 x 256 noise and 54 on 2048 x 2048.
They are still faster while the caches hold those arrays, so images with fewer than
:data:`_NUMBERED_FROM` critical edges (256 x 256 noise, smooth maps up to 2048 x 2048) run
them instead of steps 3 to 7. Times per stage and size: ``bench/persistence_scaling.py``.

The V-construction runs the same steps in the reversed order (see the rule's docstring): the
masks are complemented (``mask ^ 0xFF``), the edges are read from the other end, the elder
rules compare the other way, the outer corners hang from one exterior corner, and the two
passes give the V-construction's H1 and H0 respectively. Nothing else changes.

:func:`image_pairs` runs compiled code with ``nogil=True``; :func:`batch_pairs` runs the images of a
batch on the calling thread and ``numba.get_num_threads() - 1`` helper threads of a cached
``concurrent.futures.ThreadPoolExecutor``. The threads claim images one at a time; idle
helpers block on the pool's queue and never spin; and the calling thread never waits for a
helper: once all images are claimed it computes any image still in a helper's hands itself
(the first result wins). So a core kept busy by another process (a data loader) costs the
batch only that core's share, and a helper that gets no core delays nothing.
Chosen by measurement (8 images of 512 x 512, 2 cores, another process spinning on one core;
wall time, default 2 threads vs 1 thread): a plain pool of 2 workers, 15.5 vs 14.8 ms (8.6 vs
14.9 ms with no other process), but up to 1.3x slower than one thread when other work also
loaded the machine; a ``prange`` over images on Numba's workqueue layer 24.0 vs 28.0 ms (14.7
vs 14.2 idle), on its OpenMP layer 35.0 vs 39.1 ms (22.7 vs 21.8 idle): its workers spin, and
both layers were slower than the pool even on one thread. The scheme above, on the loaded
machine, in three runs: 63 vs 74, 52 vs 79 and 75 vs 83 ms. The two dimensions of one image
are not split over threads: H1 reads the edges that H0 left over.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from llvmlite import ir

from ..common.scalar import find_root, precedes
from ..common.local_pairing import (
    RULE_TABLE,
    neighbour_mask,
    side_corners,
    side_neighbour,
)

__all__ = ["batch_pairs", "image_pairs", "MAX_PIXELS"]

#: Most pixels per image: the edge payload ``4 * pixel + side`` is a uint32.
MAX_PIXELS = 2**30 - 1

_RADIX_BITS = 11
_RADIX = 1 << _RADIX_BITS
_FLIP_V = 0xFF


_RULE_TABLE_V = RULE_TABLE[np.arange(256) ^ _FLIP_V].copy()


@njit(cache=True, nogil=True)
def _inner_row_masks(flat, row, width, out):
    """Masks of pixels ``(row, 1 .. width-2)`` of an inner row, written to ``out[1:width-1]``.

    Direction by direction over slices, without branches, so that the loops vectorise.
    Neighbours 0..3 come before the pixel in raster order: on equal values they precede.
    """
    inner = width - 2
    start = row * width + 1
    centre = flat[start : start + inner]
    masks = out[1 : 1 + inner]
    masks[:] = 0
    for k in range(8):
        slot = k + (k >= 4)
        offset = (slot // 3 - 1) * width + (slot % 3 - 1)
        neighbour = flat[start + offset : start + offset + inner]
        bit = np.uint8(1 << k)
        if k < 4:
            for c in range(inner):
                masks[c] |= bit if neighbour[c] <= centre[c] else np.uint8(0)
        else:
            for c in range(inner):
                masks[c] |= bit if neighbour[c] < centre[c] else np.uint8(0)


@njit(cache=True, nogil=True)
def _row_masks(flat, row, height, width, out):
    """Neighbourhood masks (sublevel order, outside later) of pixel row ``row`` into ``out``."""
    if 0 < row < height - 1 and width > 2:
        _inner_row_masks(flat, row, width, out)
        out[0] = neighbour_mask(flat, 1, False, row, 0, height, width)
        out[width - 1] = neighbour_mask(flat, 1, False, row, width - 1, height, width)
    else:
        for col in range(width):
            out[col] = neighbour_mask(flat, 1, False, row, col, height, width)


@njit(cache=True, nogil=True)
def _extremes(flat, height, width):
    """First and last pixels of the (value, index) order.

    Reduces integer keys of the values (``-0.0`` and ``0.0`` equal) row by row, which
    vectorises, then scans only the rows that hold the extremes.
    """
    bits = _unsigned_bits(flat)
    row_low = np.empty(height, dtype=np.int64)
    row_high = np.empty(height, dtype=np.int64)
    for row in range(height):
        values = bits[row * width : (row + 1) * width]
        low = _value_key(values[0])
        high = low
        for col in range(width):
            key = _value_key(values[col])
            low = min(low, key)
            high = max(high, key)
        row_low[row] = low
        row_high[row] = high
    lowest = row_low[0]
    highest = row_high[0]
    for row in range(height):
        lowest = min(lowest, row_low[row])
        highest = max(highest, row_high[row])
    first_row = 0
    while row_low[first_row] != lowest:
        first_row += 1
    first = first_row * width
    while _value_key(bits[first]) != lowest:
        first += 1
    last_row = height - 1
    while row_high[last_row] != highest:
        last_row -= 1
    last = (last_row + 1) * width - 1
    while _value_key(bits[last]) != highest:
        last -= 1
    return first, last


# Width-specific pieces, chosen while the caller is compiled (from the dtype of the image) so
# that a float32 image compiles only the 32-bit code and a float64 image only the 64-bit one.
# (A branch on ``flat.itemsize`` would compile both.)


def _unsigned_bits(flat):
    """The raw bits of ``flat`` (float32 or float64) as unsigned integers of the same width."""
    raise NotImplementedError("compiled only: see the overload")


def _ordered_key(bits):
    """uint64 with the order of the float whose raw bits are ``bits`` (uint32 or uint64)."""
    raise NotImplementedError("compiled only: see the overload")


def _value_key(bits):
    """Signed integer with the order of the float whose raw bits are ``bits`` (uint32 or
    uint64); ``-0.0 == 0.0``."""
    raise NotImplementedError("compiled only: see the overload")


@overload(_unsigned_bits)
def _unsigned_bits_impl(flat):
    if flat.dtype.bitwidth == 32:
        return lambda flat: flat.view(np.uint32)
    return lambda flat: flat.view(np.uint64)


@overload(_ordered_key)
def _ordered_key_impl(bits):
    if bits.bitwidth == 32:
        return lambda bits: _ordered_bits32(bits)
    return lambda bits: _ordered_bits64(bits)


@overload(_value_key)
def _value_key_impl(bits):
    if bits.bitwidth == 32:
        return lambda bits: _value_key_of(np.int32(bits), np.int32(31), np.int32(0x7FFFFFFF))
    return lambda bits: _value_key_of(np.int64(bits), np.int64(63),
                                      np.int64(0x7FFFFFFFFFFFFFFF))


@njit(inline="always", cache=True)
def _value_key_of(bits, shift, magnitude):
    """:func:`_value_key` of signed ``bits``, the sign bit at ``shift``, ``magnitude`` the rest."""
    sign = bits >> shift
    return (bits ^ (sign & magnitude)) - sign


@njit(inline="always", cache=True)
def _ordered_bits32(bits):
    """uint64 holding the order-preserving uint32 of float32 bits (``-0.0`` as ``0.0``)."""
    b = np.uint64(bits)
    if b == np.uint64(0x80000000):
        b = np.uint64(0)
    if b >> np.uint64(31):
        return b ^ np.uint64(0xFFFFFFFF)
    return b | np.uint64(0x80000000)


@njit(inline="always", cache=True)
def _ordered_bits64(bits):
    """Order-preserving uint64 of float64 bits (``-0.0`` as ``0.0``)."""
    top = np.uint64(1) << np.uint64(63)
    b = np.uint64(bits)
    if b == top:
        b = np.uint64(0)
    if b & top:
        return ~b
    return b | top


@njit(cache=True, nogil=True)
def _decode(flat, height, width, table, corner_parent, square_parent):
    """The raster pass: corner parents, square parents and the critical edges, row by row.

    :func:`_decode_into` with edge buffers of its own; same results.
    """
    capacity = _edge_capacity(height, width)
    return _decode_into(flat, height, width, table, corner_parent, square_parent,
                        np.empty(capacity, dtype=np.uint64), np.empty(capacity, dtype=np.uint32))


@njit(inline="always", cache=True)
def _edge_capacity(height, width):
    """First size of the edge buffers: half a critical edge per pixel (noise has 0.31)."""
    return (height * width) // 2 + 3 * width + 1


@njit(cache=True, nogil=True)
def _decode_into(flat, height, width, table, corner_parent, square_parent, keys, payload):
    """The raster pass: corner parents, square parents and the critical edges, row by row.

    ``corner_parent[c]`` becomes the gradient parent of corner ``c``, ``-(pixel + 1)`` for a
    critical corner born at ``pixel``, or the exterior corner ``(H+1)*(W+1)`` for a corner
    no pixel owns. ``square_parent[v]`` becomes the square across the side ``v`` pairs with
    (``H*W`` for the outside), or ``v`` for a critical square. Corner row ``R`` is decoded
    from the codes of pixel rows ``R-1`` and ``R``: each corner reads its slot in the codes
    of its four squares, of which only the owner's is non-zero (the same decoding as
    :func:`~satloss_gpu.kernels.common.local_pairing.corner_kind` and
    :func:`~satloss_gpu.kernels.common.local_pairing.corner_parent_offset`, written per
    corner so that the loop is branch-free; a test checks the two agree).

    ``keys`` and ``payload`` are the edge buffers to start with (:func:`_edge_capacity` items);
    they grow (new arrays) when the image has more critical edges.

    Returns
    -------
    keys : (m,) uint64
        Order-preserving bits of each critical edge's value.
    payload : (m,) uint32
        ``4 * pixel + side``, in raster order.
    """
    n = height * width
    row_masks = np.empty(width, dtype=np.uint8)
    bits = _unsigned_bits(flat)
    codes = np.zeros((2, width + 2), dtype=np.int32)
    stride = width + 1
    exterior = (height + 1) * stride
    j = np.int64(0)  # not the constant 0: a call with a literal compiles once more
    for row in range(height + 1):
        cur = codes[row & 1]
        prev = codes[(row + 1) & 1]
        if row < height:
            base = row * width
            _row_masks(flat, row, height, width, row_masks)
            for col in range(width):
                cur[col + 1] = table[row_masks[col]]
            row_squares = square_parent[base : base + width]
            top = row == 0
            bottom = row == height - 1
            for col in range(width):
                kind = cur[col + 1] >> 12
                offset = (-width if kind == 0 else (-1 if kind == 1 else
                          (1 if kind == 2 else (width if kind == 3 else 0))))
                outside = (((kind == 0) & top) | ((kind == 3) & bottom)
                           | ((kind == 1) & (col == 0)) | ((kind == 2) & (col == width - 1)))
                row_squares[col] = n if outside else base + col + offset
            if j + 3 * width + 1 > keys.size:
                keys = _grown(keys, 2 * keys.size + 3 * width)
                payload = _grown(payload, keys.size)
            j = _emit_row(bits, cur, base, width, keys, payload, j)
        else:
            cur[:] = 0
        corners = corner_parent[row * stride : row * stride + stride]
        for col in range(stride):
            kind_tl = cur[col + 1] & 3
            kind_tr = (cur[col] >> 2) & 3
            kind_bl = (prev[col + 1] >> 4) & 3
            kind_br = (prev[col] >> 6) & 3
            kind = kind_tl | kind_tr | kind_bl | kind_br
            left = (kind_tr | kind_br) != 0
            up = (kind_bl | kind_br) != 0
            owner = row * width + col - np.int64(left) - width * np.int64(up)
            step = (-1 if left else 1) if kind == 2 else (-stride if up else stride)
            corner = row * stride + col
            corners[col] = (exterior if kind == 0 else
                            (-(owner + 1) if kind == 1 else corner + step))
    return keys[:j], payload[:j]


@njit(inline="always", cache=True)
def _number_row(parent, start, size, n, squares, pixels, count):
    """Number the critical cells of ``parent[start:start+size]``, cells of ``corner_parent``
    or ``square_parent`` as :func:`_decode` writes them, in raster order.

    Critical corners (``-(pixel + 1)``) or critical squares (their own parent) get the next
    numbers and hold ``-(number + 1)`` from then on; ``pixels[number]`` receives the pixel.
    Branch-free. (Also giving a cell its parent's entry where the parent comes earlier, which
    shortens the paths, cost about as much as it saved: each cell then waits for the store of
    the one before.)

    Returns
    -------
    int
        The count of numbers given so far (``count`` plus this row's).
    """
    for c in range(start, start + size):
        entry = np.int64(parent[c])
        if squares:
            critical = entry == c
            pixel = c
        else:
            critical = (entry < 0) & (entry > -(n + 2))
            pixel = -entry - 1
        count += critical
        pixels[count if critical else 0] = pixel
        parent[c] = -(count + 1) if critical else entry
    return count


@njit(cache=True, nogil=True)
def _number_critical(parent, n, squares, pixels):
    """:func:`_number_row` over all of ``parent`` but its last entry (the exterior corner or
    the outside square), which gets number 0.

    Returns
    -------
    int
        Critical cells plus one.
    """
    last = parent.size - 1
    count = _number_row(parent, 0, last, n, squares, pixels, np.int64(0))
    parent[last] = -1
    pixels[0] = 0
    return count + 1


@njit(cache=True, nogil=True)
def _emit_row(bits, codes, base, width, keys, payload, j):
    """Append the critical edges of one row (codes at ``codes[1:width+1]``).

    ``bits`` are the image's float32 (uint32) or float64 (uint64) bits. Writes all four sides
    of a pixel with critical sides and advances past the critical ones only: no branch per
    side. ``keys`` must have room for ``3 * width + 1`` more items.
    """
    for col in range(width):
        sides = (codes[col + 1] >> 8) & 15
        if sides != 0:
            v = base + col
            key = _ordered_key(bits[v])
            for side in range(4):
                keys[j] = key
                payload[j] = np.uint32(4 * v + side)
                j += (sides >> side) & 1
    return j


@njit(cache=True, nogil=True)
def _grown(array, capacity):
    """A copy of ``array`` with room for ``capacity`` items."""
    out = np.empty(capacity, dtype=array.dtype)
    for i in range(array.size):  # a loop: slice assignment compiles a shape check (2 s)
        out[i] = array[i]
    return out


@njit(cache=True, nogil=True)
def _radix_sort(keys, payload, key_bits):
    """``payload`` reordered by a stable LSD radix sort of ``keys``.

    Both inputs are used as scratch space (the result may be either buffer). Digit passes in
    which all keys share the digit are skipped. Measured against ``np.argsort(kind="stable")``
    on the 81,273 critical edges of 512 x 512 noise: 0.59 ms against 5.3 ms.
    """
    m = keys.size
    n_passes = (key_bits + _RADIX_BITS - 1) // _RADIX_BITS
    counts = np.zeros((n_passes, _RADIX), dtype=np.int64)
    mask = np.uint64(_RADIX - 1)
    for i in range(m):
        k = keys[i]
        for p in range(n_passes):
            counts[p, (k >> np.uint64(p * _RADIX_BITS)) & mask] += 1
    keys_tmp = np.empty(m, dtype=np.uint64)
    payload_tmp = np.empty(m, dtype=np.uint32)
    offsets = np.empty(_RADIX, dtype=np.int64)
    for p in range(n_passes):
        if _one_digit(counts[p], m):
            continue
        shift = np.uint64(p * _RADIX_BITS)
        running = 0
        for d in range(_RADIX):
            offsets[d] = running
            running += counts[p, d]
        for i in range(m):
            k = keys[i]
            d = (k >> shift) & mask
            t = offsets[d]
            offsets[d] = t + 1
            keys_tmp[t] = k
            payload_tmp[t] = payload[i]
        keys, keys_tmp = keys_tmp, keys
        payload, payload_tmp = payload_tmp, payload
    return payload


@njit(inline="always", cache=True)
def _one_digit(counts, m):
    """Whether one digit holds all ``m`` keys (a loop: ``counts.max()`` compiles slowly)."""
    full = False
    for d in range(counts.size):
        full |= counts[d] == m
    return full


@njit(inline="always", cache=True)
def _row_of(v, width, inverse_width):
    """``v // width`` without an integer division (exact for ``v < 2**30``)."""
    row = np.int64(v * inverse_width)
    if (row + 1) * width <= v:
        row += 1
    elif row * width > v:
        row -= 1
    return row


@njit(inline="always", cache=True)
def _find_corner(parent, x):
    """Root of corner ``x``: roots hold ``-(birth pixel + 1)``; halves the path."""
    while True:
        p = parent[x]
        if p < 0:
            return x
        g = parent[p]
        if g < 0:
            return p
        parent[x] = g
        x = g


@njit(inline="always", cache=True)
def _birth_older(flat, a, b, exterior, vertex):
    """Whether birth pixel ``a`` is older than ``b`` in the H0 pass (``exterior`` oldest)."""
    if a == exterior:
        return True
    if b == exterior:
        return False
    if vertex:
        return precedes(flat[b], b, flat[a], a)
    return precedes(flat[a], a, flat[b], b)


@njit(cache=True, nogil=True)
def _h0_pass(flat, height, width, edges, corner_parent, vertex, write, out_a, out_b, start):
    """Kruskal over the sorted edges; keeps the edges that merge nothing, in place.

    Pairs are written as (younger birth pixel, edge pixel) at ``out_a/out_b[start:]`` when
    ``write``. The T-construction reads ``edges`` forwards and keeps its leftovers at the
    front; the V-construction reads backwards and keeps them at the back.

    Returns
    -------
    n_pairs, n_left : int
    """
    m = edges.size
    n = height * width
    inverse_width = 1.0 / width
    end = start
    kept = 0
    for t in range(m):
        i = m - 1 - t if vertex else t
        packed = np.int64(edges[i])
        v = packed >> 2
        row = _row_of(v, width, inverse_width)
        a, b = side_corners(row, v - row * width, packed & 3, width)
        ra = _find_corner(corner_parent, a)
        rb = _find_corner(corner_parent, b)
        if ra == rb:
            edges[m - 1 - kept if vertex else kept] = edges[i]
            kept += 1
            continue
        birth_a = -corner_parent[ra] - 1
        birth_b = -corner_parent[rb] - 1
        if _birth_older(flat, birth_a, birth_b, n, vertex):
            corner_parent[rb] = ra
            younger = birth_b
        else:
            corner_parent[ra] = rb
            younger = birth_a
        if write:
            out_a[end] = younger
            out_b[end] = v
            end += 1
    return end - start, kept


@njit(cache=True, nogil=True)
def _h1_pass(flat, height, width, edges, n_left, square_parent, vertex, out_a, out_b, start):
    """The leftover edges in reverse, merging squares; writes (edge pixel, younger square).

    Returns
    -------
    n_pairs : int
    """
    m = edges.size
    n = height * width
    inverse_width = 1.0 / width
    end = start
    for t in range(n_left):
        i = m - n_left + t if vertex else n_left - 1 - t
        packed = np.int64(edges[i])
        v = packed >> 2
        row = _row_of(v, width, inverse_width)
        across = side_neighbour(row, v - row * width, packed & 3, height, width)
        ra = find_root(square_parent, v)
        rb = find_root(square_parent, across if across >= 0 else n)
        if ra == n:
            a_older = True
        elif rb == n:
            a_older = False
        elif vertex:
            a_older = precedes(flat[ra], ra, flat[rb], rb)
        else:
            a_older = precedes(flat[rb], rb, flat[ra], ra)
        if a_older:
            square_parent[rb] = ra
            younger = rb
        else:
            square_parent[ra] = rb
            younger = ra
        out_a[end] = v
        out_b[end] = younger
        end += 1
    return end - start


# The compact core (what :func:`image_pairs` runs). The steps above visit the corner and square
# arrays in the sorted order of the edges, which is spatially random: on large images every find
# missed the caches (and the TLB), and the cost per pixel grew with the image (2048 x 2048 noise:
# 54 ns per pixel in the H0 pass, 13 at 256 x 256). Here the raster pass numbers the critical
# corners and squares in raster order, one pass over the edges in raster order resolves every
# edge's two corners and two squares to those numbers (the gradient paths it follows are
# local), and the sort carries them: the two union-find passes then stream over the sorted
# records and touch only small arrays indexed by the numbers. Numbers in raster order are in
# pixel order, so the tie rule compares numbers where it compared pixels.


@njit(inline="always", cache=True)
def _number_of(parent, x):
    """Number of the critical cell at the end of ``x``'s gradient path (numbered cells hold
    ``-(number + 1)``). Three steps without branches, then, on the rare longer paths, a
    loop that gives every cell of the path the end's entry; ``x`` is given it always."""
    cell = x
    for _ in range(3):
        up = parent[cell]
        cell = up if up >= 0 else cell
    end = parent[cell]
    if end >= 0:
        while end >= 0:
            end = parent[end]
        while True:
            up = parent[x]
            parent[x] = end
            if up < 0:
                break
            x = up
    parent[x] = end
    return -end - 1


def _sort_key(bits):
    """Order-preserving unsigned integer of the float whose raw bits are ``bits``, of the same
    width (uint32 for float32, uint64 for float64); ``-0.0`` as ``0.0``."""
    raise NotImplementedError("compiled only: see the overload")


@overload(_sort_key)
def _sort_key_impl(bits):
    if bits.bitwidth == 32:
        return lambda bits: np.uint32(_ordered_bits32(bits))
    return lambda bits: _ordered_bits64(bits)


@njit(cache=True, nogil=True)
def _cell_nodes(flat, pixels):
    """Union-find nodes of numbered cells: ``[number, key of the value]`` per number.

    Returns
    -------
    (count, 2) uint32 (float32 images) or uint64 (float64)
        Column 0 is the parent (each number its own), column 1 :func:`_sort_key` of the
        cell's value: a find and the elder rule read one cache line per node.
    """
    bits = _unsigned_bits(flat)
    nodes = np.empty((pixels.size, 2), dtype=bits.dtype)
    for k in range(pixels.size):
        nodes[k, 0] = k
        nodes[k, 1] = _sort_key(bits[pixels[k]])
    return nodes


@njit(inline="always", cache=True)
def _find_node(nodes, x):
    """Root of number ``x`` in ``nodes`` (column 0 the parents); halves the path."""
    while True:
        up = np.int64(nodes[x, 0])
        if up == x:
            return x
        above = np.int64(nodes[up, 0])
        nodes[x, 0] = above
        x = above


@njit(inline="always", cache=True)
def _older_node(nodes, a, b, later_older):
    """Whether number ``a`` is older than ``b`` (number 0 oldest; numbers are in pixel order).

    Older means earlier in the (value, pixel) order, or later when ``later_older``.
    """
    if a == 0:
        return True
    if b == 0:
        return False
    key_a = nodes[a, 1]
    key_b = nodes[b, 1]
    if later_older:
        return (key_b < key_a) | ((key_b == key_a) & (b < a))
    return (key_a < key_b) | ((key_a == key_b) & (a < b))


@njit(cache=True, nogil=True)
def _resolve_ends(flat, height, width, keys, payload, corner_parent, square_parent,
                  corner_pixel, square_pixel, records, sort_keys):
    """The records of the critical edges, in raster order: their cells' numbers and pixel.

    ``corner_parent`` and ``square_parent`` are numbered (:func:`_number_critical`),
    ``corner_pixel`` and ``square_pixel`` the pixels
    of the numbers (one per number). The gradient paths followed run in the neighbourhood of
    the edge: the raster order keeps them in the cache.

    Returns
    -------
    records : (m, 3) uint64
        Per edge: its two corners' numbers (low and high 32 bits), the numbers of its pixel's
        square and of the square across (0: the outside), and its pixel. A view of
        ``records`` when it is long enough.
    sort_keys : (m,) uint32 (float32 images) or uint64 (float64)
        ``keys`` as wide as the image's values, likewise in ``sort_keys``.
    corner_pixel, corner_nodes, square_pixel, square_nodes : arrays
        The pixels as given, and the union-find nodes of the numbers (:func:`_cell_nodes`).
    """
    n = height * width
    m = payload.size
    if m > records.shape[0]:
        records = np.empty((m, 3), dtype=np.uint64)
        sort_keys = np.empty(m, dtype=sort_keys.dtype)
    records = records[:m]
    sort_keys = sort_keys[:m]
    inverse_width = 1.0 / width
    for j in range(m):
        packed = np.int64(payload[j])
        v = packed >> 2
        side = packed & 3
        row = _row_of(v, width, inverse_width)
        col = v - row * width
        a, b = side_corners(row, col, side, width)
        across = side_neighbour(row, col, side, height, width)
        corner_a = _number_of(corner_parent, a)
        corner_b = _number_of(corner_parent, b)
        square_a = _number_of(square_parent, v)
        square_b = _number_of(square_parent, across if across >= 0 else n)
        records[j, 0] = np.uint64(corner_a) | (np.uint64(corner_b) << np.uint64(32))
        records[j, 1] = np.uint64(square_a) | (np.uint64(square_b) << np.uint64(32))
        records[j, 2] = np.uint64(v)
        sort_keys[j] = keys[j]
    return (records, sort_keys, corner_pixel, _cell_nodes(flat, corner_pixel), square_pixel,
            _cell_nodes(flat, square_pixel))


@njit(cache=True, nogil=True)
def _radix_sort_records(keys, records, keys_tmp, records_tmp, key_bits):
    """``records`` (rows) reordered by a stable LSD radix sort of ``keys``.

    Like :func:`_radix_sort`; ``keys_tmp`` and ``records_tmp`` (at least as long) are scratch
    space, and so are the inputs: the result is a view of ``records`` or ``records_tmp``.
    """
    m = keys.size
    n_passes = (key_bits + _RADIX_BITS - 1) // _RADIX_BITS
    counts = np.zeros((n_passes, _RADIX), dtype=np.int64)
    mask = _RADIX - 1
    for i in range(m):
        k = np.uint64(keys[i])
        for p in range(n_passes):
            counts[p, (k >> np.uint64(p * _RADIX_BITS)) & np.uint64(mask)] += 1
    if keys_tmp.size < m:
        keys_tmp = np.empty_like(keys)
        records_tmp = np.empty_like(records)
    keys_tmp = keys_tmp[:m]
    records_tmp = records_tmp[:m]
    offsets = np.empty(_RADIX, dtype=np.int64)
    for p in range(n_passes):
        if _one_digit(counts[p], m):
            continue
        shift = np.uint64(p * _RADIX_BITS)
        running = 0
        for d in range(_RADIX):
            offsets[d] = running
            running += counts[p, d]
        for i in range(m):
            k = keys[i]
            d = (np.uint64(k) >> shift) & np.uint64(mask)
            t = offsets[d]
            offsets[d] = t + 1
            keys_tmp[t] = k
            records_tmp[t, 0] = records[i, 0]
            records_tmp[t, 1] = records[i, 1]
            records_tmp[t, 2] = records[i, 2]
        keys, keys_tmp = keys_tmp, keys
        records, records_tmp = records_tmp, records
    return records


#: Records ahead whose union-find nodes the passes prefetch, and the fewest nodes for which
#: they do (smaller node arrays stay in the caches).
_PREFETCH_AHEAD = 16
_PREFETCH_FROM = 1 << 16

#: Fewest critical edges for which the core numbers the critical cells (steps 3 to 7 of the
#: module docstring); fewer run the plain passes, faster while the caches hold the image's
#: arrays (measured on 256 x 256 noise, 20 k edges, and smooth images to 2048 x 2048, 29 k).
#: Read at each call: a test lowers it to run every image through the numbered passes.
_NUMBERED_FROM = 1 << 16


@intrinsic
def _prefetch(typingctx, array, row):
    """Hint the CPU to fetch row ``row`` of the 2D ``array`` into the caches (no effect on
    results)."""
    if not isinstance(array, types.Array) or array.ndim != 2:
        return None
    signature = types.void(array, row)

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        row_index = context.cast(builder, args[1], sig.args[1], types.intp)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view,
                                           [row_index, zero], wraparound=False)
        byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        int32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer.type, int32, int32, int32])
        function = cgutils.get_or_insert_function(builder.module, function_type,
                                                  "llvm.prefetch.p0")
        # Read, high temporal locality, data cache.
        builder.call(function, [byte_pointer, int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, nogil=True)
def _h0_pass_records(records, corner_nodes, corner_pixel, vertex, write, out_a, out_b, start):
    """:func:`_h0_pass` over sorted records: Kruskal on corner numbers, leftovers in place.

    Returns
    -------
    n_pairs, n_left : int
    """
    m = records.shape[0]
    low = np.uint64(0xFFFFFFFF)
    end = start
    kept = 0
    prefetch = corner_nodes.shape[0] >= _PREFETCH_FROM
    for t in range(m):
        i = m - 1 - t if vertex else t
        if prefetch and t + _PREFETCH_AHEAD < m:
            ahead = records[i - _PREFETCH_AHEAD if vertex else i + _PREFETCH_AHEAD, 0]
            _prefetch(corner_nodes, np.int64(ahead & low))
            _prefetch(corner_nodes, np.int64(ahead >> np.uint64(32)))
        ends = records[i, 0]
        ra = _find_node(corner_nodes, np.int64(ends & low))
        rb = _find_node(corner_nodes, np.int64(ends >> np.uint64(32)))
        if ra == rb:
            into = m - 1 - kept if vertex else kept
            records[into, 1] = records[i, 1]
            records[into, 2] = records[i, 2]
            kept += 1
            continue
        if _older_node(corner_nodes, ra, rb, vertex):
            corner_nodes[rb, 0] = ra
            younger = rb
        else:
            corner_nodes[ra, 0] = rb
            younger = ra
        if write:
            out_a[end] = corner_pixel[younger]
            out_b[end] = records[i, 2]
            end += 1
    return end - start, kept


@njit(cache=True, nogil=True)
def _h1_pass_records(records, n_left, square_nodes, square_pixel, vertex, out_a, out_b, start):
    """:func:`_h1_pass` over the records the H0 pass left: merges square numbers.

    Returns
    -------
    n_pairs : int
    """
    m = records.shape[0]
    low = np.uint64(0xFFFFFFFF)
    end = start
    prefetch = square_nodes.shape[0] >= _PREFETCH_FROM
    for t in range(n_left):
        i = m - n_left + t if vertex else n_left - 1 - t
        if prefetch and t + _PREFETCH_AHEAD < n_left:
            ahead = records[i + _PREFETCH_AHEAD if vertex else i - _PREFETCH_AHEAD, 1]
            _prefetch(square_nodes, np.int64(ahead & low))
            _prefetch(square_nodes, np.int64(ahead >> np.uint64(32)))
        ends = records[i, 1]
        ra = _find_node(square_nodes, np.int64(ends & low))
        rb = _find_node(square_nodes, np.int64(ends >> np.uint64(32)))
        # The dual pass: the outside (0) is oldest; otherwise the later square in the H0
        # pass's order is older.
        if _older_node(square_nodes, ra, rb, not vertex):
            square_nodes[rb, 0] = ra
            younger = rb
        else:
            square_nodes[ra, 0] = rb
            younger = ra
        out_a[end] = records[i, 2]
        out_b[end] = square_pixel[younger]
        end += 1
    return end - start


@njit(cache=True, nogil=True)
def _sorted_critical_edges(flat, height, width, vertex, corner_parent, square_parent):
    """Steps 1 to 3: parents written, critical edges sorted, first and last pixels.

    Returns
    -------
    edges : (m,) uint32
        ``4 * pixel + side`` of the critical edges in (value, pixel, side) order.
    first, last : int
    """
    first, last = _extremes(flat, height, width)
    table = _RULE_TABLE_V if vertex else RULE_TABLE
    keys, payload = _decode(flat, height, width, table, corner_parent, square_parent)
    return _radix_sort(keys, payload, 8 * flat.itemsize), first, last


def image_pairs(flat: np.ndarray, height: int, width: int, vertex: bool, want_h0: bool,
                want_h1: bool):
    """Persistence pairs of one image's sublevel filtration, by local pairing.

    Parameters
    ----------
    flat : (H*W,) float32 or float64, C-contiguous
        The image in C order, finite values.
    height, width : int
    vertex : bool
        V-construction (pixels are vertices) instead of T (pixels are squares).
    want_h0, want_h1 : bool
        Dimensions to return.

    Returns
    -------
    birth, death : (capacity,) int32
        H0 pairs in ``[:n_h0]`` (the essential class first, death -1), H1 pairs in
        ``[capacity - n_h1:]``; flat pixel indices.
    n_h0, n_h1 : int
    first, last : int
        The first and last pixels of the (value, index) order: the essential class is born
        at ``first``; ``last`` is where the filtration ends.
    """
    entry = _image_pairs_v_in if vertex else _image_pairs_t_in
    return entry(flat, height, width, bool(want_h0), bool(want_h1),
                 _scratch(flat, height, width), int(_NUMBERED_FROM))


# One compiled entry per construction, each compiling the core with ``vertex`` a constant: the
# passes lose their per-item ``vertex`` branches (3 to 4 % of the time of 512 x 512 noise),
# and a process compiles only the construction it uses.


def _scratch(flat: np.ndarray, height: int, width: int) -> tuple:
    """Work arrays of :func:`_image_pairs`, allocated by NumPy.

    NumPy asks the kernel for huge pages for large arrays: a 2048 x 2048 image's first
    touch of its work arrays then costs far fewer page faults than with arrays allocated in
    compiled code (measured: 32 MB written once, 4 ms against 23 ms of CPU).
    """
    n = height * width
    capacity = n // 2 + 3 * width + 1  # as _edge_capacity
    key_type = np.uint32 if flat.dtype.itemsize == 4 else np.uint64
    corners, squares = _number_bounds(height, width)
    return (np.empty((height + 1) * (width + 1) + 1, dtype=np.int32),
            np.empty(n + 1, dtype=np.int32),
            np.empty(capacity, dtype=np.uint64), np.empty(capacity, dtype=np.uint32),
            np.empty((capacity, 3), dtype=np.uint64), np.empty((capacity, 3), dtype=np.uint64),
            np.empty(capacity, dtype=key_type), np.empty(capacity, dtype=key_type),
            np.empty(capacity + 1, dtype=np.int32), np.empty(capacity + 1, dtype=np.int32),
            np.empty(corners, dtype=np.int32), np.empty(squares, dtype=np.int32))


@njit(cache=True)
def _number_bounds(height, width):
    """Most numbers of critical corners and of critical squares (number 0 included).

    Critical corners are pixels that precede their 8 neighbours, critical squares pixels
    that follow their 4 neighbours: neither can be adjacent.
    """
    return ((height + 1) // 2) * ((width + 1) // 2) + 1, (height * width + 1) // 2 + 1


@njit(cache=True, nogil=True)
def _new_scratch(flat, height, width):
    """:func:`_scratch` in compiled code."""
    n = height * width
    capacity = _edge_capacity(height, width)
    key_type = _unsigned_bits(flat).dtype
    corners, squares = _number_bounds(height, width)
    return (np.empty((height + 1) * (width + 1) + 1, dtype=np.int32),
            np.empty(n + 1, dtype=np.int32),
            np.empty(capacity, dtype=np.uint64), np.empty(capacity, dtype=np.uint32),
            np.empty((capacity, 3), dtype=np.uint64), np.empty((capacity, 3), dtype=np.uint64),
            np.empty(capacity, dtype=key_type), np.empty(capacity, dtype=key_type),
            np.empty(capacity + 1, dtype=np.int32), np.empty(capacity + 1, dtype=np.int32),
            np.empty(corners, dtype=np.int32), np.empty(squares, dtype=np.int32))


@njit(cache=True, nogil=True)
def _image_pairs_t(flat, height, width, want_h0, want_h1):
    """:func:`image_pairs` of the T-construction (work arrays allocated here)."""
    return _image_pairs(flat, height, width, False, want_h0, want_h1,
                        _new_scratch(flat, height, width), _NUMBERED_FROM)


@njit(cache=True, nogil=True)
def _image_pairs_v(flat, height, width, want_h0, want_h1):
    """:func:`image_pairs` of the V-construction (work arrays allocated here)."""
    return _image_pairs(flat, height, width, True, want_h0, want_h1,
                        _new_scratch(flat, height, width), _NUMBERED_FROM)


@njit(cache=True, nogil=True)
def _image_pairs_t_in(flat, height, width, want_h0, want_h1, scratch, numbered_from):
    """:func:`image_pairs` of the T-construction in the work arrays ``scratch``
    (:func:`_scratch`)."""
    return _image_pairs(flat, height, width, False, want_h0, want_h1, scratch, numbered_from)


@njit(cache=True, nogil=True)
def _image_pairs_v_in(flat, height, width, want_h0, want_h1, scratch, numbered_from):
    """:func:`image_pairs` of the V-construction in the work arrays ``scratch``."""
    return _image_pairs(flat, height, width, True, want_h0, want_h1, scratch, numbered_from)


@njit(cache=True, nogil=True)
def _image_pairs(flat, height, width, vertex, want_h0, want_h1, scratch, numbered_from):
    """:func:`image_pairs`; ``vertex`` is a compile-time constant.

    Images with at least ``numbered_from`` critical edges run steps 3 to 7 of the module
    docstring; the others, whose union-find arrays the caches hold anyway, run the plain
    passes on the parents (:func:`_h0_pass`, :func:`_h1_pass`), which skip the numbering,
    the resolving and the wider sort.
    """
    (corner_parent, square_parent, edge_keys, edge_payload, records, records_tmp, sort_keys,
     sort_keys_tmp, birth, death, corner_pixel, square_pixel) = scratch
    n = height * width
    first, last = _extremes(flat, height, width)
    table = _RULE_TABLE_V if vertex else RULE_TABLE
    keys, payload = _decode_into(flat, height, width, table, corner_parent, square_parent,
                                 edge_keys, edge_payload)
    numbered = payload.size >= numbered_from
    if numbered:
        n_corner_numbers = _number_critical(corner_parent, n, False, corner_pixel)
        n_square_numbers = _number_critical(square_parent, n, True, square_pixel)
        records, keys, corner_pixel, corner_nodes, square_pixel, square_nodes = _resolve_ends(
            flat, height, width, keys, payload, corner_parent, square_parent,
            corner_pixel[:n_corner_numbers], square_pixel[:n_square_numbers], records,
            sort_keys)
        records = _radix_sort_records(keys, records, sort_keys_tmp, records_tmp,
                                      8 * flat.itemsize)
        edges = payload
    else:
        # The plain passes: the exterior corner older than every pixel, the outside square.
        corner_parent[corner_parent.size - 1] = -(n + 1)
        square_parent[n] = n
        edges = _radix_sort(keys, payload, 8 * flat.itemsize)
        corner_nodes = _cell_nodes(flat, corner_pixel[:0])
        square_nodes = corner_nodes
    n_edges = edges.size
    capacity = n_edges + 1
    if capacity > birth.size:
        birth = np.empty(capacity, dtype=np.int32)
        death = np.empty(capacity, dtype=np.int32)
    birth = birth[:capacity]
    death = death[:capacity]
    # The H0 pass gives H0 (T) or H1 (V); the H1 pass gives H1 (T) or H0 (V).
    want_first = want_h1 if vertex else want_h0
    want_second = want_h0 if vertex else want_h1
    n_h0 = 0
    n_h1 = 0
    if want_h0:
        birth[0] = first
        death[0] = -1
        n_h0 = 1
    if vertex:
        # H1 pairs (edge pixel, younger birth) at the back; H0 pairs (younger, edge) after
        # the essential class.
        if numbered:
            n_first, n_left = _h0_pass_records(records, corner_nodes, corner_pixel, vertex,
                                               want_first, death, birth, np.int64(0))
        else:
            n_first, n_left = _h0_pass(flat, height, width, edges, corner_parent, vertex,
                                       want_first, death, birth, np.int64(0))
        if want_first:
            # Written at the front; move them to the back (n_first <= capacity - n_h0).
            for k in range(n_first - 1, -1, -1):
                birth[capacity - n_first + k] = birth[k]
                death[capacity - n_first + k] = death[k]
            n_h1 = n_first
            if want_h0:
                birth[0] = first
                death[0] = -1
        if want_second and numbered:
            n_h0 += _h1_pass_records(records, n_left, square_nodes, square_pixel, vertex,
                                     death, birth, n_h0)
        elif want_second:
            n_h0 += _h1_pass(flat, height, width, edges, n_left, square_parent, vertex, death,
                             birth, n_h0)
    else:
        if numbered:
            n_first, n_left = _h0_pass_records(records, corner_nodes, corner_pixel, vertex,
                                               want_first, birth, death, n_h0)
        else:
            n_first, n_left = _h0_pass(flat, height, width, edges, corner_parent, vertex,
                                       want_first, birth, death, n_h0)
        n_h0 += n_first
        if want_second:
            start = capacity - n_left
            if numbered:
                n_h1 = _h1_pass_records(records, n_left, square_nodes, square_pixel, vertex,
                                        birth, death, start)
            else:
                n_h1 = _h1_pass(flat, height, width, edges, n_left, square_parent, vertex,
                                birth, death, start)
            # Pairs land at [start, capacity): n_h1 == n_left.
    return birth, death, n_h0, n_h1, first, last


def batch_pairs(images: np.ndarray, h0_neighbors: int, want_h0: bool, want_h1: bool,
                n_threads: int | None = None):
    """Persistence pairs of a batch, packed, with the last pixel of every image.

    Parameters
    ----------
    images : (B, H, W) float32 or float64, C-contiguous
        Finite values; at most :data:`MAX_PIXELS` pixels per image.
    h0_neighbors : {8, 4}
        8: T-construction (components 8-connected), 4: V-construction.
    want_h0, want_h1 : bool
        Dimensions to return.
    n_threads : int, optional
        Threads to run images on, the calling thread included; default
        ``numba.get_num_threads()`` (see the module docstring for the scheme).

    Returns
    -------
    image, dim, birth_index, death_index : (K,) int64
        Grouped by image, then dimension; the essential class first in H0, death -1.
    last_index : (B,) int64
        Flat index of the last pixel of each image in the (value, index) order.
    """
    n_images, height, width = images.shape
    vertex = h0_neighbors == 4
    flats = images.reshape(n_images, height * width)
    results = _run_images(flats, height, width, vertex, want_h0, want_h1, n_threads)
    return _pack(results)


def _run_images(flats, height, width, vertex, want_h0, want_h1, n_threads):
    """:func:`image_pairs` of every image, on the calling thread and ``n_threads - 1`` helpers.

    The threads claim images one at a time from a shared counter. The calling thread never
    waits for a helper: once every image is claimed, it computes itself any image a helper has
    not finished yet (a helper descheduled by another process), and the first result stored
    wins. So the batch is never held up by a thread that gets no core, and one thread (or one
    image) runs on the calling thread alone.
    """
    if n_threads is None:
        import numba

        n_threads = numba.get_num_threads()
    n_images = flats.shape[0]
    n_threads = max(1, min(int(n_threads), n_images))
    if n_threads == 1:
        return [image_pairs(flats[b], height, width, vertex, want_h0, want_h1)
                for b in range(n_images)]
    batch = _SharedBatch(flats, height, width, vertex, want_h0, want_h1)
    executor = _executor(n_threads - 1)
    for _ in range(n_threads - 1):
        executor.submit(batch.work)
    batch.work()
    for b in range(n_images):
        if batch.results[b] is None:
            batch.store(b, image_pairs(flats[b], height, width, vertex, want_h0, want_h1))
    return batch.results


class _SharedBatch:
    """Images of one batch, claimed one at a time by the threads that compute them."""

    def __init__(self, flats, height, width, vertex, want_h0, want_h1):
        import threading

        self.flats = flats
        self.args = (height, width, vertex, want_h0, want_h1)
        self.results = [None] * flats.shape[0]
        self.next_image = 0
        self.lock = threading.Lock()

    def claim(self) -> int:
        with self.lock:
            b = self.next_image
            self.next_image += 1
        return b

    def store(self, b: int, result) -> None:
        with self.lock:
            if self.results[b] is None:
                self.results[b] = result

    def work(self) -> None:
        """Compute claimed images until none is left."""
        b = self.claim()
        while b < len(self.results):
            self.store(b, image_pairs(self.flats[b], *self.args))
            b = self.claim()


_EXECUTORS: dict = {}


def _executor(n_workers: int):
    """A cached thread pool of ``n_workers`` workers."""
    from concurrent.futures import ThreadPoolExecutor

    if n_workers not in _EXECUTORS:
        _EXECUTORS[n_workers] = ThreadPoolExecutor(max_workers=n_workers,
                                                   thread_name_prefix="persistence")
    return _EXECUTORS[n_workers]


def _pack(results):
    """Concatenate per-image results into the packed (image, dim, birth, death) columns."""
    n_images = len(results)
    sizes = np.array([[r[2], r[3]] for r in results], dtype=np.int64).reshape(n_images, 2)
    total = int(sizes.sum())
    image = np.repeat(np.repeat(np.arange(n_images, dtype=np.int64), 2), sizes.ravel())
    dim = np.repeat(np.tile(np.array([0, 1], dtype=np.int64), n_images), sizes.ravel())
    birth = np.empty(total, dtype=np.int64)
    death = np.empty(total, dtype=np.int64)
    last = np.empty(n_images, dtype=np.int64)
    at = 0
    for b, (births, deaths, n_h0, n_h1, _first, last_pixel) in enumerate(results):
        capacity = births.size
        birth[at : at + n_h0] = births[:n_h0]
        death[at : at + n_h0] = deaths[:n_h0]
        at += n_h0
        birth[at : at + n_h1] = births[capacity - n_h1 :]
        death[at : at + n_h1] = deaths[capacity - n_h1 :]
        at += n_h1
        last[b] = last_pixel
    return image, dim, birth, death, last
