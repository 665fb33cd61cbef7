"""GPU persistence of volumes by local pairing: the 3D kernels of ``backend="cuda"``.

The batch holds ``B`` volumes of ``D x H x W`` voxels. Each volume is one cubical complex:
cubes (the voxels), faces, edges and the ``(D + 1) x (H + 1) x (W + 1)`` corners. The per-voxel
rule :func:`satloss_gpu.kernels.common.local_pairing3d.voxel_rule` (written once, shared with
the CPU backend) pairs the cells each voxel owns into a discrete gradient, from the 26-bit
mask of the neighbours that precede it; what stays unpaired is critical. As in 2D the
T-construction runs in the (value, index) order and the V-construction is the same machinery
in the reversed order with the outside earlier than every voxel (see
:mod:`satloss_gpu.kernels.cuda.local_pairing`, whose order words, pointer jumping, key sort
and elder rule by recursive halving these kernels reuse unchanged). The 3D kernels, in launch
order:

1. :func:`voxel_kernel`, one thread per voxel of the batch, run twice: first every voxel's
   number of critical edges and critical faces (packed in one int64), each volume's first and
   last voxel and its numbers of critical corners and critical cubes; then, at offsets from
   one scan of the packed counts, the critical edges and faces (names ``voxel * 27 + j``,
   ``j`` the local cell index of the rule, a voxel's cells in the rule's intra-voxel order)
   and the gradient parents of the corners (the other end of the paired edge) and of the
   voxels (the voxel across the paired face, or the outside);
2. ``jump_kernel`` (2D module) on both parent arrays;
3. ``edge_key_kernel`` (2D module) over one list of ``2B`` segments, the critical edges of
   every volume, then the critical faces of every volume; one sort of all keys;
4. :func:`item_ends_kernel`: every sorted edge joins the roots of its two corners (the corner
   pass: H0 of the T-construction); every sorted face joins the roots of the voxels on its two
   sides, at the mirrored slot of its segment (the voxel pass, in reversed order: H2 of the
   T-construction by Alexander duality). The two passes are independent: one elder rule by
   recursive halving (2D module) runs both, as separate segments of the same launches;
5. :func:`assemble3d_kernel` packs the pairs, grouped by volume, then dimension; the H1 pairs
   it copies from arrays computed on the host (see ``satloss_gpu.persistence.backends.
   _cuda3d``).

Layout. Nodes of the elder rule are global ids: corner ``c`` of volume ``b`` is ``b * NC + c``
with ``NC = (D + 1)(H + 1)(W + 1) + 1`` (the last one is the exterior corner of the
V-construction, parent of its outer corners); voxel ``v`` of volume ``b`` is
``B * NC + b * NV + v`` with ``NV = D * H * W + 1`` (the last one is the outside). Corner
``(cz, cy, cx)`` has id ``(cz * (H + 1) + cy) * (W + 1) + cx``.

Birth keys (smaller is older): corner pass, the key of the corner's earliest voxel (the
exterior corner 0); voxel pass, the complement of the voxel's key (the outside 0). An item's
result is the birth key it kills, or ``NO_MERGE``.

Every kernel is a grid-stride loop with a bounds check; none depends on the order in which
blocks run.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, int8, int32, int64, uint32, uint64

from ..common import local_pairing3d as rule3d
from .local_pairing import NO_MERGE, _for_kernels, key_pixel, pixel_key, sorted_edge

__all__ = [
    "MAX_VOXELS",
    "N_LOCAL",
    "voxel_kernel",
    "item_ends_kernel",
    "assemble3d_kernel",
]

voxel_rule = _for_kernels(rule3d.voxel_rule)

#: Local cells of a voxel (the closed unit cube): 27, named ``j = (dz+1)*9 + (dy+1)*3 + (dx+1)``.
N_LOCAL = 27
#: Most voxels per volume: names ``voxel * 27 + j`` are int32.
MAX_VOXELS = (2 ** 31 - 1) // N_LOCAL
#: All 26 neighbour bits.
_ALL_NEIGHBOURS = (1 << 26) - 1
#: Local offsets and T-dimensions of the 27 cells (constant arrays in the kernels).
_OFFSETS = np.ascontiguousarray(rule3d.LOCAL_OFFSETS, dtype=np.int64)
_DIMS = np.ascontiguousarray(rule3d.LOCAL_DIM, dtype=np.int64)
_NOT_OWNED = -2
_CRITICAL = -1
_CUBE = 13


# -- neighbourhoods ---------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def _masks(words, image_base, z, y, x, depth, height, width, flip):
    """(inside, outside) 26-bit masks of voxel (z, y, x): bit k of ``inside`` is set when
    neighbour k precedes the voxel in the pass order, of ``outside`` when it lies outside."""
    key = pixel_key(words, image_base, (z * height + y) * width + x, flip)
    inside = 0
    outside = 0
    for k in range(26):
        j = k + (1 if k >= 13 else 0)
        zz = z + j // 9 - 1
        yy = y + (j // 3) % 3 - 1
        xx = x + j % 3 - 1
        if zz < 0 or zz >= depth or yy < 0 or yy >= height or xx < 0 or xx >= width:
            outside |= 1 << k
        elif pixel_key(words, image_base, (zz * height + yy) * width + xx, flip) < key:
            inside |= 1 << k
    return inside, outside


@cuda.jit(device=True, inline=True)
def _local_corner(z, y, x, j, height, width):
    """Corner id of local corner ``j`` of voxel (z, y, x)."""
    cz = z + (1 if _OFFSETS[j, 0] > 0 else 0)
    cy = y + (1 if _OFFSETS[j, 1] > 0 else 0)
    cx = x + (1 if _OFFSETS[j, 2] > 0 else 0)
    return (cz * (height + 1) + cy) * (width + 1) + cx


@cuda.jit(device=True, inline=True)
def _zero_axis(j):
    """The axis along which local edge ``j`` spans (its one zero offset)."""
    if _OFFSETS[j, 0] == 0:
        return 0
    if _OFFSETS[j, 1] == 0:
        return 1
    return 2


@cuda.jit(device=True, inline=True)
def _nonzero_axis(j):
    """The axis across local face ``j`` (its one nonzero offset)."""
    if _OFFSETS[j, 0] != 0:
        return 0
    if _OFFSETS[j, 1] != 0:
        return 1
    return 2


@cuda.jit(device=True, inline=True)
def _edge_corners(name, height, width):
    """Corner ids of the two ends of edge ``voxel * 27 + j`` (``height``/``width``: of the
    voxel grid)."""
    v = name // N_LOCAL
    j = name - v * N_LOCAL
    x = v % width
    y = (v // width) % height
    z = v // (width * height)
    axis = _zero_axis(j)
    stride = 1
    if axis == 0:
        stride = (height + 1) * (width + 1)
    elif axis == 1:
        stride = width + 1
    low = j - (9 if axis == 0 else (3 if axis == 1 else 1))  # the end at offset -1
    first = _local_corner(z, y, x, low, height, width)
    return first, first + stride


@cuda.jit(device=True, inline=True)
def _face_voxels(name, depth, height, width):
    """Voxels on the two sides of face ``voxel * 27 + j``; ``D * H * W`` is the outside."""
    v = name // N_LOCAL
    j = name - v * N_LOCAL
    x = v % width
    y = (v // width) % height
    z = v // (width * height)
    axis = _nonzero_axis(j)
    step = _OFFSETS[j, axis]
    other = v
    if axis == 0:
        other = v + step * height * width if 0 <= z + step < depth else -1
    elif axis == 1:
        other = v + step * width if 0 <= y + step < height else -1
    else:
        other = v + step if 0 <= x + step < width else -1
    if other < 0:
        other = depth * height * width
    return v, other


@cuda.jit(device=True, inline=True)
def corner_key3d(words, image_base, corner, depth, height, width, flip):
    """Birth key of a corner: the key of its earliest voxel; 0 for the exterior corner."""
    if corner == (depth + 1) * (height + 1) * (width + 1):
        return uint64(0)
    cx = corner % (width + 1)
    cy = (corner // (width + 1)) % (height + 1)
    cz = corner // ((width + 1) * (height + 1))
    best = uint64(NO_MERGE)
    for dz in range(-1, 1):
        for dy in range(-1, 1):
            for dx in range(-1, 1):
                z = cz + dz
                y = cy + dy
                x = cx + dx
                if 0 <= z < depth and 0 <= y < height and 0 <= x < width:
                    best = min(best, pixel_key(words, image_base, (z * height + y) * width + x,
                                               flip))
    return best


# -- the per-voxel rule -----------------------------------------------------------------------
@cuda.jit
def voxel_kernel(words, depth, height, width, flip, emit, ends, counts, lowest, highest,
                 critical_cells, edge_total, names, item_seg, item_word, corner_parent,
                 voxel_parent):
    """The local pairing of every voxel of the batch (one thread per voxel).

    ``emit == 0``: ``counts[gid]`` = critical edges + (critical faces << 32) of the voxel;
    per volume ``b``, ``lowest`` / ``highest`` (atomic min / max) receive the keys of the
    first / last voxel of the pass order (from local minima / maxima only),
    ``critical_cells[b]`` counts the critical corners and ``critical_cells[B + b]`` the
    critical cubes. ``emit == 1``: the voxel's critical edges at ``(ends[gid] & 0xFFFFFFFF)``
    minus their count and its critical faces at ``edge_total + (ends[gid] >> 32)`` minus
    theirs (``ends``: inclusive scan of the counts), with their segment (``b`` for edges,
    ``B + b`` for faces) and order word, in the rule's intra-voxel order (reversed when
    ``flip``, so that the reversed positions of the sort keys restore it); and the gradient
    parents (global ids within the volume's block) of the corners and the cube it owns. In the
    V-construction (``flip``) the outside precedes every voxel and the outer corners hang from
    the volume's exterior corner.
    """
    n = depth * height * width
    n_images = words.size // max(n, 1)
    n_corners = (depth + 1) * (height + 1) * (width + 1) + 1
    partner = cuda.local.array(27, int8)
    seq = cuda.local.array(27, int32)
    order = cuda.local.array(27, int32)
    for gid in range(cuda.grid(1), words.size, cuda.gridsize(1)):
        b = gid // n
        v = gid - b * n
        x = v % width
        y = (v // width) % height
        z = v // (width * height)
        image_base = b * n
        inside, outside = _masks(words, image_base, z, y, x, depth, height, width, flip)
        mask = inside | outside if flip != 0 else inside
        voxel_rule(uint32(mask), partner, seq)
        if emit == 0:
            n_edges = 0
            n_faces = 0
            n_corners_critical = 0
            for j in range(27):
                if partner[j] == _CRITICAL:
                    d = _DIMS[j]
                    if d == 1:
                        n_edges += 1
                    elif d == 2:
                        n_faces += 1
                    elif d == 0:
                        n_corners_critical += 1
            counts[gid] = int64(n_edges) | (int64(n_faces) << 32)
            key = pixel_key(words, image_base, v, flip)
            if inside == 0:
                cuda.atomic.min(lowest, b, key)
            if (inside | outside) == _ALL_NEIGHBOURS:
                cuda.atomic.max(highest, b, key)
            if n_corners_critical > 0:
                cuda.atomic.add(critical_cells, b, n_corners_critical)
            if partner[_CUBE] == _CRITICAL:
                cuda.atomic.add(critical_cells, n_images + b, 1)
            continue
        _emit_items(partner, seq, order, ends, counts, gid, b, v, n_images, edge_total, flip,
                    words[gid], names, item_seg, item_word)
        _write_parents(partner, z, y, x, v, b, n, n_corners, depth, height, width, flip,
                       corner_parent, voxel_parent)


@cuda.jit(device=True, inline=True)
def _emit_items(partner, seq, order, ends, counts, gid, b, v, n_images, edge_total, flip, word,
                names, item_seg, item_word):
    """Write the voxel's critical edges and faces in the rule's order (reversed if ``flip``)."""
    owned = 0
    for j in range(27):
        if partner[j] != _NOT_OWNED:
            order[seq[j]] = j
            owned += 1
    packed = int64(ends[gid])
    count = int64(counts[gid])
    edge_slot = (packed & int64(0xFFFFFFFF)) - (count & int64(0xFFFFFFFF))
    face_slot = edge_total + (packed >> 32) - (count >> 32)
    for t in range(owned):
        j = order[owned - 1 - t] if flip != 0 else order[t]
        if partner[j] != _CRITICAL:
            continue
        d = _DIMS[j]
        if d == 1:
            names[edge_slot] = v * N_LOCAL + j
            item_seg[edge_slot] = b
            item_word[edge_slot] = word
            edge_slot += 1
        elif d == 2:
            names[face_slot] = v * N_LOCAL + j
            item_seg[face_slot] = n_images + b
            item_word[face_slot] = word
            face_slot += 1


@cuda.jit(device=True, inline=True)
def _write_parents(partner, z, y, x, v, b, n, n_corners, depth, height, width, flip,
                   corner_parent, voxel_parent):
    """Gradient parents of the voxel's owned corners (and, with ``flip``, of its outer corners
    that nobody owns) and of its cube."""
    corner_base = b * n_corners
    for j in range(27):
        if _DIMS[j] != 0:
            continue
        cid = _local_corner(z, y, x, j, height, width)
        p = partner[j]
        if p == _CRITICAL:
            corner_parent[corner_base + cid] = corner_base + cid
        elif p != _NOT_OWNED:
            axis = _zero_axis(p)
            stride = 1
            if axis == 0:
                stride = (height + 1) * (width + 1)
            elif axis == 1:
                stride = width + 1
            target = cid - stride if _OFFSETS[j, axis] > 0 else cid + stride
            corner_parent[corner_base + cid] = corner_base + target
        elif flip != 0:
            cx = cid % (width + 1)
            cy = (cid // (width + 1)) % (height + 1)
            cz = cid // ((width + 1) * (height + 1))
            if (cz == 0 or cz == depth or cy == 0 or cy == height or cx == 0
                    or cx == width):
                corner_parent[corner_base + cid] = corner_base + n_corners - 1
    voxel_base = b * (n + 1)
    target = v
    face = int64(partner[_CUBE])
    if face != _CRITICAL:
        target = _face_voxels(v * N_LOCAL + face, depth, height, width)[1]
    voxel_parent[voxel_base + v] = voxel_base + target
    if v == 0:
        corner_parent[corner_base + n_corners - 1] = corner_base + n_corners - 1
        voxel_parent[voxel_base + n] = voxel_base + n


# -- the two passes ---------------------------------------------------------------------------
@cuda.jit
def item_ends_kernel(keys, item_seg, seg_start, names, pos_bits, flip, words, depth, height,
                     width, corner_root, voxel_root, ends_a, ends_b, node_key):
    """Ends of every sorted item for the elder rule, as global node ids.

    Segment ``b < B`` (edges of volume ``b``): the roots of the edge's two corners, at the
    item's sorted position. Segment ``B + b`` (faces): the roots of the voxels on the face's
    two sides, at the mirrored position of the segment (the voxel pass runs in reversed
    order). ``node_key`` receives the birth keys of those roots.
    """
    n = depth * height * width
    n_images = (seg_start.size - 1) // 2
    n_corners = (depth + 1) * (height + 1) * (width + 1) + 1
    voxel_nodes = n_images * n_corners
    for g in range(cuda.grid(1), keys.size, cuda.gridsize(1)):
        s, name = sorted_edge(keys, item_seg, seg_start, names, pos_bits, flip, g)
        if s < n_images:
            first, second = _edge_corners(name, height, width)
            base = s * n_corners
            a = int64(corner_root[base + first])
            c = int64(corner_root[base + second])
            node_key[a] = corner_key3d(words, s * n, a - base, depth, height, width, flip)
            node_key[c] = corner_key3d(words, s * n, c - base, depth, height, width, flip)
            ends_a[g] = a
            ends_b[g] = c
            continue
        b = s - n_images
        slot = seg_start[s] + seg_start[s + 1] - 1 - g
        first, second = _face_voxels(name, depth, height, width)
        base = b * (n + 1)
        a = int64(voxel_root[base + first])
        c = int64(voxel_root[base + second])
        node_key[voxel_nodes + a] = _voxel_key(words, b * n, a - base, n, flip)
        node_key[voxel_nodes + c] = _voxel_key(words, b * n, c - base, n, flip)
        ends_a[slot] = voxel_nodes + a
        ends_b[slot] = voxel_nodes + c


@cuda.jit(device=True, inline=True)
def _voxel_key(words, image_base, voxel, n, flip):
    """Dual birth key of a voxel: the complement of its key; 0 for the outside."""
    if voxel == n:
        return uint64(0)
    return pixel_key(words, image_base, voxel, flip) ^ uint64(NO_MERGE)


# -- output -----------------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def _store(image, dim, birth, death, pos, b, d, birth_index, death_index):
    image[pos] = b
    dim[pos] = d
    birth[pos] = birth_index
    death[pos] = death_index


@cuda.jit
def assemble3d_kernel(keys, item_seg, seg_start, names, pos_bits, flip, result, rank, out0,
                      out1, out2, first_key, last_key, want, h1_image, h1_birth, h1_death,
                      h1_start, n_h1, image, dim, birth, death, last_index):
    """Pack the pairs of every volume: dimension 0 at ``out0[b]`` (the essential class
    first), dimension 1 at ``out1[b]``, dimension 2 at ``out2[b]``.

    Slots ``0 .. M - 1`` (``M = keys.size``) are the elder rule's: a merging edge slot gives
    the T-construction's H0 pair (younger root's voxel, edge voxel) or the V-construction's H2
    pair (edge voxel, younger root's voxel); a merging face slot the T-construction's H2 pair
    (face voxel, dying voxel) or the V-construction's H0 pair (dying voxel, face voxel). Each
    goes at its rank among its segment's merges (``rank``: inclusive scan of the merge flags
    by slot). Threads ``M + b`` write volume ``b``'s essential class, born at the voxel of
    ``first_key[b]``, and ``last_index[b]``; threads ``M + B + k`` copy H1 pair ``k`` of the
    host arrays (grouped by volume, volume ``b``'s from ``h1_start[b]``). ``want`` (3,) int64
    flags the dimensions to write.
    """
    n_items = keys.size
    n_images = first_key.size
    for g in range(cuda.grid(1), n_items + n_images + n_h1, cuda.gridsize(1)):
        if g >= n_items + n_images:
            k = g - n_items - n_images
            b = int64(h1_image[k])
            _store(image, dim, birth, death, out1[b] + k - h1_start[b], b, 1, h1_birth[k],
                   h1_death[k])
            continue
        if g >= n_items:
            b = g - n_items
            last_index[b] = key_pixel(last_key[b], flip)
            if want[0] != 0:
                _store(image, dim, birth, death, out0[b], b, 0, key_pixel(first_key[b], flip),
                       int64(-1))
            continue
        younger = uint64(result[g])
        if younger == uint64(NO_MERGE):
            continue
        s = int64(item_seg[g])
        edge = s < n_images
        b = s if edge else s - n_images
        sorted_g = g if edge else seg_start[s] + seg_start[s + 1] - 1 - g
        name = sorted_edge(keys, item_seg, seg_start, names, pos_bits, flip, sorted_g)[1]
        voxel = name // N_LOCAL
        start = seg_start[s]
        r = rank[g] - (rank[start - 1] if start > 0 else 0)
        if edge == (flip == 0):
            # H0: after the essential class.
            if want[0] == 0:
                continue
            pos = out0[b] + r
            if edge:
                _store(image, dim, birth, death, pos, b, 0, key_pixel(younger, flip), voxel)
            else:
                _store(image, dim, birth, death, pos, b, 0,
                       key_pixel(younger ^ uint64(NO_MERGE), flip), voxel)
        else:
            if want[2] == 0:
                continue
            pos = out2[b] + r - 1
            if edge:
                _store(image, dim, birth, death, pos, b, 2, voxel, key_pixel(younger, flip))
            else:
                _store(image, dim, birth, death, pos, b, 2, voxel,
                       key_pixel(younger ^ uint64(NO_MERGE), flip))
