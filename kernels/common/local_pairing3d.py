"""The per-voxel rule of the 3D local-pairing persistence core, shared by the CPU and the GPU.

The cubical complex
-------------------
A volume of ``D x H x W`` voxels in a strict total order (the tie rule: voxel ``a`` precedes
voxel ``b`` when ``(vals[a], a) < (vals[b], b)``, ``a`` the C-order flat index
``z*H*W + y*W + x``; the V-construction reverses it, see below) is cut into cells: voxel
``p = (z, y, x)`` is the closed unit cube ``[z, z+1] x [y, y+1] x [x, x+1]`` (T-construction,
gudhi's ``top_dimensional_cells``), and the cube's faces, edges and corners are shared with
the up to 26 voxels around it.

Local cells
-----------
The 27 cells of the closed cube of ``p`` are named by a direction ``s = (dz, dy, dx)`` in
``{-1, 0, 1}^3``, local index ``j = (dz+1)*9 + (dy+1)*3 + (dx+1)``
(:data:`LOCAL_OFFSETS`). Along axis ``i``: ``s_i = 0``, the cell spans ``[p_i, p_i+1]``;
``s_i = -1``, it lies at coordinate ``p_i``; ``s_i = +1``, at ``p_i + 1``. The dimension of
cell ``j`` (:data:`LOCAL_DIM`) is the number of zeros of ``s``: ``j = 13`` (:data:`CUBE`) is the
cube (dimension 3), the 6 faces (dimension 2) have one nonzero entry, the 12 edges two, the
8 corners three. Cell ``a`` is a face of cell ``b`` iff ``a_i = b_i`` wherever ``b_i != 0``.
:data:`FACE_BITS` ``[j]`` is the bitset (bit ``a`` for local cell ``a``) of the faces of ``j``
of dimension ``dim(j) - 1`` (its boundary), :data:`COFACE_BITS` ``[j]`` the cells of dimension
``dim(j) + 1`` that have ``j`` as a face; :data:`DIM_BITS` ``[d]`` the cells of dimension ``d``.

The neighbourhood mask
----------------------
The 26 neighbours are named by the same directions ``t != 0`` (:data:`NEIGHBOUR_OFFSETS`):
neighbour bit ``k`` of a mask is local index ``j = k`` if ``k < 13`` else ``k + 1`` (raster
order, the centre skipped). ``mask26`` has bit ``k`` set iff neighbour ``k`` precedes the voxel;
:func:`neighbour_mask26` computes it. A neighbour outside the volume counts as later
(``outside_earlier = False``, the T-construction: bit clear) or as earlier
(``outside_earlier = True``: bit set), exactly as in 2D. Neighbour ``t`` shares cell ``s`` iff
``t_i`` is ``0`` or ``s_i`` on every axis (a face is shared with 1 neighbour, an edge with 3, a
corner with 7); :data:`SHARED_NEIGHBOUR_BITS` ``[j]`` holds their mask bits (0 for the cube).

Ownership
---------
Every cell belongs to ("is owned by") the earliest voxel that contains it: voxel ``p`` owns
cell ``s`` iff every neighbour sharing ``s`` is later, i.e.
``mask26 & SHARED_NEIGHBOUR_BITS[s] == 0`` (:func:`owned_cells`). The cube is always owned,
and so is every coface of an owned cell: the owned cells are an upward-closed set, the
cells that enter the filtration with ``p``. With the outside earlier, cells on the volume's
outer boundary belong to nobody.

The rule
--------
:func:`voxel_rule` pairs the owned cells of one voxel, inside the voxel only, into a discrete
gradient (pairs of a cell and one of its faces of one dimension less) and leaves the rest
critical. It is Robins-Wood-Sheppard's ProcessLowerStars with a *static* priority, applied to
the dual of the owned set: read with dimensions ``k -> 3 - k`` and faces and cofaces swapped,
the owned cells are the lower star of a vertex (the cube plays the vertex) of the vertex
construction, and ProcessLowerStars runs on that lower star with the priority (dual dimension,
local index), smallest first, instead of values:

1. if the cube is the only owned cell, it is critical; otherwise it is paired with the owned
   face (dual edge) of smallest local index, and the other owned faces wait in the queue of
   candidates for critical cells (``PQzero``);
2. a cell whose owned cofaces (dual faces) are all classified but one goes to the pairing
   queue (``PQone``); popped first by priority, it is paired with that one coface, or moves to
   ``PQzero`` if none is left;
3. when ``PQone`` is empty, the first cell of ``PQzero`` becomes critical, and its faces are
   examined as in 2.

The queues are bitsets over the 27 cells numbered by priority (the 6 faces, the 12 edges, the
8 corners, each by local index), so popping is taking the lowest set bit. For every one of the
2^26 masks this gradient is *perfect*: the number of critical cells of dimension ``k`` equals
the rank of ``H_k(C, A)`` = the reduced Betti number ``b~_{k-1}(A)``, ``C`` the closed cube and
``A`` its part shared with earlier neighbours (the cells not owned), so ``c0 = [A empty]``,
``c1`` = components of ``A`` - 1, ``c2`` = independent loops of ``A``,
``c3 = [A is the whole boundary]``. No voxel can do with fewer critical cells. At most 7 cells
of a voxel are critical. (The tests check all 2^26 masks against an independent computation
of these Betti numbers, and whole small volumes against gudhi.)

The rule needs no values, only the mask: callers may cache its output by mask or by owned set
(the 2^26 masks give 15,935 distinct owned sets). :func:`rule_code` returns the whole result as
integers (critical cells, pair starts, the classification order packed into three words);
:func:`voxel_rule` unpacks it into ``partner`` and ``seq``.

partner and seq
---------------
``partner[j]`` is -2 when cell ``j`` is not owned, -1 when it is critical, otherwise the local
index of the owned cell it is paired with (a face or coface of ``j``, dimension differing by
one; ``partner[partner[j]] == j``). ``seq[j]`` is the position ``0 .. n-1`` of owned cell ``j``
in a refined filtration order of the voxel's ``n`` owned cells (-1 when not owned):

(i) every owned face of an owned cell comes before it (so the cube comes last);
(ii) a pair ``(a, b)``, ``a`` a face of ``b``, is consecutive: ``seq[b] == seq[a] + 1``, so
     every other owned face of ``b`` comes before ``a``;
(iii) the gradient is acyclic (it follows from (i) and (ii)).

The global order "voxel rank, then ``seq``" is therefore a filtration of the whole complex in
which every gradient pair is consecutive: every face of a cell owned by ``p`` is owned by ``p``
or by an earlier voxel.

How the cores use it
--------------------
* T-construction: ``mask26`` of the values, outside later. Critical corners are H0 births,
  critical edges H0 deaths or H1 births, critical faces H1 deaths or H2 births, critical cubes
  H2 deaths; the critical voxel of each is the owner.
* V-construction (gudhi's ``vertices``): the same machinery on the reversed order with the
  outside earlier, i.e. ``mask26`` of the T-construction complemented inside the volume
  (XOR ``0x3FFFFFF``) with the bits of outside neighbours set. The cells on the outer
  boundary then belong to nobody (the filtration is of the volume relative to its boundary)
  and dimensions and roles swap, as in 2D: a pair of dimension ``k`` born at voxel ``b`` and
  dying at voxel ``d`` in the reversed order is a V-pair of dimension ``2 - k`` born at ``d``
  and dying at ``b``; the one cube left unpaired is the essential H0 class, born at the
  first voxel of the (value, index) order (tested against gudhi on small volumes).

All functions are scalar and allocation-free (the callers pass ``partner`` and ``seq``), work
on plain integers and read the module's constant tables, so the CPU raster loop (through a
cache by owned pattern or directly) and the CUDA kernels (one thread per voxel; under the
simulator through ``function.py_func``) run the same code.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "N_LOCAL",
    "CUBE",
    "ALL_CELLS",
    "MASK26_ALL",
    "LOCAL_OFFSETS",
    "LOCAL_DIM",
    "NEIGHBOUR_OFFSETS",
    "NEIGHBOUR_LOCAL",
    "FACE_BITS",
    "COFACE_BITS",
    "DIM_BITS",
    "SHARED_NEIGHBOUR_BITS",
    "NOT_OWNED",
    "CRITICAL",
    "popcount32",
    "lowest_bit_index",
    "local_index",
    "neighbour_bit",
    "neighbour_mask26",
    "owned_cells",
    "rule_code",
    "sequence_cell",
    "voxel_rule",
    "critical_cells",
    "critical_counts",
]

#: Number of local cells of a voxel (the closed unit cube).
N_LOCAL = 27
#: Local index of the cube itself, direction (0, 0, 0).
CUBE = 13
#: Bitset of all 27 local cells.
ALL_CELLS = (1 << N_LOCAL) - 1
#: All 26 neighbour bits.
MASK26_ALL = (1 << 26) - 1
#: ``partner[j]`` of a cell the voxel does not own.
NOT_OWNED = -2
#: ``partner[j]`` of a critical cell.
CRITICAL = -1


def _direction(j: int) -> tuple[int, int, int]:
    """Direction (dz, dy, dx) of local cell ``j``."""
    return j // 9 - 1, (j // 3) % 3 - 1, j % 3 - 1


def _is_face(a: int, b: int) -> bool:
    """Whether local cell ``a`` is a face of local cell ``b`` (or ``b`` itself)."""
    sa, sb = _direction(a), _direction(b)
    return all(sb[i] == 0 or sa[i] == sb[i] for i in range(3))


def _build_tables():
    """The public tables, from the directions of the 27 local cells."""
    offsets = np.array([_direction(j) for j in range(N_LOCAL)], dtype=np.int64)
    dims = (offsets == 0).sum(axis=1).astype(np.int64)
    local = np.array([k if k < CUBE else k + 1 for k in range(26)], dtype=np.int64)
    faces = np.zeros(N_LOCAL, dtype=np.uint32)
    cofaces = np.zeros(N_LOCAL, dtype=np.uint32)
    shared = np.zeros(N_LOCAL, dtype=np.uint32)
    for b in range(N_LOCAL):
        for a in range(N_LOCAL):
            if dims[a] == dims[b] - 1 and _is_face(a, b):
                faces[b] |= np.uint32(1 << a)
                cofaces[a] |= np.uint32(1 << b)
        for k in range(26):
            t = offsets[local[k]]
            if all(t[i] == 0 or t[i] == offsets[b][i] for i in range(3)):
                shared[b] |= np.uint32(1 << k)
    dim_bits = np.zeros(4, dtype=np.uint32)
    for j in range(N_LOCAL):
        dim_bits[dims[j]] |= np.uint32(1 << j)
    return offsets, dims, offsets[local].copy(), local, faces, cofaces, dim_bits, shared


_TABLES = _build_tables()
#: (27, 3) int64: direction (dz, dy, dx) of local cell j = (dz+1)*9 + (dy+1)*3 + (dx+1).
LOCAL_OFFSETS = _TABLES[0]
#: (27,) int64: dimension of local cell j (the number of zeros of its direction).
LOCAL_DIM = _TABLES[1]
#: (26, 3) int64: direction of neighbour bit k (raster order, the centre skipped).
NEIGHBOUR_OFFSETS = _TABLES[2]
#: (26,) int64: local index of neighbour bit k (k if k < 13 else k + 1).
NEIGHBOUR_LOCAL = _TABLES[3]
#: (27,) uint32: the faces of cell j of dimension dim(j) - 1 (bit a for local cell a).
FACE_BITS = _TABLES[4]
#: (27,) uint32: the cells of dimension dim(j) + 1 that have cell j as a face.
COFACE_BITS = _TABLES[5]
#: (4,) uint32: the cells of each dimension 0 .. 3.
DIM_BITS = _TABLES[6]
#: (27,) uint32: mask26 bits of the neighbours that share cell j (0 for the cube).
SHARED_NEIGHBOUR_BITS = _TABLES[7]


@njit(inline="always", cache=True)
def popcount32(x):
    """Number of set bits of a non-negative integer below 2**32 (branch-free SWAR)."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) & 0xFFFFFFFF) >> 24


def _build_de_bruijn() -> np.ndarray:
    """Bit index of every 5-bit window of the de Bruijn sequence 0x077CB531."""
    table = np.zeros(32, dtype=np.int64)
    for bit in range(32):
        table[(((1 << bit) * 0x077CB531) & 0xFFFFFFFF) >> 27] = bit
    return table


_DE_BRUIJN = _build_de_bruijn()


@njit(inline="always", cache=True)
def lowest_bit_index(x):
    """Index of the lowest set bit of a positive integer below 2**32 (de Bruijn multiply)."""
    return _DE_BRUIJN[(((x & -x) * 0x077CB531) & 0xFFFFFFFF) >> 27]


@njit(inline="always", cache=True)
def local_index(dz, dy, dx):
    """Local index ``(dz+1)*9 + (dy+1)*3 + (dx+1)`` of direction ``(dz, dy, dx)``."""
    return (dz + 1) * 9 + (dy + 1) * 3 + (dx + 1)


@njit(inline="always", cache=True)
def neighbour_bit(j):
    """Mask bit of the neighbour in direction of local index ``j`` (``j != 13``)."""
    return j if j < CUBE else j - 1


@njit(cache=True)
def neighbour_mask26(vals, sign, outside_earlier, z, y, x, depth, height, width):
    """26-bit mask of the neighbours of voxel ``(z, y, x)`` that precede it.

    Parameters
    ----------
    vals : (D*H*W,) array
        The values in C order (float32, float64, or distinct integer keys).
    sign : int
        +1 or -1: voxel ``a`` precedes ``b`` when ``(vals[a], sign*a) < (vals[b], sign*b)``.
    outside_earlier : bool
        Whether the voxels outside the volume precede every voxel.
    z, y, x, depth, height, width : int

    Returns
    -------
    int
        Bit ``k`` set when neighbour ``k`` (raster order, see the module docstring) precedes.
    """
    centre = (z * height + y) * width + x
    value = vals[centre]
    key = sign * centre
    mask = 0
    for k in range(26):
        j = k + (k >= CUBE)
        zz = z + j // 9 - 1
        yy = y + (j // 3) % 3 - 1
        xx = x + j % 3 - 1
        if 0 <= zz < depth and 0 <= yy < height and 0 <= xx < width:
            u = (zz * height + yy) * width + xx
            value_u = vals[u]
            earlier = (value_u < value) | ((value_u == value) & (sign * u < key))
        else:
            earlier = outside_earlier
        mask |= int(earlier) << k
    return mask


@njit(cache=True)
def owned_cells(mask26):
    """Bitset of the local cells voxel owns (bit ``j`` set iff cell ``j`` is owned).

    Parameters
    ----------
    mask26 : int
        Bit ``k`` set iff neighbour ``k`` precedes the voxel.

    Returns
    -------
    int
        27-bit set; the cube (bit 13) is always in it.
    """
    mask = int(mask26)
    owned = 0
    for j in range(N_LOCAL):
        if (mask & int(SHARED_NEIGHBOUR_BITS[j])) == 0:
            owned |= 1 << j
    return owned


def _build_priority_tables():
    """The rule's tables with the cells renumbered by priority (see :func:`rule_code`)."""
    order = sorted(range(N_LOCAL), key=lambda j: (-int(LOCAL_DIM[j]), j))
    order.remove(CUBE)
    order.append(CUBE)
    local_of = np.array(order, dtype=np.int64)
    priority_of = np.argsort(local_of).astype(np.int64)

    def renumber(bits: int) -> int:
        return sum(1 << int(priority_of[j]) for j in range(N_LOCAL) if (bits >> j) & 1)

    faces = np.array([renumber(int(FACE_BITS[j])) for j in order], dtype=np.int64)
    cofaces = np.array([renumber(int(COFACE_BITS[j])) for j in order], dtype=np.int64)
    shared = np.array([int(SHARED_NEIGHBOUR_BITS[j]) for j in order], dtype=np.int64)
    return local_of, faces, cofaces, shared


# Priority numbering: the 6 faces, the 12 edges, the 8 corners, each by local index, then the
# cube (26). The rule's queues pop the lowest set bit in this numbering.
_LOCAL_OF_PRIORITY, _P_FACE_BITS, _P_COFACE_BITS, _P_SHARED_BITS = _build_priority_tables()
_P_FACES = (1 << 6) - 1
_P_CUBE = 1 << 26


@njit(inline="always", cache=True)
def _ready_faces(cells, unclassified):
    """The cells of ``cells`` (priority numbering) that are unclassified and have exactly one
    unclassified coface."""
    ready = 0
    rest = cells & unclassified
    while rest != 0:
        low = rest & -rest
        rest ^= low
        up = _P_COFACE_BITS[lowest_bit_index(low)] & unclassified
        if up != 0 and (up & (up - 1)) == 0:
            ready |= low
    return ready


@njit(inline="always", cache=True)
def _put(words, position, cell):
    """``words`` (a 3-tuple of ints, 12 cells of 5 bits each) with ``cell`` at ``position``."""
    w0, w1, w2 = words
    if position < 12:
        w0 |= cell << (5 * position)
    elif position < 24:
        w1 |= cell << (5 * (position - 12))
    else:
        w2 |= cell << (5 * (position - 24))
    return w0, w1, w2


@njit(inline="always", cache=True)
def sequence_cell(words, position):
    """Local index of the cell at ``position`` of the dual order of :func:`rule_code`."""
    if position < 12:
        return (words[0] >> (5 * position)) & 31
    if position < 24:
        return (words[1] >> (5 * (position - 12))) & 31
    return (words[2] >> (5 * (position - 24))) & 31


@njit(cache=True)
def rule_code(mask26):
    """ProcessLowerStars on the dual of the owned cells (see the module docstring), as integers.

    Parameters
    ----------
    mask26 : int
        Bit ``k`` set iff neighbour ``k`` precedes the voxel.

    Returns
    -------
    critical : int
        Bitset (local indices) of the critical cells.
    pair_starts : int
        Bit ``v`` set when the cells at positions ``v`` and ``v + 1`` of the dual order are a
        gradient pair.
    n_owned : int
        Number ``n`` of owned cells.
    words : tuple of 3 int
        The dual classification order: position ``v`` (0 .. n-1) holds the local index of a
        cell in bits ``5*(v%12) .. 5*(v%12)+4`` of ``words[v // 12]``
        (:func:`sequence_cell`). ``seq`` of the cell at position ``v`` is ``n - 1 - v``.

    Notes
    -----
    Internally the cells are numbered by priority (faces, edges, corners, each by local
    index, then the cube), so that the first cell of a queue is its lowest set bit.
    """
    mask = int(mask26)
    owned = 0
    for q in range(N_LOCAL):
        if (mask & _P_SHARED_BITS[q]) == 0:
            owned |= 1 << q
    n_owned = popcount32(owned)
    words = _put((0, 0, 0), 0, CUBE)
    if owned == _P_CUBE:
        return 1 << CUBE, 0, 1, words
    first = lowest_bit_index(owned & _P_FACES)
    unclassified = owned ^ (_P_CUBE | (1 << first))
    words = _put(words, 1, _LOCAL_OF_PRIORITY[first])
    critical = 0
    pair_starts = 1
    position = 2
    zero = unclassified & _P_FACES
    one = _ready_faces(_P_FACE_BITS[first], unclassified)
    while one != 0 or zero != 0:
        while one != 0:
            cell = lowest_bit_index(one)
            one ^= 1 << cell
            up = _P_COFACE_BITS[cell] & unclassified
            if up == 0:
                zero |= 1 << cell
                continue
            mate = lowest_bit_index(up)
            unclassified ^= (1 << cell) | up
            zero &= ~up
            one &= ~up
            words = _put(_put(words, position, _LOCAL_OF_PRIORITY[mate]), position + 1,
                         _LOCAL_OF_PRIORITY[cell])
            pair_starts |= 1 << position
            position += 2
            one |= _ready_faces(_P_FACE_BITS[cell] | _P_FACE_BITS[mate], unclassified)
        if zero != 0:
            cell = lowest_bit_index(zero)
            zero ^= 1 << cell
            unclassified ^= 1 << cell
            critical |= 1 << _LOCAL_OF_PRIORITY[cell]
            words = _put(words, position, _LOCAL_OF_PRIORITY[cell])
            position += 1
            one |= _ready_faces(_P_FACE_BITS[cell], unclassified)
    return critical, pair_starts, n_owned, words


@njit(cache=True)
def voxel_rule(mask26, partner, seq):
    """Pair the cells a voxel owns into a perfect discrete gradient.

    Parameters
    ----------
    mask26 : int
        Bit ``k`` set iff neighbour ``k`` precedes the voxel (see the module docstring).
    partner : (27,) int8 or int32 array
        Output: -2 not owned, -1 critical, else the local index of the paired cell.
    seq : (27,) int8 or int32 array
        Output: position of each owned cell in the voxel's refined filtration order, -1 when
        not owned.

    Returns
    -------
    int
        The number of critical cells (0 to 7).

    Notes
    -----
    Only this function touches the arrays (the work is :func:`rule_code` on integers), so
    its Python body also runs in the CUDA simulator with any kind of array.
    """
    critical, pair_starts, n, words = rule_code(mask26)
    for j in range(N_LOCAL):
        partner[j] = NOT_OWNED
        seq[j] = -1
    for position in range(n):
        cell = sequence_cell(words, position)
        seq[cell] = n - 1 - position
        if (critical >> cell) & 1:
            partner[cell] = CRITICAL
        elif (pair_starts >> position) & 1:
            mate = sequence_cell(words, position + 1)
            partner[cell] = mate
            partner[mate] = cell
    return popcount32(critical)


@njit(cache=True)
def critical_cells(mask26):
    """Bitset of the critical cells :func:`voxel_rule` leaves (no arrays written)."""
    return rule_code(mask26)[0]


@njit(cache=True)
def critical_counts(mask26):
    """Numbers ``(c0, c1, c2, c3)`` of critical corners, edges, faces and cubes of a voxel."""
    critical = critical_cells(mask26)
    return (popcount32(critical & int(DIM_BITS[0])), popcount32(critical & int(DIM_BITS[1])),
            popcount32(critical & int(DIM_BITS[2])), popcount32(critical & int(DIM_BITS[3])))
