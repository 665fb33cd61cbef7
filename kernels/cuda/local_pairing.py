"""GPU persistence by local pairing: the kernels of ``backend="cuda"``.

The batch holds ``B`` images of ``H x W`` pixels. Each image is one cubical complex: squares
(the pixels), the ``(H + 1) x (W + 1)`` corners and the sides between them. Every cell takes
the value of the earliest square around it, and the per-pixel rule of
:mod:`satloss_gpu.kernels.common.local_pairing` (written once, shared with the CPU backend)
pairs the cells each pixel owns into a discrete gradient, leaving a few critical edges. The
T-construction runs in the (value, index) order; the V-construction is the same complex in the
reversed order, with the outside earlier than every pixel and the two dimensions swapped (see
that module). The kernels, in the order the backend launches them:

1. :func:`float32_order_kernel` / :func:`rank_order_kernel`: every pixel's order *word*
   (order-preserving bits of a float32, or the rank from a stable per-image sort for float64;
   complemented for the reversed order). :func:`pixel_key` packs ``(word, index)`` (index
   reversed with the order) into a uint64 key that sorts like the pass order;
2. :func:`pixel_kernel`, one thread per pixel of the whole batch, run twice: first the number
   of critical edges of every pixel, each image's first and last pixel and its number of
   critical corners; then, at offsets from a scan of those counts, the critical edges
   (raster order per image) and the gradient parents of the corners and the square each pixel
   owns;
3. :func:`jump_kernel`: pointer jumping sends every corner (square) to the critical corner
   (critical square, or an exterior cell) at the end of its gradient path;
4. :func:`edge_key_kernel` builds one 64-bit key per critical edge (image in the high bits,
   then the order word, then the edge's position in its image's raster list, which orders
   equal words by pixel index); the caller sorts all of them at once;
5. :func:`corner_ends_kernel` gives every sorted edge the roots of its two corners (the
   corner pass: H0 of the T-construction); after that pass, :func:`square_ends_kernel` gives
   every edge that merged nothing the roots of the squares on its two sides, compacted in
   reversed order (the square pass, by duality);
6. the elder rule of each pass, for all images at once: recursive halving
   (:func:`halving_slots_kernel` and :func:`halving_rename_kernel`, then per level
   :func:`halving_reset_kernel`, :func:`halving_union_kernel`,
   :func:`halving_collect_kernel`, :func:`halving_contract_kernel`, launched back to back
   without read-backs, down to runs of a few edges that :func:`halving_base_kernel` solves
   one thread each), or the baseline :func:`sequential_pass_kernel` (one thread per image);
7. :func:`assemble_kernel` packs the pairs, grouped by image, then dimension.

Layout. Nodes of a pass are global ids: corner ``c`` of image ``b`` is ``b * NC + c`` and
square ``s`` is ``b * NS + s``, with ``NC = (H + 1) * (W + 1) + 1`` (the last one is the
exterior corner of the V-construction, parent of its outer corners) and ``NS = H * W + 1``
(the last one is the outside square). A critical edge is named ``pixel * 4 + side`` by the
pixel that owns it (sides: top, left, right, bottom).

Birth keys of nodes (smaller is older). Corner pass: the key of the corner's earliest square;
the exterior corner has key 0. Square pass: the complement of the square's key, so that the
reversed order also sorts ascending; the outside square has key 0. An edge's result is the
birth key it kills, or :data:`NO_MERGE`.

Every kernel is a grid-stride loop with a bounds check; none depends on the order in which
blocks run (the tests run them in reverse in the simulator).
"""
from __future__ import annotations

import os

from numba import cuda, int32, int64, uint32, uint64

from ..common.scalar import float32_ordered_bits
from ..common import local_pairing as common
from ..common.local_pairing import (
    CORNER_CRITICAL,
    CORNER_NOT_OWNED,
    SQUARE_CRITICAL,
    corner_id,
    corner_kind,
    corner_parent_offset,
    critical_side_count,
    side_corners,
    side_is_critical,
    side_neighbour,
    square_kind,
)

__all__ = [
    "MAX_PIXELS",
    "NO_MERGE",
    "pixel_kernel",
    "float32_order_kernel",
    "rank_order_kernel",
    "jump_kernel",
    "edge_key_kernel",
    "corner_ends_kernel",
    "square_ends_kernel",
    "halving_slots_kernel",
    "halving_reset_kernel",
    "halving_union_kernel",
    "halving_collect_kernel",
    "halving_rename_kernel",
    "halving_base_kernel",
    "sequential_pass_kernel",
    "assemble_kernel",
]



def _for_kernels(function):
    """A shared rule function that takes arrays, as the kernels call it.

    On a GPU the ``njit`` function itself (Numba compiles it for the device). The simulator
    runs kernels as Python and its device arrays cannot enter compiled CPU code, so there the
    kernels call the function's Python body: the same rule, interpreted.
    """
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return function.py_func
    return function


neighbour_mask = _for_kernels(common.neighbour_mask)
pixel_code = _for_kernels(common.pixel_code)

#: Most pixels per image: edge names ``pixel * 4 + side`` are int32.
MAX_PIXELS = 1 << 29
#: Result of an edge that joins nothing (both ends already in one component).
NO_MERGE = (1 << 64) - 1
_INDEX_MASK = (1 << 32) - 1


# -- order words ------------------------------------------------------------------------------
@cuda.jit
def float32_order_kernel(bits, flip, words):
    """``words[i]``: the order-preserving uint32 of the float32 whose raw bits are ``bits[i]``
    (complemented when ``flip``: the reversed order). ``-0.0`` is read as ``+0.0``."""
    for i in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        raw = uint32(bits[i])
        if raw == uint32(0x80000000):
            raw = uint32(0)
        word = uint32(float32_ordered_bits(raw))
        if flip != 0:
            word = word ^ uint32(0xFFFFFFFF)
        words[i] = word


@cuda.jit
def rank_order_kernel(sorted_index, n_pixels, flip, words):
    """``words[b * n + sorted_index[b, j]] = j`` (complemented when ``flip``): ranks from a
    stable per-image sort, exact for every dtype."""
    for i in range(cuda.grid(1), sorted_index.size, cuda.gridsize(1)):
        b = i // n_pixels
        j = i - b * n_pixels
        word = uint32(j)
        if flip != 0:
            word = word ^ uint32(0xFFFFFFFF)
        words[b * n_pixels + int64(sorted_index[b, j])] = word


# -- keys and cells ---------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def pixel_key(words, image_base, index, flip):
    """Key of pixel ``index`` in the pass order: ``(word, index)``, or ``(word, -index)`` when
    ``flip`` (the V-construction, whose words are complemented: the reversed order)."""
    low = uint64(index)
    if flip != 0:
        low = uint64(0xFFFFFFFF) - low
    return (uint64(words[image_base + index]) << uint64(32)) | low


@cuda.jit(device=True, inline=True)
def key_pixel(key, flip):
    """Pixel index stored in a key of :func:`pixel_key` (or its complement, ``dual``)."""
    low = int64(uint64(key) & uint64(_INDEX_MASK))
    if flip != 0:
        return int64(_INDEX_MASK) - low
    return low


@cuda.jit(device=True, inline=True)
def node_counts(height, width):
    """(corners + exterior corner, squares + outside square) of one image."""
    return (height + 1) * (width + 1) + 1, height * width + 1


@cuda.jit(device=True, inline=True)
def corner_key(words, image_base, corner, height, width, flip):
    """H0 birth key of a corner: the key of its earliest square; 0 for the exterior corner."""
    if corner == (height + 1) * (width + 1):
        return uint64(0)
    row = corner // (width + 1)
    col = corner - row * (width + 1)
    best = uint64(NO_MERGE)
    for dr in range(-1, 1):
        for dc in range(-1, 1):
            r = row + dr
            c = col + dc
            if 0 <= r < height and 0 <= c < width:
                best = min(best, pixel_key(words, image_base, r * width + c, flip))
    return best


@cuda.jit(device=True, inline=True)
def square_key(words, image_base, square, height, width, flip):
    """Dual birth key of a square: the complement of its pixel's key; 0 for the outside."""
    if square == height * width:
        return uint64(0)
    return pixel_key(words, image_base, square, flip) ^ uint64(NO_MERGE)


@cuda.jit(device=True, inline=True)
def edge_corners(edge, width):
    """Corner ids of the two ends of edge ``pixel * 4 + side``."""
    pixel = edge // 4
    row = pixel // width
    return side_corners(row, pixel - row * width, edge - pixel * 4, width)


@cuda.jit(device=True, inline=True)
def edge_squares(edge, height, width):
    """Square ids on the two sides of edge ``pixel * 4 + side`` (``H * W``: the outside)."""
    pixel = edge // 4
    row = pixel // width
    other = side_neighbour(row, pixel - row * width, edge - pixel * 4, height, width)
    if other < 0:
        other = height * width
    return pixel, other


@cuda.jit(device=True, inline=True)
def _outside_bits(row, col, height, width):
    """Bits (raster order of :func:`neighbour_mask`) of the neighbours outside the image."""
    bits = 0
    for k in range(8):
        slot = k + (k >= 4)
        r = row + slot // 3 - 1
        c = col + slot % 3 - 1
        if r < 0 or r >= height or c < 0 or c >= width:
            bits |= 1 << k
    return bits


# -- the per-pixel rule -----------------------------------------------------------------------
@cuda.jit
def pixel_kernel(words, table, height, width, flip, emit, ends, counts, lowest, highest,
                 critical_corners, edges, edge_image, edge_word, corner_parent,
                 square_parent):
    """The local pairing of every pixel of the batch (one thread per pixel).

    ``emit == 0``: ``counts[gid]`` = the pixel's critical edges; per image, ``lowest`` /
    ``highest`` (atomic min / max) receive the keys of the first / last pixel of the pass
    order (from the local minima / maxima only) and ``critical_corners`` counts the
    critical corners. ``emit == 1``: the pixel's critical edges at ``ends[gid] - count``
    (``ends``: inclusive scan of the counts) with their image and order word, and the
    gradient parents (global node ids) of the corners and the square it owns. In the
    V-construction (``flip``) the outside precedes every pixel and the outer corners hang
    from the image's exterior corner.
    """
    n = height * width
    n_corners, n_squares = node_counts(height, width)
    sign = -1 if flip != 0 else 1
    for gid in range(cuda.grid(1), words.size, cuda.gridsize(1)):
        b = gid // n
        v = gid - b * n
        row = v // width
        col = v - row * width
        image_base = b * n
        image_words = words[image_base:image_base + n]
        inside_mask = neighbour_mask(image_words, sign, False, row, col, height, width)
        outside = _outside_bits(row, col, height, width)
        mask = inside_mask | outside if flip != 0 else inside_mask
        code = pixel_code(mask, table)
        count = critical_side_count(code)
        if emit == 0:
            counts[gid] = count
            key = pixel_key(words, image_base, v, flip)
            if inside_mask == 0:
                cuda.atomic.min(lowest, b, key)
            if (inside_mask | outside) == 255:
                cuda.atomic.max(highest, b, key)
            for corner in range(4):
                if corner_kind(code, corner) == CORNER_CRITICAL:
                    cuda.atomic.add(critical_corners, b, 1)
            continue
        slot = ends[gid] - count
        for side in range(4):
            if side_is_critical(code, side):
                edges[slot] = v * 4 + side
                edge_image[slot] = b
                edge_word[slot] = words[gid]
                slot += 1
        corner_base = b * n_corners
        for corner in range(4):
            cid = corner_id(row, col, corner, width)
            kind = corner_kind(code, corner)
            if kind != CORNER_NOT_OWNED:
                corner_parent[corner_base + cid] = (
                    corner_base + cid + corner_parent_offset(kind, corner, width))
            elif flip != 0:
                r = cid // (width + 1)
                c = cid - r * (width + 1)
                if r == 0 or r == height or c == 0 or c == width:
                    corner_parent[corner_base + cid] = corner_base + n_corners - 1
        square_base = b * n_squares
        paired_side = square_kind(code)
        target = v
        if paired_side != SQUARE_CRITICAL:
            target = side_neighbour(row, col, paired_side, height, width)
            if target < 0:
                target = n
        square_parent[square_base + v] = square_base + target
        if v == 0:
            corner_parent[corner_base + n_corners - 1] = corner_base + n_corners - 1
            square_parent[square_base + n] = square_base + n


# -- gradient paths ---------------------------------------------------------------------------
@cuda.jit
def jump_kernel(pointer):
    """Pointer jumping in place until every node points to the root of its tree.

    Each thread writes only its own entry, and only ancestors of it, so concurrent threads
    (in any block, in any order) always read valid ancestors: no barrier is needed.
    """
    for x in range(cuda.grid(1), pointer.size, cuda.gridsize(1)):
        y = pointer[x]
        while True:
            z = pointer[y]
            if z == y:
                break
            pointer[x] = z
            y = z


# -- sorted edges -----------------------------------------------------------------------------
@cuda.jit
def edge_key_kernel(edge_word, edge_image, image_start, chunk_mask, pos_bits, flip, keys):
    """Sort key of every compacted edge: (image, order word, position in its image's list).

    ``edge_word`` (M,) uint32 is the word of the pixel that sets the edge's value. Lists are
    in raster order, so the position sorts equal words by pixel index (reversed when
    ``flip``, as the V-construction's order wants). ``chunk_mask`` keeps the image number
    within a sort chunk (a power of two images).
    """
    for g in range(cuda.grid(1), keys.size, cuda.gridsize(1)):
        b = int64(edge_image[g])
        pos = g - image_start[b]
        if flip != 0:
            pos = image_start[b + 1] - 1 - g
        keys[g] = ((uint64(b & chunk_mask) << uint64(32 + pos_bits))
                   | (uint64(edge_word[g]) << uint64(pos_bits)) | uint64(pos))


@cuda.jit(device=True, inline=True)
def sorted_edge(keys, edge_image, image_start, edges, pos_bits, flip, g):
    """(image, edge name ``pixel * 4 + side``) of the edge at sorted position ``g``."""
    b = int64(edge_image[g])
    pos = int64(uint64(keys[g]) & ((uint64(1) << uint64(pos_bits)) - uint64(1)))
    if flip != 0:
        pos = image_start[b + 1] - image_start[b] - 1 - pos
    return b, int64(edges[image_start[b] + pos])


@cuda.jit(device=True, inline=True)
def leftover_slot(g, b, image_start, corner_rank, leftover_start):
    """Position, in the square pass, of sorted edge ``g`` of image ``b`` that merged nothing in
    the corner pass: its rank among its image's leftover edges, mirrored (reversed order),
    after the leftover edges of the images before ``b``. ``corner_rank`` is the inclusive scan
    of the corner pass's merge flags."""
    start = image_start[b]
    merged_before = corner_rank[g] - (corner_rank[start - 1] if start > 0 else 0)
    rank = g - start - merged_before
    return leftover_start[b + 1] - 1 - rank


@cuda.jit
def corner_ends_kernel(keys, edge_image, image_start, edges, pos_bits, words, height, width,
                       flip, root, ends_a, ends_b, node_key):
    """Corner pass: sorted edge ``g`` joins the roots of its two corners; ``node_key``
    receives the birth keys of those roots."""
    n = height * width
    n_corners = node_counts(height, width)[0]
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        b, edge = sorted_edge(keys, edge_image, image_start, edges, pos_bits, flip, g)
        x, y = edge_corners(edge, width)
        base = b * n_corners
        a = int64(root[base + x])
        c = int64(root[base + y])
        node_key[a] = corner_key(words, b * n, a - base, height, width, flip)
        node_key[c] = corner_key(words, b * n, c - base, height, width, flip)
        ends_a[g] = a
        ends_b[g] = c


@cuda.jit
def square_ends_kernel(keys, edge_image, image_start, edges, pos_bits, words, height, width,
                       flip, root, corner_result, corner_rank, leftover_start, leftover_image,
                       ends_a, ends_b, node_key):
    """Square pass (duality): every edge that merged nothing in the corner pass joins the
    roots of the squares on its two sides, at its :func:`leftover_slot`; ``node_key``
    receives the birth keys of those roots."""
    n = height * width
    n_squares = node_counts(height, width)[1]
    for g in range(cuda.grid(1), keys.size, cuda.gridsize(1)):
        if uint64(corner_result[g]) != uint64(NO_MERGE):
            continue
        b, edge = sorted_edge(keys, edge_image, image_start, edges, pos_bits, flip, g)
        slot = leftover_slot(g, b, image_start, corner_rank, leftover_start)
        x, y = edge_squares(edge, height, width)
        base = b * n_squares
        a = int64(root[base + x])
        c = int64(root[base + y])
        node_key[a] = square_key(words, b * n, a - base, height, width, flip)
        node_key[c] = square_key(words, b * n, c - base, height, width, flip)
        leftover_image[slot] = b
        ends_a[slot] = a
        ends_b[slot] = c


# -- elder rule by recursive halving ----------------------------------------------------------
# Edges g of the pass are sorted within each image's segment [image_start[b], image_start[b+1]);
# t = g - image_start[b] is an edge's rank in its image. Kruskal on them gives edge t the pair
# (younger of the oldest births of the two components it joins, edge t), where components are
# those of the edges before t. Recursive halving over the bits of t, from the highest down:
# at the level of bit ``bit`` an edge belongs to a subproblem of the edges that agree with it on
# the bits above; its light half (bit clear) comes first in Kruskal's order, so its components
# are the next level's subproblems, and the heavy half becomes one more subproblem on the
# contracted graph: each heavy end is renamed to a fresh node ``2M + g_max`` named after the
# heaviest light edge of its component (a name no other component gets), carrying the oldest
# birth of the component. So at every level an edge's two ends are the components, among the
# edges before its subproblem, of its two original ends; the levels stop at aligned runs of
# ``base`` edges, subproblems that one thread pairs by Kruskal (:func:`halving_base_kernel`).
# Nodes are first compacted to the slots 0 .. 2M - 1 (node -> smallest ``2g + side`` at which
# it is an end); fresh nodes are 2M .. 3M - 1. Each level is four launches over all edges of
# the batch.


@cuda.jit(device=True, inline=True)
def _active(g, image_of, image_start, bit):
    """(edge takes part in this level, edge is light): levels above an image's size are skipped."""
    b = int64(image_of[g])
    start = image_start[b]
    t = g - start
    size = image_start[b + 1] - start
    return (size - 1) >= bit, (t & bit) == 0


@cuda.jit(device=True, inline=True)
def _find(parent, x):
    """Root of ``x`` in the union-find ``parent``, halving the path on the way."""
    while True:
        y = parent[x]
        if y == x:
            return x
        z = parent[y]
        if z != y:
            parent[x] = z
        x = z


@cuda.jit(device=True, inline=True)
def _union(parent, x, y):
    """Lock-free union: link the larger root under the smaller one by compare-and-swap."""
    while True:
        x = _find(parent, x)
        y = _find(parent, y)
        if x == y:
            return
        if x < y:
            x, y = y, x
        # On failure continue from the parent the CAS returned: progress never depends on
        # re-reading a word another thread has just changed.
        seen = cuda.atomic.cas(parent, x, int32(x), int32(y))
        if seen == x:
            return
        x = seen


@cuda.jit
def halving_slots_kernel(ends_a, ends_b, slot_of):
    """``slot_of[node]`` = smallest slot ``2g + side`` at which ``node`` is an end (atomic min).

    ``slot_of`` must hold a value of at least ``2M`` for every node beforehand.
    """
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        cuda.atomic.min(slot_of, ends_a[g], int32(2 * g))
        cuda.atomic.min(slot_of, ends_b[g], int32(2 * g + 1))


@cuda.jit
def halving_rename_kernel(ends_a, ends_b, slot_of, node_key, node_birth):
    """Rename the ends to their slots and give each slot its node's birth key."""
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        a = ends_a[g]
        c = ends_b[g]
        slot_a = slot_of[a]
        slot_c = slot_of[c]
        node_birth[slot_a] = node_key[a]
        node_birth[slot_c] = node_key[c]
        ends_a[g] = slot_a
        ends_b[g] = slot_c


@cuda.jit
def halving_reset_kernel(ends_a, ends_b, image_of, image_start, bit, parent, heaviest,
                         node_birth, component_birth):
    """Start of a level: every end of a taking-part edge is a singleton component."""
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        active, _ = _active(g, image_of, image_start, bit)
        if not active:
            continue
        for side in range(2):
            x = ends_a[g] if side == 0 else ends_b[g]
            parent[x] = x
            heaviest[x] = -1
            component_birth[x] = node_birth[x]


@cuda.jit
def halving_union_kernel(ends_a, ends_b, image_of, image_start, bit, parent):
    """Union the ends of every light edge (lock-free)."""
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        active, light = _active(g, image_of, image_start, bit)
        if active and light:
            _union(parent, ends_a[g], ends_b[g])


@cuda.jit
def halving_collect_kernel(ends_a, ends_b, image_of, image_start, bit, parent, heaviest,
                           node_birth, component_birth):
    """Each light component's heaviest edge and oldest birth, at its root (atomics)."""
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        active, light = _active(g, image_of, image_start, bit)
        if not (active and light):
            continue
        x = ends_a[g]
        y = ends_b[g]
        root = _find(parent, x)
        cuda.atomic.max(heaviest, root, int32(g))
        cuda.atomic.min(component_birth, root, min(node_birth[x], node_birth[y]))


@cuda.jit
def halving_contract_kernel(ends_a, ends_b, image_of, image_start, bit, parent, heaviest,
                            node_birth, component_birth, fresh_base):
    """Rename the ends of every heavy edge to the fresh node of their light component."""
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        active, light = _active(g, image_of, image_start, bit)
        if not active or light:
            continue
        for side in range(2):
            x = ends_a[g] if side == 0 else ends_b[g]
            root = _find(parent, x)
            top = heaviest[root]
            if top >= 0:
                fresh = fresh_base + top
                node_birth[fresh] = component_birth[root]
                if side == 0:
                    ends_a[g] = fresh
                else:
                    ends_b[g] = fresh


@cuda.jit(device=True, inline=True)
def _kruskal(ends_a, ends_b, first, stop, birth, parent, result):
    """Sequential Kruskal with the elder rule over edges ``first .. stop - 1`` of one
    subproblem (whose nodes no other subproblem uses): ``result[g]`` = the birth edge ``g``
    kills, or :data:`NO_MERGE`. A root is always the oldest node of its component."""
    for g in range(first, stop):
        parent[ends_a[g]] = ends_a[g]
        parent[ends_b[g]] = ends_b[g]
    for g in range(first, stop):
        a = _find(parent, ends_a[g])
        c = _find(parent, ends_b[g])
        if a == c:
            result[g] = uint64(NO_MERGE)
        elif birth[a] < birth[c]:
            parent[c] = a
            result[g] = birth[c]
        else:
            parent[a] = c
            result[g] = birth[a]


@cuda.jit
def halving_base_kernel(ends_a, ends_b, image_of, image_start, base, node_birth, parent,
                        result):
    """Last levels of the halving: each run of ``base`` edges (a power of two) of an image is
    one subproblem, solved by one thread with :func:`_kruskal`."""
    for g in range(cuda.grid(1), ends_a.size, cuda.gridsize(1)):
        b = int64(image_of[g])
        start = image_start[b]
        if ((g - start) & (base - 1)) == 0:
            _kruskal(ends_a, ends_b, g, min(g + base, image_start[b + 1]), node_birth, parent,
                     result)


# -- elder rule, sequential baseline ----------------------------------------------------------
@cuda.jit
def sequential_pass_kernel(ends_a, ends_b, image_start, node_key, parent, result):
    """Baseline: one thread per image runs Kruskal with the elder rule over all its edges."""
    n_images = image_start.size - 1
    for b in range(cuda.grid(1), n_images, cuda.gridsize(1)):
        _kruskal(ends_a, ends_b, image_start[b], image_start[b + 1], node_key, parent, result)


# -- output -----------------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def _store(image, dim, birth, death, pos, b, d, birth_index, death_index):
    image[pos] = b
    dim[pos] = d
    birth[pos] = birth_index
    death[pos] = death_index


@cuda.jit
def assemble_kernel(n_edges, keys, edge_image, image_start, edges, pos_bits, flip,
                    corner_result, corner_rank, square_result, square_rank, leftover_start,
                    out_start, dim0_count, first_key, last_key, want_dim0, want_dim1, image,
                    dim, birth, death, last_index):
    """Pack the pairs of every image at ``out_start[b]``: dimension 0 (the essential class
    first, ``dim0_count[b]`` pairs in all), then dimension 1.

    The corner pass gives the T-construction's dimension 0 (birth: the younger root's pixel,
    death: the edge's pixel) and the V-construction's dimension 1 (birth and death swapped);
    the square pass the T-construction's dimension 1 (birth: the edge's pixel, death: the
    younger square's pixel) and the V-construction's dimension 0 (swapped).
    ``corner_rank``/``square_rank`` are inclusive scans of the merge flags of the two passes;
    ``n_edges`` is M (the edge buffers may be longer). Thread ``M + b`` writes image ``b``'s
    essential class, born at the pixel of ``first_key[b]``, and ``last_index[b]``, the pixel
    of ``last_key[b]`` (where the filtration ends).
    """
    n_images = image_start.size - 1
    for g in range(cuda.grid(1), n_edges + n_images, cuda.gridsize(1)):
        if g >= n_edges:
            b = g - n_edges
            last_index[b] = key_pixel(last_key[b], flip)
            if want_dim0 != 0:
                _store(image, dim, birth, death, out_start[b], b, 0,
                       key_pixel(first_key[b], flip), int64(-1))
            continue
        b, edge = sorted_edge(keys, edge_image, image_start, edges, pos_bits, flip, g)
        start = image_start[b]
        edge_pixel = edge // 4
        younger = uint64(corner_result[g])
        if younger != uint64(NO_MERGE):
            if (want_dim1 if flip != 0 else want_dim0) == 0:
                continue
            earlier = corner_rank[start - 1] if start > 0 else 0
            pos = out_start[b] + (corner_rank[g] - 1 - earlier)
            born = key_pixel(younger, flip)
            if flip != 0:
                if want_dim0 != 0:
                    pos += dim0_count[b]
                _store(image, dim, birth, death, pos, b, 1, edge_pixel, born)
            else:
                _store(image, dim, birth, death, pos + 1, b, 0, born, edge_pixel)
            continue
        if (want_dim0 if flip != 0 else want_dim1) == 0:
            continue
        slot = leftover_slot(g, b, image_start, corner_rank, leftover_start)
        younger = uint64(square_result[slot])
        if younger == uint64(NO_MERGE):
            continue
        first = leftover_start[b]
        earlier = square_rank[first - 1] if first > 0 else 0
        pos = out_start[b] + (square_rank[slot] - 1 - earlier)
        dying = key_pixel(younger ^ uint64(NO_MERGE), flip)
        if flip != 0:
            _store(image, dim, birth, death, pos + 1, b, 0, dying, edge_pixel)
        else:
            if want_dim0 != 0:
                pos += dim0_count[b]
            _store(image, dim, birth, death, pos, b, 1, edge_pixel, dying)
