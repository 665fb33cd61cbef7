"""The per-pixel rule of the local-pairing persistence core, shared by the CPU and the GPU.

The cubical complex
-------------------
An image of ``H x W`` pixels in a strict total order (the tie rule: pixel ``a`` precedes
pixel ``b`` when ``(vals[a], sign * a) < (vals[b], sign * b)``) is cut into cells:

* squares: the pixels; pixel ``(row, col)`` is the square ``[row, row+1] x [col, col+1]``;
* corners: the ``(H+1) x (W+1)`` grid points; corner ``(R, C)`` has id ``R * (W+1) + C``;
* sides: the unit segments between grid points; every side separates two squares, or a
  square and the outside of the image.

Every cell belongs to ("is owned by") the earliest square around it: a side to the earlier
of its two squares, a corner to the earliest of its four. Squares outside the image all
count as one sentinel: *later* than every pixel (``outside_earlier = False``) or *earlier*
than every pixel (``outside_earlier = True``; the outer corners and sides then belong to
nobody). A pixel's owned cells are its *lower star*; the rule below pairs them, inside the
lower star only, into an acyclic discrete gradient. What stays unpaired is critical.

The neighbourhood mask
----------------------
:func:`neighbour_mask` compares a pixel with its 8 neighbours and returns an 8-bit mask:
bit ``k`` is set when neighbour ``k`` precedes the pixel (outside the image: when
``outside_earlier``). Neighbours are numbered in raster order around the pixel::

    bit 0 (-1,-1)   bit 1 (-1, 0)   bit 2 (-1,+1)
    bit 3 ( 0,-1)      pixel        bit 4 ( 0,+1)
    bit 5 (+1,-1)   bit 6 (+1, 0)   bit 7 (+1,+1)

The pixel owns its top side iff bit 1 is clear, left side iff bit 3, right side iff bit 4,
bottom side iff bit 6; its top-left corner iff bits 0, 1, 3 are all clear, top-right iff
bits 1, 2, 4, bottom-left iff bits 3, 5, 6, bottom-right iff bits 4, 6, 7.

The code
--------
:data:`RULE_TABLE` maps the mask to a 16-bit code, :func:`pixel_code` reads it. Corners of a
pixel are numbered 0 = top-left ``(row, col)``, 1 = top-right ``(row, col+1)``,
2 = bottom-left ``(row+1, col)``, 3 = bottom-right ``(row+1, col+1)`` (grid coordinates);
sides 0 = top, 1 = left, 2 = right, 3 = bottom (the order of the 4-neighbours N, W, E, S).

* bits ``2c .. 2c+1`` (``c`` = 0..3): corner ``c``, :func:`corner_kind`:

  - 0 :data:`CORNER_NOT_OWNED`: another square (or nobody) owns it; write nothing;
  - 1 :data:`CORNER_CRITICAL`: a critical corner (a birth of H0), born at this pixel;
  - 2 :data:`CORNER_ALONG_ROW`: paired with its horizontal side of the pixel (top side for
    corners 0, 1; bottom side for 2, 3): its gradient parent is the corner at the other end
    of that side, in the same grid row (corner id + 1 for corners 0, 2; - 1 for 1, 3);
  - 3 :data:`CORNER_ALONG_COLUMN`: paired with its vertical side (left for 0, 2; right for
    1, 3): its parent is the corner in the same grid column (id + (W+1) for corners 0, 1;
    id - (W+1) for 2, 3).

  :func:`corner_parent_offset` gives the id offset (0 for a critical corner).
* bits ``8 + s`` (``s`` = 0..3): side ``s`` is a critical edge, owned by this pixel (its
  value and critical pixel are this pixel's): :func:`side_is_critical`. Its endpoints are
  the corners (0, 1) for the top side, (0, 2) left, (1, 3) right, (2, 3) bottom; it
  separates the pixel from neighbour N, W, E or S (or the outside).
* bits ``12 .. 14``: the square, :func:`square_kind`: ``s`` in 0..3 when the pixel is paired
  with its side ``s`` (its dual gradient parent is the square across that side: neighbour
  N, W, E or S, or the outside), 4 (:data:`SQUARE_CRITICAL`) when the pixel is a critical
  square (a death of H1, a root of the dual union-find).
* bit 15 is always 0.

Every owned cell is used exactly once: paired with one owned cell of the same pixel, or
critical. The numbers of critical cells follow from the topology of the lower star: with
``k`` arcs of not-owned boundary, a pixel has ``k - 1`` critical sides; a pixel that owns
its whole boundary (a local minimum among its 8 neighbours) has exactly one critical corner
(corner 0) and no critical side; a pixel that owns no side is a critical square. So a pixel
has at most 3 critical sides, and :func:`critical_side_count` counts them.

How the cores use it
--------------------
H0 is Kruskal over the critical edges sorted by (value, pixel), on a union-find over corners
whose initial parents are the gradient parents above (critical corners are roots, their
birth is their pixel), with the elder rule. The edges that merge nothing are the H1 births;
in reverse order they merge squares (initial parents: the dual gradient parents; critical
squares are roots; one extra cell stands for the outside) and the younger square dies.

* T-construction (pixels are squares): ``vals`` = the image, ``sign = +1``,
  ``outside_earlier = False``. H0 pairs are (root corner's pixel, edge pixel); H1 pairs are
  (edge pixel, dying square); the outside is the oldest square of the dual pass.
* V-construction (pixels are vertices): the same complex, in the reversed order, is the
  cell-by-cell dual of gudhi's vertex complex. Use ``vals = -image``, ``sign = -1``,
  ``outside_earlier = True``, and let every outer corner (row 0 or H, column 0 or W) start
  with one extra *exterior* corner, older than all others, as its parent. Dimensions swap:
  the H0 pass gives the V-construction's H1 pairs as (edge pixel, root corner's pixel), the
  dual pass gives its H0 pairs as (dying square, edge pixel); no edge ever touches the
  outside square. In both constructions the essential class is born at the first pixel of
  the (value, index) order. Equivalently (the CPU core does this): the V-construction's mask
  is the T-construction's mask of the image XOR ``0xFF``, since the reversed order flips
  every in-image comparison and the outside goes from later to earlier.

All functions are scalar and allocation-free: the CPU raster loop and the CUDA kernel (one
thread per pixel) call the same ones. :data:`RULE_TABLE` is plain data; a CUDA kernel takes
it as a device array (or a constant array).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "RULE_TABLE",
    "CORNER_NOT_OWNED",
    "CORNER_CRITICAL",
    "CORNER_ALONG_ROW",
    "CORNER_ALONG_COLUMN",
    "SQUARE_CRITICAL",
    "SIDE_ROW_OFFSETS",
    "SIDE_COL_OFFSETS",
    "build_rule_table",
    "neighbour_mask",
    "pixel_code",
    "corner_kind",
    "corner_parent_offset",
    "side_is_critical",
    "critical_side_count",
    "square_kind",
    "corner_id",
    "side_corners",
    "side_neighbour",
]

CORNER_NOT_OWNED = 0
CORNER_CRITICAL = 1
CORNER_ALONG_ROW = 2
CORNER_ALONG_COLUMN = 3
SQUARE_CRITICAL = 4

#: (drow, dcol) of the square across side s (0 top, 1 left, 2 right, 3 bottom).
SIDE_ROW_OFFSETS = np.array([-1, 0, 0, 1], dtype=np.int64)
SIDE_COL_OFFSETS = np.array([0, -1, 1, 0], dtype=np.int64)

# The boundary of a pixel as a cycle of 8 cells, clockwise from the top-left corner:
# ("corner", c) or ("side", s).
_RING = (("corner", 0), ("side", 0), ("corner", 1), ("side", 2),
         ("corner", 3), ("side", 3), ("corner", 2), ("side", 1))
# Neighbour bits whose squares share each side / corner with the pixel.
_SIDE_BITS = {0: (1,), 1: (3,), 2: (4,), 3: (6,)}
_CORNER_BITS = {0: (0, 1, 3), 1: (1, 2, 4), 2: (3, 5, 6), 3: (4, 6, 7)}
# Sides 0 (top) and 3 (bottom) are horizontal.
_HORIZONTAL_SIDES = (0, 3)


def _owned_ring(mask: int) -> list[bool]:
    """Which cells of the ring (see ``_RING``) the pixel owns, for one neighbourhood mask."""
    owned = []
    for kind, number in _RING:
        bits = _SIDE_BITS[number] if kind == "side" else _CORNER_BITS[number]
        owned.append(all(not (mask >> b) & 1 for b in bits))
    return owned


def _code_for_mask(mask: int) -> int:
    """The code of one neighbourhood mask (see the module docstring)."""
    owned = _owned_ring(mask)
    corner_kinds = [CORNER_NOT_OWNED] * 4
    critical_sides: list[int] = []
    square = SQUARE_CRITICAL

    def pair_corner(corner: int, side: int) -> None:
        horizontal = side in _HORIZONTAL_SIDES
        corner_kinds[corner] = CORNER_ALONG_ROW if horizontal else CORNER_ALONG_COLUMN

    if all(owned):
        # A local minimum: the top-left corner is critical; the other corners flow to it
        # (top-right along the top side, bottom-left along the left side, bottom-right
        # along the right side to the top-right one); the bottom side pairs with the square.
        corner_kinds[0] = CORNER_CRITICAL
        pair_corner(1, 0)
        pair_corner(2, 1)
        pair_corner(3, 2)
        square = 3
    elif any(owned):
        # Runs of owned cells between not-owned ones start and end with a side (an owned
        # corner's two sides are owned). In each run every corner pairs with the side before
        # it; the run's last side is left over. The first run's leftover pairs with the
        # square; the others are critical edges.
        start = next(p for p in range(8) if not owned[p]) + 1
        runs: list[list[int]] = []
        current: list[int] = []
        for step in range(8):
            p = (start + step) % 8
            if owned[p]:
                current.append(p)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        for index, run in enumerate(runs):
            for j in range(1, len(run), 2):
                pair_corner(_RING[run[j]][1], _RING[run[j - 1]][1])
            leftover = _RING[run[-1]][1]
            if index == 0:
                square = leftover
            else:
                critical_sides.append(leftover)
    code = 0
    for corner, kind in enumerate(corner_kinds):
        code |= kind << (2 * corner)
    for side in critical_sides:
        code |= 1 << (8 + side)
    return code | (square << 12)


def build_rule_table() -> np.ndarray:
    """The code of every neighbourhood mask.

    Returns
    -------
    (256,) uint16
        ``table[mask]`` is the code of a pixel whose earlier neighbours are the set bits of
        ``mask`` (see the module docstring for the encoding).
    """
    return np.array([_code_for_mask(mask) for mask in range(256)], dtype=np.uint16)


#: (256,) uint16: the code of every neighbourhood mask.
RULE_TABLE = build_rule_table()


@njit(inline="always", cache=True)
def neighbour_mask(vals, sign, outside_earlier, row, col, height, width):
    """8-bit mask of the neighbours of pixel ``(row, col)`` that precede it.

    Parameters
    ----------
    vals : (H*W,) array
        The values in C order (float32, float64, or distinct uint64 keys).
    sign : int
        +1 or -1: pixel ``a`` precedes ``b`` when ``(vals[a], sign*a) < (vals[b], sign*b)``.
    outside_earlier : bool
        Whether the squares outside the image precede every pixel.
    row, col, height, width : int

    Returns
    -------
    int
        Bit ``k`` set when neighbour ``k`` (raster order, see the module docstring) precedes.
    """
    centre = row * width + col
    value = vals[centre]
    key = sign * centre
    mask = 0
    for k in range(8):
        slot = k + (k >= 4)
        r = row + slot // 3 - 1
        c = col + slot % 3 - 1
        if 0 <= r < height and 0 <= c < width:
            u = r * width + c
            value_u = vals[u]
            earlier = (value_u < value) | ((value_u == value) & (sign * u < key))
        else:
            earlier = outside_earlier
        mask |= int(earlier) << k
    return mask


@njit(inline="always", cache=True)
def pixel_code(mask, table):
    """Code of a pixel (see the module docstring) from its neighbourhood mask."""
    return int(table[mask])


@njit(inline="always", cache=True)
def corner_kind(code, corner):
    """Kind of corner ``corner`` (0..3): not owned, critical, along the row or the column."""
    return (code >> (2 * corner)) & 3


@njit(inline="always", cache=True)
def corner_parent_offset(kind, corner, width):
    """Corner-id offset from corner ``corner`` of kind ``kind`` to its gradient parent.

    0 for a critical (or not-owned) corner; ``width`` is the image width (the corner grid
    has ``width + 1`` columns).
    """
    if kind == CORNER_ALONG_ROW:
        return 1 if (corner & 1) == 0 else -1
    if kind == CORNER_ALONG_COLUMN:
        return (width + 1) if corner < 2 else -(width + 1)
    return 0


@njit(inline="always", cache=True)
def side_is_critical(code, side):
    """Whether side ``side`` (0 top, 1 left, 2 right, 3 bottom) is a critical edge."""
    return ((code >> (8 + side)) & 1) == 1


@njit(inline="always", cache=True)
def critical_side_count(code):
    """Number of critical edges of a pixel (0 to 3)."""
    bits = (code >> 8) & 15
    return (bits & 1) + ((bits >> 1) & 1) + ((bits >> 2) & 1) + ((bits >> 3) & 1)


@njit(inline="always", cache=True)
def square_kind(code):
    """Side (0..3) the square is paired with, or :data:`SQUARE_CRITICAL` (4)."""
    return (code >> 12) & 7


@njit(inline="always", cache=True)
def corner_id(row, col, corner, width):
    """Id ``R * (width+1) + C`` of corner ``corner`` (0..3) of pixel ``(row, col)``."""
    return (row + (corner >> 1)) * (width + 1) + col + (corner & 1)


@njit(inline="always", cache=True)
def side_corners(row, col, side, width):
    """Ids of the two corners of side ``side`` of pixel ``(row, col)``."""
    first = 0 if side < 2 else (1 if side == 2 else 2)
    second = 3 if side > 1 else (1 if side == 0 else 2)
    return corner_id(row, col, first, width), corner_id(row, col, second, width)


@njit(inline="always", cache=True)
def side_neighbour(row, col, side, height, width):
    """Flat index of the pixel across side ``side`` of ``(row, col)``, or -1 (outside)."""
    r = row + (-1 if side == 0 else (1 if side == 3 else 0))
    c = col + (-1 if side == 1 else (1 if side == 2 else 0))
    if 0 <= r < height and 0 <= c < width:
        return r * width + c
    return -1
