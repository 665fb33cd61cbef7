"""The 3D CPU persistence core: a per-voxel discrete gradient, two union-finds and a small H1.

Per volume ``(D, H, W)`` (see :mod:`satloss_gpu.kernels.common.local_pairing3d` for the
complex, the local cells of a voxel and the rule that pairs them):

1. The first and last voxels of the (value, index) order.
2. One raster pass, row by row: every voxel's 26-neighbour mask, its *owned pattern* (the set
   of local cells it owns, which is all the rule depends on), the pattern's id in a table
   built once per process (every possible owned set, 15,935 of them, with the rule's output),
   then the gradient parents of the owned corners, the dual parent of the voxel and the
   critical edges and faces, each with a sort key (the order-preserving bits of the voxel's
   value) and a payload ``12 * voxel + edge slot`` or ``6 * voxel + face slot``. Critical
   cells are generated in raster order and, inside a voxel, in the rule's sequence, so a
   stable sort orders them by (value, voxel, sequence): a filtration of the whole complex.
3. Two stable LSD radix sorts, of the critical edges and of the critical faces (their
   generation indices).
4. H0: the roots of the corner gradient (critical corners, carrying their birth voxel) are
   numbered and every critical edge's two corners resolved to root numbers, in generation
   order (the gradient paths are local there); then Kruskal over the sorted edges with a
   union-find over root numbers and the elder rule; the edges that merge are marked
   (H0-negative).
5. H2: the same over voxels (dual gradient; critical cubes and one cell for the outside are
   the roots) with the critical faces in reverse; the younger voxel dies. The faces that
   merge nothing are kept, in order: they are the H1 deaths.
6. H1: a lazy Morse reduction. Each kept face, in increasing order, is a column: the
   boundary (four edges) goes on a max-heap keyed by (owner voxel's order, sequence) and is
   reduced youngest first. Edges that cannot matter are never pushed: an H0-negative critical
   edge (compression), a regular edge paired with a corner (it flows to nothing). A popped
   edge with an even count cancels; a regular edge paired with a face is replaced by that
   face's other edges (its gradient path); a critical edge that is already an earlier
   column's pivot adds that column's stored remainder; any other critical edge is the pivot:
   the pair is (edge voxel, face voxel) and the rest of the heap is stored as it is. A stored
   remainder is expanded down to critical edges the first time another column adds it (most
   are never added). Every column finds a pivot (a box has no essential H1); memory is
   O(critical cells). Columns follow the filtration, spatially random, so the data of
   columns ahead is prefetched.

   From :data:`_STAGED_COLUMNS` columns on (noise; the lazy pass's data no longer stays in
   the caches), H1 runs in two stages instead. Stage A expands every column's boundary in
   full, with the same heap and the same edges never pushed, down to critical edges, written
   as their ranks in the filtration (CSR rows); the columns go in raster order of their
   voxels, so consecutive columns share their neighbourhoods in the caches, and with threads
   the raster order is cut into parts. Stage B
   (:func:`satloss_gpu.kernels.cpu.morse_reduction.reduce_ranked`) reduces the short rows
   (about 3 terms on noise) in filtration order with a pivot map, adding reduced columns by
   merging sorted lists. Both give the same pairs.

H0 and H2 are independent: with two threads they run concurrently. H1 needs both.

The V-construction runs the same steps in the reversed order with the outside earlier (as in
2D): the masks set the bits of later and of outside neighbours, surface cells belong to
nobody (outer corners hang from one exterior corner, unowned edges drop out of H1), the
sorted lists are read from the other end, the elder rules compare the other way, and the
three passes give the V-construction's H2, H0 and H1 (births and deaths swapped).

:func:`batch_pairs3d` runs the volumes of a batch on the calling thread and helper threads of
the 2D core's non-spinning pool; a single volume splits its raster pass into z-slabs over
the threads, runs H0 and H2 concurrently and splits H1's stage A.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from numba import njit

from ..common.scalar import precedes
from ..common.local_pairing3d import (
    CUBE,
    FACE_BITS,
    LOCAL_DIM,
    LOCAL_OFFSETS,
    N_LOCAL,
    SHARED_NEIGHBOUR_BITS,
    voxel_rule,
)
from .local_pairing import (
    _executor,
    _extremes,
    _ordered_key,
    _radix_sort,
    _unsigned_bits,
)
from .morse_reduction import _prefetch, reduce_ranked

__all__ = ["batch_pairs3d", "volume_pairs3d", "stage_times3d", "pattern_table", "estimated_bytes",
           "MAX_VOXELS"]

#: Most voxels per volume: edge payloads ``12 * voxel + slot`` are uint32, corner ids of a
#: thin volume (up to 8 per voxel) and heap keys ``32 * voxel + sequence`` stay in range.
MAX_VOXELS = 2**27

# ---------------------------------------------------------------------------------------
# Local geometry derived from the rule's tables.

_EDGE_LOCAL = np.flatnonzero(LOCAL_DIM == 1).astype(np.int64)  # (12,) edge slot -> local
_FACE_LOCAL = np.flatnonzero(LOCAL_DIM == 2).astype(np.int64)  # (6,) face slot -> local


def _local_slots(locals_: np.ndarray) -> np.ndarray:
    slots = np.full(N_LOCAL, -1, dtype=np.int64)
    slots[locals_] = np.arange(locals_.size)
    return slots


_EDGE_SLOT = _local_slots(_EDGE_LOCAL)
_FACE_SLOT = _local_slots(_FACE_LOCAL)


def _bits_of(bitset: int) -> list[int]:
    return [j for j in range(N_LOCAL) if (int(bitset) >> j) & 1]


def _geometry():
    """Endpoints of every edge, edges of every face, and the voxels sharing every edge."""
    ends = np.full((N_LOCAL, 2), -1, dtype=np.int64)
    face_edges = np.full((N_LOCAL, 4), -1, dtype=np.int64)
    sharers = np.full((N_LOCAL, 3), -1, dtype=np.int64)
    reframed = np.full((N_LOCAL, 3), -1, dtype=np.int64)
    for j in range(N_LOCAL):
        if LOCAL_DIM[j] == 1:
            ends[j] = _bits_of(FACE_BITS[j])
            neighbours = _bits_of(SHARED_NEIGHBOUR_BITS[j])
            for i, k in enumerate(neighbours):
                t = LOCAL_OFFSETS[k if k < CUBE else k + 1]
                sharers[j, i] = (t[0] + 1) * 9 + (t[1] + 1) * 3 + (t[2] + 1)
                s = LOCAL_OFFSETS[j] - 2 * t  # the same edge seen from the neighbour
                reframed[j, i] = (s[0] + 1) * 9 + (s[1] + 1) * 3 + (s[2] + 1)
        if LOCAL_DIM[j] == 2:
            face_edges[j] = _bits_of(FACE_BITS[j])
    return ends, face_edges, sharers, reframed


_EDGE_ENDS, _FACE_EDGES, _EDGE_SHARERS, _EDGE_REFRAMED = _geometry()
_DIMS = LOCAL_DIM.astype(np.int64)
_SHARED = SHARED_NEIGHBOUR_BITS.astype(np.int64)

# ---------------------------------------------------------------------------------------
# The pattern table: one row of int8 per owned set.

_MAX_CRITICAL = 7
_PARTNER = 0  # 27: -2 not owned, -1 critical, else the paired local cell
_SEQ = 27  # 27: position in the voxel's refined order
_LOCAL_OF_SEQ = 54  # 27: local cell at each position
_CE_RANK = 81  # 27: rank of a critical edge among the voxel's critical edges (by sequence)
_N_CE = 108
_CE = 109  # 7: critical edges (local) by sequence
_N_CF = 116
_CF = 117  # 7: critical faces (local) by sequence
_CUBE_PARTNER = 124  # face the cube is paired with, -1 if critical
_N_CORNER = 125
_CORNER = 126  # 8: owned corners (local)
_CORNER_PARENT = 134  # 8: -1 critical, else the corner at the other end of the paired edge
_ROW = 144
_HASH_SIZE = 1 << 16
_HASH_MULT = 0x9E3779B1


@njit(cache=True)
def _closure(cells, shared):
    """The owned set of the mask that leaves exactly the neighbours sharing ``cells`` later."""
    later = 0
    for j in range(N_LOCAL):
        if (cells >> j) & 1:
            later |= shared[j]
    closed = 0
    for j in range(N_LOCAL):
        if (shared[j] & ~later) == 0:
            closed |= 1 << j
    return closed, later


@njit(cache=True)
def _enumerate_owned_sets(shared):
    """Every possible owned set, by Ganter's NextClosure (lectic order).

    A set of cells is an owned set iff it is closed: it holds every cell whose sharing
    neighbours all share some cell of the set.
    """
    out = np.empty(1 << 15, dtype=np.int64)
    full = (1 << N_LOCAL) - 1
    current, _ = _closure(0, shared)
    n = 0
    out[n] = current
    n += 1
    while current != full:
        for i in range(N_LOCAL - 1, -1, -1):
            bit = 1 << i
            if current & bit:
                continue
            low = current & (bit - 1)
            candidate, _ = _closure(low | bit, shared)
            if (candidate & (bit - 1)) == low:
                current = candidate
                break
        if n == out.size:
            out = np.concatenate((out, np.empty(out.size, dtype=np.int64)))
        out[n] = current
        n += 1
    return out[:n]


@njit(cache=True)
def _build_rows(owned_sets, shared, dims, face_bits, ends):
    """Rows of the pattern table (see the ``_PARTNER`` .. ``_CORNER_PARENT`` offsets)."""
    n_patterns = owned_sets.size
    rows = np.full((n_patterns, _ROW), -1, dtype=np.int8)
    partner = np.empty(N_LOCAL, dtype=np.int32)
    seq = np.empty(N_LOCAL, dtype=np.int32)
    all26 = (1 << 26) - 1
    for p in range(n_patterns):
        _, later = _closure(owned_sets[p], shared)
        voxel_rule(all26 & ~later, partner, seq)
        row = rows[p]
        n_owned = 0
        for j in range(N_LOCAL):
            row[_PARTNER + j] = partner[j]
            row[_SEQ + j] = seq[j]
            if seq[j] >= 0:
                row[_LOCAL_OF_SEQ + seq[j]] = j
                n_owned += 1
        n_ce = 0
        n_cf = 0
        for position in range(n_owned):
            j = row[_LOCAL_OF_SEQ + position]
            if partner[j] == -1 and dims[j] == 1:
                row[_CE + n_ce] = j
                row[_CE_RANK + j] = n_ce
                n_ce += 1
            if partner[j] == -1 and dims[j] == 2:
                row[_CF + n_cf] = j
                n_cf += 1
        row[_N_CE] = n_ce
        row[_N_CF] = n_cf
        row[_CUBE_PARTNER] = partner[CUBE]
        n_corner = 0
        for j in range(N_LOCAL):
            if dims[j] == 0 and partner[j] != -2:
                row[_CORNER + n_corner] = j
                e = partner[j]
                if e == -1:
                    row[_CORNER_PARENT + n_corner] = -1
                else:
                    row[_CORNER_PARENT + n_corner] = ends[e, 0] + ends[e, 1] - j
                n_corner += 1
        row[_N_CORNER] = n_corner
    return rows


@njit(cache=True)
def _hash_of(owned):
    return ((owned * _HASH_MULT) & 0xFFFFFFFF) >> 16


@njit(cache=True)
def _build_hash(owned_sets):
    keys = np.zeros(_HASH_SIZE, dtype=np.int64)
    values = np.zeros(_HASH_SIZE, dtype=np.int32)
    for p in range(owned_sets.size):
        h = _hash_of(owned_sets[p])
        while keys[h] != 0:
            h = (h + 1) & (_HASH_SIZE - 1)
        keys[h] = owned_sets[p]
        values[h] = p
    return keys, values


def _cell_words(rows: np.ndarray, vertex: bool) -> np.ndarray:
    """Per owned set and local cell: sequence, partner and critical-edge rank in 13 bits."""
    seq = rows[:, _SEQ : _SEQ + N_LOCAL].astype(np.int64)
    partner = rows[:, _PARTNER : _PARTNER + N_LOCAL].astype(np.int64)
    rank = rows[:, _CE_RANK : _CE_RANK + N_LOCAL].astype(np.int64)
    if vertex:
        rank = np.where(rank >= 0, rows[:, _N_CE : _N_CE + 1].astype(np.int64) - 1 - rank, rank)
    words = np.zeros((rows.shape[0], 32), dtype=np.uint16)
    words[:, :N_LOCAL] = (np.maximum(seq, 0) | (partner + 2) << 5
                          | np.maximum(rank, 0) << 10)
    return words


_TABLE_LOCK = threading.Lock()
_TABLE: list = []


def pattern_table():
    """The rule's output for every owned set, built once per process.

    Returns
    -------
    owned : (P,) int64
        The owned sets (27-bit sets of local cells), P = 15,935.
    rows : (P, 144) int8
        Per owned set: partner, sequence, critical edges and faces in sequence, corners and
        their gradient parents, the cube's partner (offsets ``_PARTNER`` .. in this module).
    hash_keys, hash_values : (65536,) int64, int32
        Open-addressing table from an owned set to its row.
    words_t, words_v : (P, 32) uint16
        What H1 reads of cell ``j`` in one cache line: ``sequence | (partner + 2) << 5 |
        rank << 10``, the rank of a critical edge in generation order of the T- or
        V-construction.
    """
    with _TABLE_LOCK:
        if not _TABLE:
            owned = _enumerate_owned_sets(_SHARED)
            rows = _build_rows(owned, _SHARED, _DIMS, FACE_BITS.astype(np.int64), _EDGE_ENDS)
            if (rows[:, _N_CE] > _MAX_CRITICAL).any() or (rows[:, _N_CF] > _MAX_CRITICAL).any():
                raise RuntimeError("the voxel rule left more critical cells than expected")
            keys, values = _build_hash(owned)
            _TABLE.extend([owned, rows, keys, values, _cell_words(rows, False),
                           _cell_words(rows, True)])
    return tuple(_TABLE)


# ---------------------------------------------------------------------------------------
# Step 2: the raster pass.


@njit(cache=True, nogil=True)
def _row_masks(flat, z, y, depth, height, width, vertex, masks):
    """26-neighbour masks of the voxels of row ``(z, y)``, in the working order.

    T: bit set when the neighbour precedes (outside: later, bit clear). V (the reversed order,
    outside earlier): bit set when the neighbour comes later or lies outside. Direction by
    direction over slices, so that the loops vectorise.
    """
    masks[:] = 0
    hw = height * width
    start = z * hw + y * width
    centre = flat[start : start + width]
    for k in range(26):
        j = k + (k >= CUBE)
        dz = j // 9 - 1
        dy = (j // 3) % 3 - 1
        dx = j % 3 - 1
        bit = np.uint32(1 << k)
        zz = z + dz
        yy = y + dy
        if zz < 0 or zz >= depth or yy < 0 or yy >= height:
            if vertex:
                for x in range(width):
                    masks[x] |= bit
            continue
        lo = 1 if dx < 0 else 0
        hi = width - 1 if dx > 0 else width
        if vertex:
            if dx < 0:
                masks[0] |= bit
            if dx > 0 and width > 0:
                masks[width - 1] |= bit
        if hi <= lo:
            continue
        nstart = zz * hw + yy * width + dx
        neighbour = flat[nstart + lo : nstart + hi]
        c = centre[lo:hi]
        out = masks[lo:hi]
        count = hi - lo
        if vertex:
            if k < 13:
                for i in range(count):
                    out[i] |= bit if neighbour[i] > c[i] else np.uint32(0)
            else:
                for i in range(count):
                    out[i] |= bit if neighbour[i] >= c[i] else np.uint32(0)
        else:
            if k < 13:
                for i in range(count):
                    out[i] |= bit if neighbour[i] <= c[i] else np.uint32(0)
            else:
                for i in range(count):
                    out[i] |= bit if neighbour[i] < c[i] else np.uint32(0)


@njit(cache=True, nogil=True)
def _row_owned(masks, shared, owned):
    """Owned sets of a row from its masks (cell j owned iff no sharing neighbour precedes)."""
    width = masks.size
    for x in range(width):
        owned[x] = np.uint32(1 << CUBE)
    for j in range(N_LOCAL):
        if j == CUBE:
            continue
        sh = np.uint32(shared[j])
        bit = np.uint32(1 << j)
        for x in range(width):
            owned[x] |= bit if (masks[x] & sh) == 0 else np.uint32(0)


@njit(inline="always", cache=True)
def _lookup(hash_keys, hash_values, owned):
    h = _hash_of(owned)
    while hash_keys[h] != owned:
        h = (h + 1) & (_HASH_SIZE - 1)
    return hash_values[h]


@njit(cache=True, nogil=True)
def _grown(array, capacity):
    """A copy of ``array`` with room for ``capacity`` items."""
    out = np.empty(capacity, dtype=array.dtype)
    for i in range(array.size):
        out[i] = array[i]
    return out


@njit(cache=True, nogil=True)
def _raster(flat, depth, height, width, z0, z1, vertex, want_edges, want_faces, rows,
            hash_keys, hash_values, pattern, corner_parent, voxel_parent, edge_start):
    """The raster pass over z-slab ``[z0, z1)``.

    Writes ``pattern[v]`` (row of the pattern table), ``corner_parent`` of the owned corners
    (the corner at the other end of the paired edge, or ``-(v + 1)`` for a critical corner born
    at voxel ``v``), ``voxel_parent[v]`` (the voxel across the paired face, ``D*H*W`` for the
    outside, ``v`` for a critical cube) and ``edge_start[v]`` (the number of critical edges
    generated before voxel ``v`` in this slab).

    Returns
    -------
    edge_keys : (m,) uint64
        Order-preserving bits of each critical edge's value, in generation order.
    edge_payload : (m,) uint32
        ``12 * voxel + edge slot``.
    face_keys : (f,) uint64
    face_payload : (f,) uint32
        ``6 * voxel + face slot``.
    """
    n = depth * height * width
    hw = height * width
    s2 = width + 1
    s1 = (height + 1) * s2
    bits = _unsigned_bits(flat)
    corner_delta = np.zeros(N_LOCAL, dtype=np.int64)
    voxel_delta = np.zeros(N_LOCAL, dtype=np.int64)
    for j in range(N_LOCAL):
        dz = j // 9 - 1
        dy = (j // 3) % 3 - 1
        dx = j % 3 - 1
        corner_delta[j] = ((dz + 1) >> 1) * s1 + ((dy + 1) >> 1) * s2 + ((dx + 1) >> 1)
        voxel_delta[j] = dz * hw + dy * width + dx
    slab = (z1 - z0) * hw
    cap_e = slab // 4 + 8 * width + 16
    cap_f = slab // 3 + 8 * width + 16
    edge_keys = np.empty(cap_e if want_edges else 0, dtype=np.uint64)
    edge_payload = np.empty(edge_keys.size, dtype=np.uint32)
    face_keys = np.empty(cap_f if want_faces else 0, dtype=np.uint64)
    face_payload = np.empty(face_keys.size, dtype=np.uint32)
    masks = np.empty(width, dtype=np.uint32)
    owned = np.empty(width, dtype=np.uint32)
    shared = SHARED_NEIGHBOUR_BITS
    ne = np.int64(0)
    nf = np.int64(0)
    for z in range(z0, z1):
        for y in range(height):
            _row_masks(flat, z, y, depth, height, width, vertex, masks)
            _row_owned(masks, shared, owned)
            if want_edges and ne + _MAX_CRITICAL * width > edge_keys.size:
                edge_keys = _grown(edge_keys, 2 * edge_keys.size + _MAX_CRITICAL * width)
                edge_payload = _grown(edge_payload, edge_keys.size)
            if want_faces and nf + _MAX_CRITICAL * width > face_keys.size:
                face_keys = _grown(face_keys, 2 * face_keys.size + _MAX_CRITICAL * width)
                face_payload = _grown(face_payload, face_keys.size)
            base = z * hw + y * width
            corner_base = (z * (height + 1) + y) * s2
            for x in range(width):
                v = base + x
                p = _lookup(hash_keys, hash_values, np.int64(owned[x]))
                pattern[v] = p
                row = rows[p]
                cb = corner_base + x
                for i in range(row[_N_CORNER]):
                    parent = row[_CORNER_PARENT + i]
                    target = cb + corner_delta[row[_CORNER + i]]
                    if parent < 0:
                        corner_parent[target] = -(v + 1)
                    else:
                        corner_parent[target] = cb + corner_delta[parent]
                f = row[_CUBE_PARTNER]
                if f < 0:
                    voxel_parent[v] = v
                else:
                    zz = z + f // 9 - 1
                    yy = y + (f // 3) % 3 - 1
                    xx = x + f % 3 - 1
                    inside = (0 <= zz < depth) & (0 <= yy < height) & (0 <= xx < width)
                    voxel_parent[v] = v + voxel_delta[f] if inside else n
                edge_start[v] = ne
                if want_edges:
                    n_ce = row[_N_CE]
                    if n_ce > 0:
                        key = _ordered_key(bits[v])
                        for i in range(n_ce):
                            e = row[_CE + (n_ce - 1 - i if vertex else i)]
                            edge_keys[ne] = key
                            edge_payload[ne] = np.uint32(12 * v + _EDGE_SLOT[e])
                            ne += 1
                if want_faces:
                    n_cf = row[_N_CF]
                    if n_cf > 0:
                        key = _ordered_key(bits[v])
                        for i in range(n_cf):
                            f = row[_CF + (n_cf - 1 - i if vertex else i)]
                            face_keys[nf] = key
                            face_payload[nf] = np.uint32(6 * v + _FACE_SLOT[f])
                            nf += 1
    return edge_keys[:ne], edge_payload[:ne], face_keys[:nf], face_payload[:nf]


@njit(cache=True, nogil=True)
def _outer_corners(depth, height, width, corner_parent):
    """Hang every corner on the volume's surface from the exterior corner (V-construction)."""
    s2 = width + 1
    s1 = (height + 1) * s2
    exterior = (depth + 1) * s1
    for cz in range(depth + 1):
        for cy in range(height + 1):
            row = cz * s1 + cy * s2
            if cz == 0 or cz == depth or cy == 0 or cy == height:
                for cx in range(width + 1):
                    corner_parent[row + cx] = exterior
            else:
                corner_parent[row] = exterior
                corner_parent[row + width] = exterior


@njit(cache=True, nogil=True)
def _concatenate(parts_keys, parts_payload):
    total = 0
    for part in parts_keys:
        total += part.size
    keys = np.empty(total, dtype=np.uint64)
    payload = np.empty(total, dtype=np.uint32)
    at = 0
    for s in range(len(parts_keys)):
        k = parts_keys[s]
        q = parts_payload[s]
        for i in range(k.size):
            keys[at + i] = k[i]
            payload[at + i] = q[i]
        at += k.size
    return keys, payload


@njit(cache=True, nogil=True)
def _shift(array, start, stop, offset):
    for i in range(start, stop):
        array[i] += offset


# ---------------------------------------------------------------------------------------
# Steps 4 and 5: the two union-find passes.


@njit(inline="always", cache=True)
def _decode_voxel(v, height, width):
    """``(z, y, x)`` of flat index ``v`` by reciprocal multiplications (exact below 2**40)."""
    hw = height * width
    z = np.int64(v * (1.0 / hw))
    z += np.int64((z + 1) * hw <= v) - np.int64(z * hw > v)
    r = v - z * hw
    y = np.int64(r * (1.0 / width))
    y += np.int64((y + 1) * width <= r) - np.int64(y * width > r)
    return z, y, r - y * width


@njit(inline="always", cache=True)
def _corner_delta(j, s1, s2):
    return ((j // 9) >> 1) * s1 + (((j // 3) % 3) >> 1) * s2 + ((j % 3) >> 1)


@njit(inline="always", cache=True)
def _edge_corners(packed, height, width, s1, s2):
    """Voxel and the two corner ids of edge payload ``12 * voxel + slot``."""
    v = packed // 12
    j = _EDGE_LOCAL[packed - 12 * v]
    z, y, x = _decode_voxel(v, height, width)
    cb = (z * (height + 1) + y) * s2 + x
    return (v, cb + _corner_delta(_EDGE_ENDS[j, 0], s1, s2),
            cb + _corner_delta(_EDGE_ENDS[j, 1], s1, s2), j)



# The two passes visit the sorted cells in the order of their values, spatially random: on
# 128^3 noise every find through the gradient forests missed the caches (H0 and H2 took 20x
# their 64^3 time). So, as the 2D core does, the roots are numbered in raster order first and
# every critical cell's two ends are resolved to root numbers in generation (raster) order,
# where the gradient paths are local; the passes then run on small arrays.


def _number_roots(parent: np.ndarray, negative_roots: bool) -> np.ndarray:
    """Number the roots of a forest in index order; returns the cell of every number.

    ``negative_roots``: roots hold a negative value (corners: ``-(birth + 1)``), else roots
    are their own parent (voxels). Roots then hold ``-(number + 1)``. (NumPy: a compiled
    loop with the branch was 10x slower.)
    """
    if negative_roots:
        where = np.flatnonzero(parent < 0)
        cells = (-parent[where] - 1).astype(np.int32)
    else:
        where = np.flatnonzero(parent == np.arange(parent.size, dtype=parent.dtype))
        cells = where.astype(np.int32)
    parent[where] = -1 - np.arange(where.size, dtype=parent.dtype)
    return cells


@njit(cache=True, nogil=True)
def _edge_ends(edge_payload, corner_parent, height, width, ends_a, ends_b):
    """Root numbers of the two corners of every critical edge (generation order)."""
    s2 = width + 1
    s1 = (height + 1) * s2
    for g in range(edge_payload.size):
        _v, a, b, _j = _edge_corners(np.int64(edge_payload[g]), height, width, s1, s2)
        corners = (a, b)
        for e in range(2):
            x = corners[e]
            while True:
                px = corner_parent[x]
                if px < 0:
                    break
                gx = corner_parent[px]
                if gx < 0:
                    x = px
                    break
                corner_parent[x] = gx
                x = gx
            number = -corner_parent[x] - 1
            if e == 0:
                ends_a[g] = number
            else:
                ends_b[g] = number


@njit(cache=True, nogil=True)
def _face_ends(face_payload, voxel_parent, depth, height, width, ends_a, ends_b):
    """Root numbers of the two voxels (or the outside) of every critical face."""
    for g in range(face_payload.size):
        v, across = _face_voxels(np.int64(face_payload[g]), depth, height, width)
        cells = (v, across)
        for e in range(2):
            x = cells[e]
            while True:
                px = voxel_parent[x]
                if px < 0:
                    break
                gx = voxel_parent[px]
                if gx < 0:
                    x = px
                    break
                voxel_parent[x] = gx
                x = gx
            number = -voxel_parent[x] - 1
            if e == 0:
                ends_a[g] = number
            else:
                ends_b[g] = number


@njit(cache=True, nogil=True)
def _h0_pass(flat, order, ends_a, ends_b, edge_payload, births, exterior, vertex, negative,
             out_a, out_b):
    """Kruskal over the sorted edges (``order``: generation indices), the elder rule.

    Union-find over the root numbers; ``births[k]`` is the birth voxel of root ``k``
    (``exterior`` = older than all). Writes (younger birth voxel, edge voxel); marks
    ``negative[g]`` for every merging edge. The V-construction reads ``order`` backwards.

    Returns
    -------
    int
        Number of pairs.
    """
    m = order.size
    n_roots = births.size
    parent = np.arange(n_roots).astype(np.int32)
    value = np.empty(n_roots, dtype=flat.dtype)
    for r in range(n_roots):
        value[r] = flat[births[r]] if births[r] != exterior else 0
    k = 0
    for t in range(m):
        g = np.int64(order[m - 1 - t if vertex else t])
        ra = np.int64(ends_a[g])
        while parent[ra] != ra:
            gp = parent[parent[ra]]
            parent[ra] = gp
            ra = gp
        rb = np.int64(ends_b[g])
        while parent[rb] != rb:
            gp = parent[parent[rb]]
            parent[rb] = gp
            rb = gp
        if ra == rb:
            continue
        birth_a = births[ra]
        birth_b = births[rb]
        if birth_a == exterior:
            a_older = True
        elif birth_b == exterior:
            a_older = False
        elif vertex:
            a_older = precedes(value[rb], birth_b, value[ra], birth_a)
        else:
            a_older = precedes(value[ra], birth_a, value[rb], birth_b)
        if a_older:
            parent[rb] = ra
            younger = birth_b
        else:
            parent[ra] = rb
            younger = birth_a
        out_a[k] = younger
        out_b[k] = np.int64(edge_payload[g]) // 12
        k += 1
        negative[g] = 1
    return k


@njit(inline="always", cache=True)
def _face_voxels(packed, depth, height, width):
    """Voxel of face payload ``6 * voxel + slot`` and the voxel across (``D*H*W`` outside)."""
    v = packed // 6
    f = _FACE_LOCAL[packed - 6 * v]
    z, y, x = _decode_voxel(v, height, width)
    zz = z + f // 9 - 1
    yy = y + (f // 3) % 3 - 1
    xx = x + f % 3 - 1
    inside = (0 <= zz < depth) & (0 <= yy < height) & (0 <= xx < width)
    return v, ((zz * height + yy) * width + xx if inside else depth * height * width)


@njit(cache=True, nogil=True)
def _h2_pass(flat, order, ends_a, ends_b, face_payload, roots, outside, vertex, out_a, out_b,
             kept_out):
    """The critical faces in reverse (``order``: generation indices), merging voxels.

    Union-find over root numbers; ``roots[k]`` is the voxel of root ``k`` (``outside``: the
    oldest). Writes (face voxel, younger voxel); the generation indices of the faces that
    merge nothing go to ``kept_out`` in increasing working order.

    Returns
    -------
    n_pairs, n_kept : int
    """
    m = order.size
    n_roots = roots.size
    parent = np.arange(n_roots).astype(np.int32)
    value = np.empty(n_roots, dtype=flat.dtype)
    for r in range(n_roots):
        value[r] = flat[roots[r]] if roots[r] != outside else 0
    k = 0
    kept = 0
    for t in range(m):
        g = np.int64(order[t if vertex else m - 1 - t])
        ra = np.int64(ends_a[g])
        while parent[ra] != ra:
            gp = parent[parent[ra]]
            parent[ra] = gp
            ra = gp
        rb = np.int64(ends_b[g])
        while parent[rb] != rb:
            gp = parent[parent[rb]]
            parent[rb] = gp
            rb = gp
        if ra == rb:
            kept_out[kept] = g
            kept += 1
            continue
        va = roots[ra]
        vb = roots[rb]
        if va == outside:
            a_older = True
        elif vb == outside:
            a_older = False
        elif vertex:
            a_older = precedes(value[ra], va, value[rb], vb)
        else:
            a_older = precedes(value[rb], vb, value[ra], va)
        if a_older:
            parent[rb] = ra
            younger = vb
        else:
            parent[ra] = rb
            younger = va
        out_a[k] = np.int64(face_payload[g]) // 6
        out_b[k] = younger
        k += 1
    # Kept faces were found in decreasing working order.
    for i in range(kept // 2):
        kept_out[i], kept_out[kept - 1 - i] = kept_out[kept - 1 - i], kept_out[i]
    return k, kept


# ---------------------------------------------------------------------------------------
# Step 6: H1 by a lazy Morse reduction.


@njit(inline="always", cache=True)
def _later(hi_a, lo_a, hi_b, lo_b):
    return (hi_a > hi_b) | ((hi_a == hi_b) & (lo_a > lo_b))


#: Columns ahead whose neighbourhoods H1 asks the cache for (values, patterns, edge numbers;
#: then the table rows and the per-edge flags).
_AHEAD_FAR = 12
_AHEAD_NEAR = 6


@njit(inline="always", cache=True)
def _clamp(v, n):
    return min(max(v, 0), n - 1)


@njit(cache=True, nogil=True)
def _grown_rows(array, capacity):
    """A copy of the 2-row ``array`` with ``capacity`` columns."""
    out = np.empty((2, capacity), dtype=array.dtype)
    for r in range(2):
        for i in range(array.shape[1]):
            out[r, i] = array[r, i]
    return out


@njit(cache=True, nogil=True)
def _h1_pass(flat, depth, height, width, columns, pattern, words, edge_start, negative, vertex,
             out_a, out_b):
    """The lazy Morse reduction of the kept faces (see the module docstring).

    ``columns`` are the kept faces (payloads ``6 * voxel + slot``) in increasing working
    order. Writes (edge voxel, face voxel) per column.

    ``words`` is the pattern table's ``words_t`` or ``words_v``. Heap entries are edges keyed
    by ``(order word of the owner voxel, 1024 * owner + 32 * sequence + local index)`` (the
    owner counted from the end for V). Edges that cannot matter are never pushed:
    unowned ones (V), those paired with a corner and H0-negative critical ones. A column's
    remainder is stored as the heap holds it when the pivot is found, and expanded down to
    critical edges (on a second heap) the first time another column adds it; most are never
    added.

    Everything runs in this one function: calls that take arrays would cost two atomic
    reference-count updates per array per call, which on noise was half of the time.

    Returns
    -------
    int
        Number of pairs (= columns), or ``-1 - c`` if column ``c`` found no pivot.
    """
    n = depth * height * width
    bits = _unsigned_bits(flat)
    n_cols = columns.size
    pivot_of = np.full(negative.size, -1, dtype=np.int32)
    store_first = np.zeros(n_cols, dtype=np.int64)
    store_count = np.zeros(n_cols, dtype=np.int64)
    expanded = np.zeros(n_cols, dtype=np.uint8)
    store_hi = np.empty(max(16, 4 * n_cols), dtype=np.uint64)
    store_lo = np.empty(store_hi.size, dtype=np.uint64)
    n_store = 0
    # Row 0: the column's heap; row 1: the heap of a stored remainder being expanded.
    heap_hi = np.empty((2, 1024), dtype=np.uint64)
    heap_lo = np.empty((2, 1024), dtype=np.uint64)
    drained_hi = np.empty(64, dtype=np.uint64)
    drained_lo = np.empty(64, dtype=np.uint64)
    cand_v = np.empty(4, dtype=np.int64)  # edges to push: voxel, local index there
    cand_j = np.empty(4, dtype=np.int64)
    hw = height * width
    word_cells = words.reshape(-1)
    for c in range(n_cols):
        # Columns follow the filtration, which jumps around the volume: ask for the data of
        # columns ahead (the reduction below is a chain of dependent loads).
        if c + _AHEAD_FAR < n_cols:
            ahead = np.int64(columns[c + _AHEAD_FAR]) // 6
            for dz in range(-1, 2):
                for dy in range(-1, 2):
                    u = _clamp(ahead + dz * hw + dy * width, n)
                    _prefetch(flat, u)
                    _prefetch(pattern, u)
                    _prefetch(edge_start, u)
        if c + _AHEAD_NEAR < n_cols:
            ahead = np.int64(columns[c + _AHEAD_NEAR]) // 6
            for dz in range(-1, 2):
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        u = _clamp(ahead + dz * hw + dy * width + dx, n)
                        _prefetch(word_cells, np.int64(pattern[u]) * 32)
                    u = _clamp(ahead + dz * hw + dy * width, n)
                    g = min(edge_start[u], negative.size - 1)
                    if g >= 0:
                        _prefetch(negative, g)
                        _prefetch(pivot_of, g)
        packed = np.int64(columns[c])
        p = packed // 6
        face = _FACE_LOCAL[packed - 6 * p]
        for e in range(4):
            cand_v[e] = p
            cand_j[e] = _FACE_EDGES[face, e]
        n_cand = 4
        pend_first = 0  # stored entries to push: store[pend_first : pend_first + pend_count]
        pend_count = 0
        sizes0 = 0
        sizes1 = 0
        active = 0
        draining = -1  # the column whose remainder is being expanded
        n_drained = 0
        pivot_found = False
        while True:
            size = sizes1 if active else sizes0
            if size + n_cand + pend_count > heap_hi.shape[1]:
                capacity = 2 * (size + n_cand + pend_count)
                heap_hi = _grown_rows(heap_hi, capacity)
                heap_lo = _grown_rows(heap_lo, capacity)
            # Push the candidate edges, keyed by their owners.
            for k in range(n_cand):
                v = cand_v[k]
                j = cand_j[k]
                w = words[pattern[v], j]
                if (w >> 5) & 31:  # owned by v
                    q = v
                    jq = j
                else:
                    z, y, x = _decode_voxel(v, height, width)
                    q = np.int64(-1)
                    jq = np.int64(-1)
                    for i in range(3):
                        t = _EDGE_SHARERS[j, i]
                        zz = z + t // 9 - 1
                        yy = y + (t // 3) % 3 - 1
                        xx = x + t % 3 - 1
                        if not ((0 <= zz < depth) & (0 <= yy < height) & (0 <= xx < width)):
                            if vertex:
                                q = np.int64(-2)
                                break
                            continue
                        u = (zz * height + yy) * width + xx
                        if q < 0:
                            earlier = True
                        elif vertex:
                            earlier = precedes(flat[q], q, flat[u], u)
                        else:
                            earlier = precedes(flat[u], u, flat[q], q)
                        if earlier:
                            q = u
                            jq = _EDGE_REFRAMED[j, i]
                    if q < 0:
                        continue  # nobody owns it (V: the volume's surface)
                    w = words[pattern[q], jq]
                partner = np.int64((w >> 5) & 31) - 2
                if partner == -1:
                    if negative[edge_start[q] + ((w >> 10) & 7)]:
                        continue  # compression
                elif _DIMS[partner] == 0:
                    continue  # flows to a corner: nothing
                hi = _ordered_key(bits[q])
                if vertex:
                    hi = ~hi
                lo = np.uint64((n - 1 - q if vertex else q) * 1024 + (w & 31) * 32 + jq)
                i = size
                while i > 0:
                    parent = (i - 1) >> 1
                    if not _later(hi, lo, heap_hi[active, parent], heap_lo[active, parent]):
                        break
                    heap_hi[active, i] = heap_hi[active, parent]
                    heap_lo[active, i] = heap_lo[active, parent]
                    i = parent
                heap_hi[active, i] = hi
                heap_lo[active, i] = lo
                size += 1
            n_cand = 0
            # Push stored entries (already keyed).
            for s in range(pend_first, pend_first + pend_count):
                hi = store_hi[s]
                lo = store_lo[s]
                i = size
                while i > 0:
                    parent = (i - 1) >> 1
                    if not _later(hi, lo, heap_hi[active, parent], heap_lo[active, parent]):
                        break
                    heap_hi[active, i] = heap_hi[active, parent]
                    heap_lo[active, i] = heap_lo[active, parent]
                    i = parent
                heap_hi[active, i] = hi
                heap_lo[active, i] = lo
                size += 1
            pend_count = 0
            if size == 0:
                if active == 0:
                    break  # no pivot: an error, reported below
                # The stored remainder of ``draining`` is expanded: keep it, then add it.
                count = n_drained
                if count <= store_count[draining]:
                    at = store_first[draining]
                else:
                    if n_store + count > store_hi.size:
                        store_hi = _grown(store_hi, 2 * (n_store + count))
                        store_lo = _grown(store_lo, store_hi.size)
                    at = n_store
                    n_store += count
                for s in range(count):
                    store_hi[at + s] = drained_hi[s]
                    store_lo[at + s] = drained_lo[s]
                store_first[draining] = at
                store_count[draining] = count
                expanded[draining] = 1
                sizes1 = 0
                active = 0
                pend_first = at
                pend_count = count
                continue
            # Pop the youngest entry with its multiplicity (pairs cancel).
            hi = heap_hi[active, 0]
            lo = heap_lo[active, 0]
            odd = False
            while size > 0 and heap_hi[active, 0] == hi and heap_lo[active, 0] == lo:
                odd = not odd
                size -= 1
                last_hi = heap_hi[active, size]
                last_lo = heap_lo[active, size]
                i = 0
                while True:
                    child = 2 * i + 1
                    if child >= size:
                        break
                    if child + 1 < size and _later(heap_hi[active, child + 1],
                                                   heap_lo[active, child + 1],
                                                   heap_hi[active, child], heap_lo[active, child]):
                        child += 1
                    if not _later(heap_hi[active, child], heap_lo[active, child], last_hi,
                                  last_lo):
                        break
                    heap_hi[active, i] = heap_hi[active, child]
                    heap_lo[active, i] = heap_lo[active, child]
                    i = child
                heap_hi[active, i] = last_hi
                heap_lo[active, i] = last_lo
            if active:
                sizes1 = size
            else:
                sizes0 = size
            if not odd:
                continue
            ilo = np.int64(lo)
            q = ilo >> 10
            if vertex:
                q = n - 1 - q
            jq = ilo & 31
            w = words[pattern[q], jq]
            partner = np.int64((w >> 5) & 31) - 2
            if partner != -1:
                # A regular edge paired with a face: its gradient path, the face's other edges.
                for e in range(4):
                    j2 = _FACE_EDGES[partner, e]
                    if j2 != jq:
                        cand_v[n_cand] = q
                        cand_j[n_cand] = j2
                        n_cand += 1
                continue
            if active:
                if n_drained == drained_hi.size:
                    drained_hi = _grown(drained_hi, 2 * n_drained)
                    drained_lo = _grown(drained_lo, drained_hi.size)
                drained_hi[n_drained] = hi
                drained_lo[n_drained] = lo
                n_drained += 1
                continue
            idx = edge_start[q] + ((w >> 10) & 7)
            col = pivot_of[idx]
            if col < 0:
                # The pivot: the rest of the heap is the column's remainder, stored as is.
                pivot_of[idx] = c
                out_a[c] = q
                out_b[c] = p
                pivot_found = True
                if n_store + size > store_hi.size:
                    store_hi = _grown(store_hi, 2 * (n_store + size))
                    store_lo = _grown(store_lo, store_hi.size)
                store_first[c] = n_store
                store_count[c] = size
                for s in range(size):
                    store_hi[n_store + s] = heap_hi[0, s]
                    store_lo[n_store + s] = heap_lo[0, s]
                n_store += size
                break
            pend_first = store_first[col]
            pend_count = store_count[col]
            if not expanded[col]:
                active = 1
                sizes1 = 0
                draining = col
                n_drained = 0
        if not pivot_found:
            return -1 - c
    return n_cols


# ---------------------------------------------------------------------------------------
# Step 6, two stages: every column's full Morse boundary in raster order, then the reduction.


@njit(cache=True, nogil=True)
def _h1_boundaries(flat, depth, height, width, columns, raster, first, stop, pattern, words,
                   edge_start, negative, rank, vertex):
    """Stage A: the Morse boundaries of columns ``columns[raster[first:stop]]``.

    ``raster`` orders the columns by their face's payload (raster order of the voxels: the
    neighbourhoods of consecutive columns overlap in the caches). Each boundary is expanded as
    in :func:`_h1_pass`, with the same keys and the same edges dropped, down to the critical
    edges that are not H0-negative; no pivot map is read, so the columns are independent.
    Only edges paired with faces go on the heap (critical ones never expand: they are
    collected, then sorted and cancelled in pairs), and an edge's owner is the sharing voxel
    whose owned set holds it (one table read per sharer instead of comparing values).
    ``rank[g]`` is the filtration rank (working order) of the critical edge of generation
    index ``g``.

    Returns
    -------
    term_start : (stop - first + 1,) int64
        Row ``r`` (column ``raster[first + r]``) holds ``terms[term_start[r]:term_start[r+1]]``.
    terms : (T,) int32
        Ranks of the boundary's critical edges, each row by decreasing rank.
    """
    n = depth * height * width
    bits = _unsigned_bits(flat)
    n_rows = stop - first
    term_start = np.empty(n_rows + 1, dtype=np.int64)
    terms = np.empty(max(64, 4 * n_rows), dtype=np.int32)
    n_terms = 0
    heap_hi = np.empty(1024, dtype=np.uint64)
    heap_lo = np.empty(1024, dtype=np.uint64)
    cand_v = np.empty(4, dtype=np.int64)
    cand_j = np.empty(4, dtype=np.int64)
    found = np.empty(64, dtype=np.int32)
    for r in range(n_rows):
        term_start[r] = n_terms
        packed = np.int64(columns[raster[first + r]])
        p = packed // 6
        face = _FACE_LOCAL[packed - 6 * p]
        for e in range(4):
            cand_v[e] = p
            cand_j[e] = _FACE_EDGES[face, e]
        n_cand = 4
        size = 0
        n_found = 0
        while True:
            if size + n_cand > heap_hi.size:
                heap_hi = _grown(heap_hi, 2 * (size + n_cand))
                heap_lo = _grown(heap_lo, heap_hi.size)
            decoded = np.int64(-1)
            z = y = x = np.int64(0)
            for k in range(n_cand):
                v = cand_v[k]
                j = cand_j[k]
                w = words[pattern[v], j]
                if (w >> 5) & 31:  # owned by v
                    q = v
                    jq = j
                else:
                    # The sharer whose owned set holds the edge (none: V's surface).
                    if v != decoded:
                        z, y, x = _decode_voxel(v, height, width)
                        decoded = v
                    q = np.int64(-1)
                    for i in range(3):
                        t = _EDGE_SHARERS[j, i]
                        zz = z + t // 9 - 1
                        yy = y + (t // 3) % 3 - 1
                        xx = x + t % 3 - 1
                        if not ((0 <= zz < depth) & (0 <= yy < height) & (0 <= xx < width)):
                            continue
                        u = (zz * height + yy) * width + xx
                        jq = _EDGE_REFRAMED[j, i]
                        w = words[pattern[u], jq]
                        if (w >> 5) & 31:
                            q = u
                            break
                    if q < 0:
                        continue
                partner = np.int64((w >> 5) & 31) - 2
                if partner == -1:
                    g = edge_start[q] + ((w >> 10) & 7)
                    if negative[g]:
                        continue  # compression
                    # A term: it never expands, so its place in the order does not matter.
                    if n_found == found.size:
                        found = _grown(found, 2 * n_found)
                    found[n_found] = rank[g]
                    n_found += 1
                    continue
                if _DIMS[partner] == 0:
                    continue  # flows to a corner: nothing
                hi = _ordered_key(bits[q])
                if vertex:
                    hi = ~hi
                lo = np.uint64((n - 1 - q if vertex else q) * 1024 + (w & 31) * 32 + jq)
                i = size
                while i > 0:
                    parent = (i - 1) >> 1
                    if not _later(hi, lo, heap_hi[parent], heap_lo[parent]):
                        break
                    heap_hi[i] = heap_hi[parent]
                    heap_lo[i] = heap_lo[parent]
                    i = parent
                heap_hi[i] = hi
                heap_lo[i] = lo
                size += 1
            n_cand = 0
            if size == 0:
                break
            # Pop the youngest entry with its multiplicity (pairs cancel).
            hi = heap_hi[0]
            lo = heap_lo[0]
            odd = False
            while size > 0 and heap_hi[0] == hi and heap_lo[0] == lo:
                odd = not odd
                size -= 1
                last_hi = heap_hi[size]
                last_lo = heap_lo[size]
                i = 0
                while True:
                    child = 2 * i + 1
                    if child >= size:
                        break
                    if child + 1 < size and _later(heap_hi[child + 1], heap_lo[child + 1],
                                                   heap_hi[child], heap_lo[child]):
                        child += 1
                    if not _later(heap_hi[child], heap_lo[child], last_hi, last_lo):
                        break
                    heap_hi[i] = heap_hi[child]
                    heap_lo[i] = heap_lo[child]
                    i = child
                heap_hi[i] = last_hi
                heap_lo[i] = last_lo
            if not odd:
                continue
            # A regular edge paired with a face: its gradient path, the face's other edges.
            ilo = np.int64(lo)
            q = ilo >> 10
            if vertex:
                q = n - 1 - q
            jq = ilo & 31
            partner = np.int64((words[pattern[q], jq] >> 5) & 31) - 2
            for e in range(4):
                j2 = _FACE_EDGES[partner, e]
                if j2 != jq:
                    cand_v[n_cand] = q
                    cand_j[n_cand] = j2
                    n_cand += 1
        # The terms by decreasing rank, pairs cancelled.
        for i in range(1, n_found):
            term = found[i]
            k = i
            while k > 0 and found[k - 1] < term:
                found[k] = found[k - 1]
                k -= 1
            found[k] = term
        if n_terms + n_found > terms.size:
            terms = _grown(terms, 2 * (n_terms + n_found))
        i = 0
        while i < n_found:
            if i + 1 < n_found and found[i + 1] == found[i]:
                i += 2
                continue
            terms[n_terms] = found[i]
            n_terms += 1
            i += 1
    term_start[n_rows] = n_terms
    return term_start, terms[:n_terms]


#: Fewest columns per part when stage A is split over threads.
_MIN_PART = 4096


def _h1_staged(volume, words, run=None, n_parts: int = 1):
    """Stage A (optionally over ``n_parts`` contiguous runs of the raster order, on ``run``),
    then stage B; returns the status of :func:`reduce_ranked`."""
    depth, height, width = volume.shape
    columns = volume.columns
    n_cols = columns.size
    m = volume.edge_order.size
    raster = np.argsort(columns, kind="stable")
    rank = np.empty(m, dtype=np.int32)
    if volume.vertex:
        rank[volume.edge_order[::-1]] = np.arange(m, dtype=np.int32)
    else:
        rank[volume.edge_order] = np.arange(m, dtype=np.int32)
    n_parts = max(1, min(int(n_parts), n_cols // _MIN_PART + 1))
    bounds = [n_cols * s // n_parts for s in range(n_parts + 1)]

    def part(s):
        return _h1_boundaries(volume.flat, depth, height, width, columns, raster, bounds[s],
                              bounds[s + 1], volume.pattern, words, volume.edge_start,
                              volume.negative, rank, volume.vertex)

    if n_parts == 1:
        term_start, terms = part(0)
    else:
        parts = run([lambda s=s: part(s) for s in range(n_parts)])
        offsets = np.cumsum([0] + [p[1].size for p in parts])
        term_start = np.concatenate([p[0][:-1] + offsets[s] for s, p in enumerate(parts)]
                                    + [offsets[-1:]]).astype(np.int64)
        terms = np.concatenate([p[1] for p in parts])
    row_of = np.empty(n_cols, dtype=np.int64)
    row_of[raster] = np.arange(n_cols, dtype=np.int64)
    pivot = np.empty(n_cols, dtype=np.int32)
    status = reduce_ranked(term_start, terms, row_of, m, pivot)
    if status == n_cols and n_cols:
        index = m - 1 - pivot if volume.vertex else pivot
        volume.h1_a[:] = volume.edge_payload[volume.edge_order[index]] // 12
        volume.h1_b[:] = columns // 6
    return status


# ---------------------------------------------------------------------------------------
# One volume.


#: How H1 runs: "lazy" (:func:`_h1_pass`), "staged" (:func:`_h1_staged`) or "auto" (staged
#: from :data:`_STAGED_COLUMNS` columns on).
H1_METHOD = "auto"

#: Columns from which "auto" runs the two stages. The lazy pass jumps around the volume and
#: slows down once its data leaves the caches; the staged pass expands every column in full
#: (long V-paths on smooth volumes) but in raster order. Measured (T, one thread, CPU ms,
#: lazy vs staged, interleaved): 64^3 noise, 47k columns, 109 vs 72; 64^3 noise blurred with
#: sigma 0.7, 20k columns, 40 vs 43; sigma 1, 8k columns, 28 vs 32; 128^3 sigma 1, 65k
#: columns, 334 vs 291; 128^3 sigma 2, 10k columns, 145 vs 160; 128^3 noise, 386k columns,
#: 1456 vs 773.
_STAGED_COLUMNS = 32768


def _h1_method(n_cols: int, n_voxels: int) -> str:
    """The H1 method for a volume with ``n_cols`` columns (see :data:`H1_METHOD`)."""
    if H1_METHOD != "auto":
        return H1_METHOD
    return "staged" if n_cols >= _STAGED_COLUMNS else "lazy"


def _plan(dims: tuple[int, ...], vertex: bool):
    """Which passes a request needs: (H0 pass, H2 pass, H1 pass)."""
    low, high = (2, 0) if vertex else (0, 2)
    want_h1 = 1 in dims
    return (low in dims or want_h1), (high in dims or want_h1), want_h1


class _Volume:
    """State of one volume between the stages (each stage is a compiled, nogil call)."""

    def __init__(self, flat: np.ndarray, shape: tuple[int, int, int], vertex: bool,
                 dims: tuple[int, ...]):
        self.flat = flat
        self.shape = shape
        self.vertex = bool(vertex)
        self.dims = dims
        self.run_h0, self.run_h2, self.run_h1 = _plan(dims, vertex)
        depth, height, width = shape
        self.n = depth * height * width
        self.tables = pattern_table()

    # Step 1-2
    def raster(self, n_slabs: int = 1, run=None) -> None:
        depth, height, width = self.shape
        owned, rows, keys, values = self.tables[:4]
        self.first, self.last = _extremes(self.flat, depth * height, width)
        n_corners = (depth + 1) * (height + 1) * (width + 1)
        self.corner_parent = np.empty(n_corners + 1, dtype=np.int32)
        # The exterior corner: older than every voxel (only V has corners nobody owns).
        self.corner_parent[n_corners] = -(self.n + 1)
        if self.vertex:
            _outer_corners(depth, height, width, self.corner_parent)
        self.voxel_parent = np.empty(self.n + 1, dtype=np.int32)
        self.voxel_parent[self.n] = self.n
        self.pattern = np.empty(self.n, dtype=np.int16)
        self.edge_start = np.empty(self.n, dtype=np.int32)
        n_slabs = max(1, min(int(n_slabs), depth))
        bounds = [depth * s // n_slabs for s in range(n_slabs + 1)]

        def slab(s):
            return _raster(self.flat, depth, height, width, bounds[s], bounds[s + 1],
                           self.vertex, self.run_h0, self.run_h2, rows, keys, values,
                           self.pattern, self.corner_parent, self.voxel_parent,
                           self.edge_start)

        if n_slabs == 1:
            parts = [slab(0)]
        else:
            parts = run([lambda s=s: slab(s) for s in range(n_slabs)])
        if len(parts) == 1:
            self.edge_keys, self.edge_payload, self.face_keys, self.face_payload = parts[0]
            return
        hw = height * width
        offset = 0
        for s, part in enumerate(parts):
            if offset:
                _shift(self.edge_start, bounds[s] * hw, bounds[s + 1] * hw, offset)
            offset += part[0].size
        from numba.typed import List

        self.edge_keys, self.edge_payload = _concatenate(List([p[0] for p in parts]),
                                                         List([p[1] for p in parts]))
        self.face_keys, self.face_payload = _concatenate(List([p[2] for p in parts]),
                                                         List([p[3] for p in parts]))

    # Step 3
    def sort_edges(self) -> None:
        key_bits = 8 * self.flat.itemsize
        index = np.arange(self.edge_keys.size, dtype=np.uint32)
        self.edge_order = _radix_sort(self.edge_keys, index, key_bits)
        self.edge_keys = None

    def sort_faces(self) -> None:
        key_bits = 8 * self.flat.itemsize
        index = np.arange(self.face_keys.size, dtype=np.uint32)
        self.face_order = _radix_sort(self.face_keys, index, key_bits)
        self.face_keys = None

    # Step 4
    def h0(self) -> None:
        depth, height, width = self.shape
        m = self.edge_payload.size
        births = _number_roots(self.corner_parent, True)
        ends_a = np.empty(m, dtype=np.int32)
        ends_b = np.empty(m, dtype=np.int32)
        _edge_ends(self.edge_payload, self.corner_parent, height, width, ends_a, ends_b)
        self.corner_parent = None
        self.negative = np.zeros(m, dtype=np.uint8)
        self.h0_a = np.empty(m, dtype=np.int32)
        self.h0_b = np.empty(m, dtype=np.int32)
        self.n_h0 = _h0_pass(self.flat, self.edge_order, ends_a, ends_b, self.edge_payload,
                             births, self.n, self.vertex, self.negative, self.h0_a, self.h0_b)
        if not self.run_h1:
            self.edge_order = self.edge_payload = None

    # Step 5
    def h2(self) -> None:
        depth, height, width = self.shape
        m = self.face_payload.size
        roots = _number_roots(self.voxel_parent, False)
        ends_a = np.empty(m, dtype=np.int32)
        ends_b = np.empty(m, dtype=np.int32)
        _face_ends(self.face_payload, self.voxel_parent, depth, height, width, ends_a, ends_b)
        self.voxel_parent = None
        self.h2_a = np.empty(m, dtype=np.int32)
        self.h2_b = np.empty(m, dtype=np.int32)
        kept = np.empty(m, dtype=np.int64)
        self.n_h2, n_kept = _h2_pass(self.flat, self.face_order, ends_a, ends_b,
                                     self.face_payload, roots, self.n, self.vertex, self.h2_a,
                                     self.h2_b, kept)
        self.columns = self.face_payload[kept[:n_kept]]
        self.face_order = self.face_payload = None

    # Step 6
    def h1(self, n_parts: int = 1, run=None) -> None:
        depth, height, width = self.shape
        words = self.tables[5 if self.vertex else 4]
        n_cols = self.columns.size
        self.h1_a = np.empty(n_cols, dtype=np.int32)
        self.h1_b = np.empty(n_cols, dtype=np.int32)
        self.h1_method = _h1_method(n_cols, self.n)
        if self.h1_method == "staged":
            status = _h1_staged(self, words, run, n_parts)
        else:
            status = _h1_pass(self.flat, depth, height, width, self.columns, self.pattern,
                              words, self.edge_start, self.negative, self.vertex, self.h1_a,
                              self.h1_b)
        self.edge_order = self.edge_payload = None
        if status < 0:
            raise RuntimeError(f"internal error: H1 column {-1 - status} of {n_cols} found no "
                               "pivot (a box has no essential H1)")

    def result(self):
        """Pairs per dimension: {dim: (birth, death)} as int64 arrays, essential class first."""
        empty = np.zeros(0, dtype=np.int64)
        out = {}
        for d in self.dims:
            if d == 0:
                if self.vertex:
                    births, deaths = self.h2_b[: self.n_h2], self.h2_a[: self.n_h2]
                else:
                    births, deaths = self.h0_a[: self.n_h0], self.h0_b[: self.n_h0]
                birth = np.concatenate(([self.first], births)).astype(np.int64)
                death = np.concatenate(([-1], deaths)).astype(np.int64)
            elif d == 1:
                if self.vertex:
                    birth, death = self.h1_b, self.h1_a
                else:
                    birth, death = self.h1_a, self.h1_b
            else:
                if self.vertex:
                    birth, death = self.h0_b[: self.n_h0], self.h0_a[: self.n_h0]
                else:
                    birth, death = self.h2_a[: self.n_h2], self.h2_b[: self.n_h2]
            out[d] = (np.asarray(birth, dtype=np.int64), np.asarray(death, dtype=np.int64))
        for d in out:
            if out[d][0].size == 0:
                out[d] = (empty, empty)
        return out, self.last


def _run_sequential(volume: _Volume) -> None:
    volume.raster()
    if volume.run_h0:
        volume.sort_edges()
        volume.h0()
    if volume.run_h2:
        volume.sort_faces()
        volume.h2()
    if volume.run_h1:
        volume.h1()


def _run_threads(tasks, n_threads: int):
    """Run callables on the calling thread and ``n_threads - 1`` pool helpers; results in order."""
    if n_threads <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    executor = _executor(min(n_threads, len(tasks)) - 1)
    futures = [executor.submit(task) for task in tasks[1:]]
    first = tasks[0]()
    return [first] + [future.result() for future in futures]


def _run_parallel(volume: _Volume, n_threads: int) -> None:
    """One volume on ``n_threads`` threads: z-slabs, H0 beside H2, H1 (stage A in parts)."""
    volume.raster(n_threads, lambda tasks: _run_threads(tasks, n_threads))
    tasks = []
    if volume.run_h0:
        tasks.append(lambda: (volume.sort_edges(), volume.h0()))
    if volume.run_h2:
        tasks.append(lambda: (volume.sort_faces(), volume.h2()))
    _run_threads(tasks, n_threads)
    if volume.run_h1:
        volume.h1(n_threads, lambda tasks: _run_threads(tasks, n_threads))


def volume_pairs3d(volume: np.ndarray, vertex: bool, dims: tuple[int, ...],
                   n_threads: int = 1):
    """Persistence pairs of one volume.

    Parameters
    ----------
    volume : (D, H, W) float32 or float64, C-contiguous
        Finite values.
    vertex : bool
        V-construction (voxels are vertices) instead of T (voxels are cubes).
    dims : tuple of int
        Sorted, non-empty subset of (0, 1, 2).
    n_threads : int
        Threads for this volume (z-slabs of the raster pass, H0 beside H2, parts of H1).

    Returns
    -------
    pairs : dict
        ``{dim: (birth, death)}``, (K_d,) int64 flat voxel indices; in H0 the essential class
        comes first, death -1.
    last : int
        Flat index of the last voxel of the (value, index) order.
    """
    state = _Volume(volume.reshape(-1), volume.shape, vertex, tuple(dims))
    if n_threads > 1:
        _run_parallel(state, n_threads)
    else:
        _run_sequential(state)
    return state.result()


# ---------------------------------------------------------------------------------------
# Batches, memory, stage times.

#: Bytes per voxel the core needs on uniform noise beyond the input (peak RSS of the call
#: measured: 40 at 128^3, 63 at 256^3), with a margin for volumes with more critical cells.
_BYTES_PER_VOXEL = 100


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def estimated_bytes(shape: tuple[int, int, int], n_concurrent: int = 1) -> int:
    """Memory the core may need for volumes of ``shape``, ``n_concurrent`` at a time."""
    depth, height, width = shape
    n = depth * height * width
    corners = (depth + 1) * (height + 1) * (width + 1)
    return n_concurrent * (_BYTES_PER_VOXEL * n + 4 * corners + (1 << 20))


def _check_input(volumes: np.ndarray, dims: tuple[int, ...], n_concurrent: int) -> None:
    if not isinstance(volumes, np.ndarray) or volumes.ndim != 4:
        raise ValueError("`images` must be a (B, D, H, W) array; got "
                         f"{getattr(volumes, 'shape', type(volumes).__name__)}")
    if volumes.dtype not in (np.float32, np.float64):
        raise TypeError(f"`images` must be float32 or float64; got {volumes.dtype}")
    if not volumes.flags.c_contiguous:
        raise ValueError("`images` must be C-contiguous")
    if min(volumes.shape[1:], default=0) < 1:
        raise ValueError(f"`images` must have at least one voxel per volume; got {volumes.shape}")
    n = volumes.shape[1] * volumes.shape[2] * volumes.shape[3]
    if n > MAX_VOXELS:
        raise ValueError(f"`images` volumes may have at most {MAX_VOXELS} voxels; got {n}")
    if not dims or any(d not in (0, 1, 2) for d in dims) or list(dims) != sorted(set(dims)):
        raise ValueError(f"`dims` must be a sorted non-empty subset of (0, 1, 2); got {dims}")
    need = estimated_bytes(volumes.shape[1:], n_concurrent)
    available = _available_memory()
    if available is not None and need > available:
        raise MemoryError(
            f"`images`: volumes of shape {tuple(volumes.shape[1:])} need about "
            f"{need / 2**30:.1f} GiB ({n_concurrent} at a time) but only "
            f"{available / 2**30:.1f} GiB are available; use smaller volumes or fewer threads")


def batch_pairs3d(volumes: np.ndarray, vertex: bool, dims: tuple[int, ...],
                  n_threads: int | None = None):
    """Persistence pairs of a batch of volumes, packed, with the last voxel of each.

    Parameters
    ----------
    volumes : (B, D, H, W) float32 or float64, C-contiguous
        Finite values, sublevel order (negate for superlevel); at most :data:`MAX_VOXELS`
        voxels per volume.
    vertex : bool
        V-construction (gudhi ``vertices``: components 6-connected) instead of T (gudhi
        ``top_dimensional_cells``: components 26-connected).
    dims : tuple of int
        Sorted, non-empty subset of (0, 1, 2).
    n_threads : int, optional
        Threads, the calling thread included; default ``numba.get_num_threads()``. Volumes
        are spread over the threads; a batch with fewer volumes than threads also splits
        each volume (z-slabs, H0 beside H2, parts of H1).

    Returns
    -------
    image, dim, birth_index, death_index : (K,) int64
        Grouped by volume, then dimension; flat C-order voxel indices; the essential class
        first in H0, death -1. Pairs of zero persistence may be included.
    last_index : (B,) int64
        Flat index of the last voxel of each volume in the (value, index) order.

    Raises
    ------
    MemoryError
        When the estimated memory exceeds what the machine has available (before any
        allocation).
    """
    if n_threads is None:
        import numba

        n_threads = numba.get_num_threads()
    n_threads = max(1, int(n_threads))
    dims = tuple(int(d) for d in dims)
    n_volumes = volumes.shape[0] if isinstance(volumes, np.ndarray) and volumes.ndim == 4 else 0
    per_volume = 1 if n_volumes >= n_threads else n_threads
    _check_input(volumes, dims, min(max(n_volumes, 1), n_threads))
    if per_volume > 1:
        results = [volume_pairs3d(volumes[b], vertex, dims, per_volume)
                   for b in range(n_volumes)]
    else:
        tasks = [lambda b=b: volume_pairs3d(volumes[b], vertex, dims, 1)
                 for b in range(n_volumes)]
        results = _run_batch(tasks, n_threads)
    return _pack(results, dims)


def _run_batch(tasks, n_threads: int):
    """Volumes claimed one at a time by the calling thread and ``n_threads - 1`` helpers.

    As in the 2D core: the calling thread never waits for a helper; once all volumes are
    claimed, it computes itself any volume still in a helper's hands (the first result wins).
    """
    n = len(tasks)
    n_threads = max(1, min(n_threads, n))
    if n_threads == 1:
        return [task() for task in tasks]
    results = [None] * n
    lock = threading.Lock()
    counter = [0]

    def claim():
        with lock:
            b = counter[0]
            counter[0] += 1
        return b

    def store(b, result):
        with lock:
            if results[b] is None:
                results[b] = result

    def work():
        b = claim()
        while b < n:
            store(b, tasks[b]())
            b = claim()

    executor = _executor(n_threads - 1)
    for _ in range(n_threads - 1):
        executor.submit(work)
    work()
    for b in range(n):
        if results[b] is None:
            store(b, tasks[b]())
    return results


def _pack(results, dims: tuple[int, ...]):
    images, dim_col, births, deaths = [], [], [], []
    last = np.empty(len(results), dtype=np.int64)
    for b, (pairs, last_voxel) in enumerate(results):
        for d in dims:
            birth, death = pairs[d]
            images.append(np.full(birth.size, b, dtype=np.int64))
            dim_col.append(np.full(birth.size, d, dtype=np.int64))
            births.append(birth)
            deaths.append(death)
        last[b] = last_voxel
    if not images:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy(), empty.copy(), last
    return (np.concatenate(images), np.concatenate(dim_col), np.concatenate(births),
            np.concatenate(deaths), last)


def stage_times3d(volume: np.ndarray, vertex: bool = False,
                  dims: tuple[int, ...] = (0, 1, 2)) -> dict[str, float]:
    """CPU seconds of each stage of one volume, on the calling thread (for benchmarks).

    Parameters
    ----------
    volume : (D, H, W) float32 or float64, C-contiguous
    vertex : bool
    dims : tuple of int

    Returns
    -------
    dict
        ``raster`` (extremes, masks, rule, parents, critical cells), ``sort`` (both lists),
        ``h0``, ``h2``, ``h1``, ``pack`` and ``total``, plus the counts ``edges``,
        ``faces``, ``columns``.
    """
    state = _Volume(np.ascontiguousarray(volume).reshape(-1), volume.shape, vertex,
                    tuple(dims))
    times: dict[str, float] = {}

    def timed(name, fn):
        start = time.process_time()
        fn()
        times[name] = times.get(name, 0.0) + time.process_time() - start

    timed("raster", state.raster)
    n_edges = state.edge_keys.size
    n_faces = state.face_keys.size
    if state.run_h0:
        timed("sort", state.sort_edges)
    if state.run_h2:
        timed("sort", state.sort_faces)
    if state.run_h0:
        timed("h0", state.h0)
    if state.run_h2:
        timed("h2", state.h2)
    if state.run_h1:
        timed("h1", state.h1)
    timed("pack", lambda: _pack([state.result()], state.dims))
    times["total"] = sum(times.values())
    times["edges"] = float(n_edges)
    times["faces"] = float(n_faces)
    times["columns"] = float(state.columns.size) if state.run_h2 else 0.0
    return times
