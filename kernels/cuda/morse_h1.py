"""H1 of volumes from the Morse complex: boundaries on the device, reduction on the host.

After the two elder-rule passes of :mod:`satloss_gpu.kernels.cuda.local_pairing3d`, the
critical faces the voxel pass left over are the H1 *columns* and the critical edges the corner
pass left over (H0-positive) are the *rows*; every column pairs with exactly one row. This
module computes those pairs in two stages (the design study's section 6.4):

* **Stage A (device)**, :func:`column_kernel`, one thread per column, run twice (count, then
  emit at scanned offsets): the column's Morse boundary. Starting from the face's four edges,
  a max-heap (thread-local, :data:`HEAP_CAPACITY` keys) pops the youngest edge; an even count
  cancels; an edge paired with a corner by the gradient flows to nothing; an edge paired with
  a face is replaced by that face's other edges (its V-path); a critical edge that merged in
  the corner pass is dropped (compression: no reduced column has it as pivot); any other
  critical edge is a term. Terms come out youngest first. The owner of an edge and its place
  in the owner's order are recomputed from the order words with the shared rule
  (:func:`satloss_gpu.kernels.common.local_pairing3d.voxel_rule`). A column whose heap would
  overflow sets a flag and the caller computes H1 another way: no buffer can truncate.
* **Stage B (host)**, :func:`reduce_columns` (shared with the CPU core, in
  :mod:`satloss_gpu.kernels.cpu.morse_reduction`): the standard column reduction of those short,
  sorted columns in filtration order, each column's lowest term (its youngest edge) looked up
  in a pivot map, earlier reduced columns added by merging sorted lists.

Keys. An edge cell is named by ``(word << 32) | (order * 32 + seq)``: the order word of its
owner voxel, the owner's position in the pass order (``q``, or ``N - 1 - q`` in the reversed
order) and the cell's position in the owner's refined order; keys sort like the filtration.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, int8, int32, int64, uint32, uint64

from ..common import local_pairing3d as rule3d
from ..cpu.morse_reduction import reduce_columns
from .local_pairing import NO_MERGE
from .local_pairing3d import _DIMS, _OFFSETS, _masks, voxel_rule

__all__ = ["HEAP_CAPACITY", "negative_kernel", "column_kernel", "reduce_columns"]

#: Keys a column's heap holds (thread-local memory, 4 KB; more sets the overflow flag). The
#: largest heaps of this expansion, taken over every critical face of the T-construction as a
#: column (measured on the CPU with the same steps): 62 keys on 64^3 uniform noise, 112 on noise
#: blurred with sigma 1, 240 with sigma 4, 401 on 128^3 with sigma 4 (long V-paths: about 1,400
#: pops per column there, 37 on noise). Larger smooth volumes may overflow: their H1 then runs
#: on the host, where smooth volumes are cheap.
HEAP_CAPACITY = 512
_FACE_BITS = np.ascontiguousarray(rule3d.FACE_BITS, dtype=np.int64)
_LOW_MASK = (1 << 32) - 1


@cuda.jit
def negative_kernel(keys, item_seg, seg_start, pos_bits, flip, result, n_edges, negative):
    """``negative[i] = 1`` when the critical edge emitted ``i``-th merged in the corner pass
    (``result`` of its sorted position is not NO_MERGE), else 0; edges only (``n_edges``)."""
    for g in range(cuda.grid(1), n_edges, cuda.gridsize(1)):
        b = int64(item_seg[g])
        pos = int64(uint64(keys[g]) & ((uint64(1) << uint64(pos_bits)) - uint64(1)))
        if flip != 0:
            pos = seg_start[b + 1] - seg_start[b] - 1 - pos
        negative[seg_start[b] + pos] = 0 if uint64(result[g]) == uint64(NO_MERGE) else 1


@cuda.jit(device=True, inline=True)
def _rule_of(words, image_base, q, depth, height, width, flip, partner, seq):
    """The shared rule of voxel ``q`` into ``partner`` / ``seq``."""
    x = q % width
    y = (q // width) % height
    z = q // (width * height)
    inside, outside = _masks(words, image_base, z, y, x, depth, height, width, flip)
    mask = inside | outside if flip != 0 else inside
    voxel_rule(uint32(mask), partner, seq)


@cuda.jit(device=True, inline=True)
def _edge_owner(words, image_base, p, j, depth, height, width, flip):
    """(owner voxel, the edge's local index there) of local edge ``j`` of voxel ``p``: the
    earliest voxel of the pass order among the four around the edge; (-1, -1) when an outside
    neighbour precedes (the reversed order: nobody owns surface cells)."""
    x = p % width
    y = (p // width) % height
    z = p // (width * height)
    sz = _OFFSETS[j, 0]
    sy = _OFFSETS[j, 1]
    sx = _OFFSETS[j, 2]
    best = p
    best_key = (uint64(words[image_base + p]) << uint64(32)) | uint64(
        (0xFFFFFFFF - p) if flip != 0 else p)
    best_j = j
    for k in range(26):
        t = k + (1 if k >= 13 else 0)
        tz = t // 9 - 1
        ty = (t // 3) % 3 - 1
        tx = t % 3 - 1
        if (tz != 0 and tz != sz) or (ty != 0 and ty != sy) or (tx != 0 and tx != sx):
            continue
        zz = z + tz
        yy = y + ty
        xx = x + tx
        if zz < 0 or zz >= depth or yy < 0 or yy >= height or xx < 0 or xx >= width:
            if flip != 0:
                return -1, -1
            continue
        u = (zz * height + yy) * width + xx
        key = (uint64(words[image_base + u]) << uint64(32)) | uint64(
            (0xFFFFFFFF - u) if flip != 0 else u)
        if key < best_key:
            best = u
            best_key = key
            best_j = ((-sz if tz != 0 else sz) + 1) * 9 + ((-sy if ty != 0 else sy) + 1) * 3 + (
                (-sx if tx != 0 else sx) + 1)
    return best, best_j


@cuda.jit(device=True, inline=True)
def _cell_key(words, image_base, q, n, flip, position):
    order = (n - 1 - q) if flip != 0 else q
    return (uint64(words[image_base + q]) << uint64(32)) | uint64(order * 32 + position)


@cuda.jit(device=True, inline=True)
def _push(heap, size, key):
    """Push ``key`` on the max-heap of ``size`` keys; returns the new size (-1: full)."""
    if size >= heap.size:
        return -1
    i = size
    while i > 0:
        parent = (i - 1) // 2
        if heap[parent] >= key:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = key
    return size + 1


@cuda.jit(device=True, inline=True)
def _pop(heap, size):
    """Remove the largest key of the max-heap; returns the new size."""
    size -= 1
    last = heap[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] > heap[child]:
            child += 1
        if heap[child] <= last:
            break
        heap[i] = heap[child]
        i = child
    if size > 0:
        heap[i] = last
    return size


@cuda.jit(device=True, inline=True)
def _push_edge(words, image_base, p, j, depth, height, width, flip, n, heap, size, partner,
               seq):
    """Push the key of local edge ``j`` of voxel ``p`` (nothing if nobody owns it)."""
    q, jq = _edge_owner(words, image_base, p, j, depth, height, width, flip)
    if q < 0:
        return size
    _rule_of(words, image_base, q, depth, height, width, flip, partner, seq)
    return _push(heap, size, _cell_key(words, image_base, q, n, flip, seq[jq]))


@cuda.jit(device=True, inline=True)
def _column(words, b, p, face, depth, height, width, flip, ends, counts, negative, heap,
            partner, seq, emit, out, term_key, term_slot):
    """Morse boundary of face ``face`` of voxel ``p`` (volume ``b``): the number of terms
    (written from ``out`` when ``emit``), or -1 when the heap overflows."""
    n = depth * height * width
    image_base = b * n
    size = 0
    for j in range(27):
        if (_FACE_BITS[face] >> j) & 1:
            size = _push_edge(words, image_base, p, j, depth, height, width, flip, n, heap,
                              size, partner, seq)
            if size < 0:
                return -1
    count = 0
    while size > 0:
        top = heap[0]
        size = _pop(heap, size)
        odd = True
        while size > 0 and heap[0] == top:
            size = _pop(heap, size)
            odd = not odd
        if not odd:
            continue
        low = int64(top & uint64(_LOW_MASK))
        order = low >> 5
        q = (n - 1 - order) if flip != 0 else order
        position = low & 31
        _rule_of(words, image_base, q, depth, height, width, flip, partner, seq)
        jq = 0
        for j in range(27):
            if seq[j] == position:
                jq = j
        mate = int64(partner[jq])
        if mate == -1:
            rank = 0
            for j in range(27):
                if partner[j] == -1 and _DIMS[j] == 1:
                    if (seq[j] > position) if flip != 0 else (seq[j] < position):
                        rank += 1
            gid = image_base + q
            slot = ((int64(ends[gid]) & int64(_LOW_MASK))
                    - (int64(counts[gid]) & int64(_LOW_MASK)) + rank)
            if negative[slot] != 0:
                continue
            if emit != 0:
                term_key[out + count] = top
                term_slot[out + count] = slot
            count += 1
            continue
        if _DIMS[mate] == 0:
            continue
        for j in range(27):
            if j != jq and (_FACE_BITS[mate] >> j) & 1:
                size = _push_edge(words, image_base, q, j, depth, height, width, flip, n,
                                  heap, size, partner, seq)
                if size < 0:
                    return -1
    return count


@cuda.jit
def column_kernel(keys, item_seg, seg_start, names, pos_bits, flip, words, depth, height,
                  width, result, rank, ends, counts, negative, column_base, emit, column_count,
                  column_voxel, column_start, term_key, term_slot, overflow):
    """Stage A: one thread per H1 column (a critical face that merged nothing in the voxel
    pass), in every volume's ascending order of faces.

    ``emit == 0``: ``column_count[c]`` = the number of terms of column ``c`` and
    ``column_voxel[c]`` = its face's voxel; ``overflow[0] = 1`` if a heap overflowed.
    ``emit == 1``: the terms (keys, emission slots of the critical edges), youngest first,
    from ``column_start[c]``. ``column_base[b]``: the first column of volume ``b``.
    """
    n_images = (seg_start.size - 1) // 2
    n_edges = seg_start[n_images]
    n_items = keys.size
    heap = cuda.local.array(HEAP_CAPACITY, uint64)
    partner = cuda.local.array(27, int8)
    seq = cuda.local.array(27, int32)
    for g in range(n_edges + cuda.grid(1), n_items, cuda.gridsize(1)):
        s = int64(item_seg[g])
        first = seg_start[s]
        stop = seg_start[s + 1]
        slot = first + stop - 1 - g
        if uint64(result[slot]) != uint64(NO_MERGE):
            continue
        merged_after = rank[stop - 1] - rank[slot]
        c = column_base[s - n_images] + (stop - 1 - slot) - merged_after
        pos = int64(uint64(keys[g]) & ((uint64(1) << uint64(pos_bits)) - uint64(1)))
        if flip != 0:
            pos = stop - first - 1 - pos
        name = int64(names[first + pos])
        p = name // 27
        out = column_start[c] if emit != 0 else 0
        count = _column(words, s - n_images, p, name - p * 27, depth, height, width, flip,
                        ends, counts, negative, heap, partner, seq, emit, out, term_key,
                        term_slot)
        if emit == 0:
            column_voxel[c] = p
            if count < 0:
                overflow[0] = 1
                count = 0
            column_count[c] = count
