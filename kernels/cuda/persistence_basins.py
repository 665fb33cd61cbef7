"""Pixel-level kernels: order words, steepest descent, basin labels and basin-graph edges.

Layout shared by every persistence kernel: ``P`` problems (image ``p // n_dims``, pass
``dual_flags[p]``), ``n = H * W`` pixels each, ``n + 1`` nodes each (node ``n`` is the frame
of the dual pass; isolated in the primal pass). Node arrays are flat, node ``x`` of problem
``p`` at ``p * (n + 1) + x``. Every kernel is a grid-stride loop with a bounds check.
"""
from __future__ import annotations

from numba import cuda, int32, int64, uint32, uint64

from ..common.scalar import float32_ordered_bits

from ..common.persistence_common import neighbor_pixel, pass_connectivity, pixel_key

__all__ = [
    "float32_order_kernel",
    "rank_order_kernel",
    "descent_kernel",
    "jump_kernel",
    "basin_edges_kernel",
]


@cuda.jit
def float32_order_kernel(bits, order):
    """``order[i]`` = order-preserving uint32 of the float32 whose raw bits are ``bits[i]``.

    ``-0.0`` is read as ``+0.0`` so that equal values get equal words.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, bits.size, stride):
        raw = uint32(bits[i])
        if raw == uint32(0x80000000):
            raw = uint32(0)
        order[i] = float32_ordered_bits(raw)


@cuda.jit
def rank_order_kernel(sorted_index, n_pixels, order):
    """``order[img * n + sorted_index[img, j]] = j + 1``: ranks from a stable per-image sort."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, sorted_index.size, stride):
        img = i // n_pixels
        j = i - img * n_pixels
        order[img * n_pixels + int64(sorted_index[img, j])] = uint32(j + 1)


@cuda.jit(device=True, inline=True)
def _pixel_problem(gid, n, order, dual_flags, n_dims, connectivity):
    """Where global pixel ``gid`` lives: (problem, pixel, dual flag, image offset, node
    offset, connectivity of the pass, key of the pixel)."""
    p = gid // n
    v = gid - p * n
    dual = int64(dual_flags[p])
    image_base = (p // n_dims) * n
    node_base = p * (n + 1)
    conn = pass_connectivity(connectivity, dual)
    return p, v, dual, image_base, node_base, conn, pixel_key(order[image_base + v], v, dual)


@cuda.jit
def descent_kernel(order, dual_flags, n_dims, height, width, connectivity, pointer, first_key):
    """Steepest descent: every pixel points to its lowest earlier neighbour (itself if none).

    In the dual pass a pixel outside the image is the frame, which precedes every pixel.
    ``first_key[p]`` receives (atomic min) the smallest local-minimum key of each primal
    problem: the birth of its essential class.
    """
    n = height * width
    total = dual_flags.size * n
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for gid in range(start, total, stride):
        p, v, dual, image_base, node_base, conn, key_v = _pixel_problem(
            gid, n, order, dual_flags, n_dims, connectivity)
        best = key_v
        target = v
        for k in range(conn):
            u = neighbor_pixel(v, k, height, width)
            if u < 0:
                if dual == 0:
                    continue
                key_u = uint64(0)
                node_u = int64(n)
            else:
                key_u = pixel_key(order[image_base + u], u, dual)
                node_u = u
            if key_u < best:
                best = key_u
                target = node_u
        pointer[node_base + v] = node_base + target
        if v == 0:
            pointer[node_base + n] = node_base + n
        if target == v and dual == 0:
            cuda.atomic.min(first_key, p, key_v)


@cuda.jit
def jump_kernel(pointer):
    """Pointer jumping in place until every node points to the root of its tree.

    Each thread only writes its own entry, and only ancestors of it, so concurrent threads
    (in any block) always read valid ancestors: no barrier is needed.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for x in range(start, pointer.size, stride):
        y = pointer[x]
        while True:
            z = pointer[y]
            if z == y:
                break
            pointer[x] = z
            y = z


@cuda.jit(device=True, inline=True)
def _pixel_edges(gid, order, label, dual_flags, n_dims, height, width, connectivity,
                 seen, emit, offset, edge_key, edge_a, edge_b):
    """Basin-graph edges whose weight pixel is pixel ``gid`` (one per distinct other basin).

    An edge joins the basin of ``v`` and that of an earlier neighbour ``u`` in another basin;
    its key is ``key(v) | k``. Writes them at ``offset`` if ``emit``; returns their number.
    """
    n = height * width
    p, v, dual, image_base, node_base, conn, key_v = _pixel_problem(
        gid, n, order, dual_flags, n_dims, connectivity)
    own = label[node_base + v]
    count = 0
    for k in range(conn):
        u = neighbor_pixel(v, k, height, width)
        if u < 0:
            if dual == 0:
                continue
            key_u = uint64(0)
            node_u = node_base + n
        else:
            key_u = pixel_key(order[image_base + u], u, dual)
            node_u = node_base + u
        if key_u >= key_v:
            continue
        other = label[node_u]
        if other == own:
            continue
        duplicate = False
        for j in range(count):
            if seen[j] == other:
                duplicate = True
        if duplicate:
            continue
        seen[count] = other
        if emit:
            edge_key[offset + count] = key_v | uint64(k)
            edge_a[offset + count] = own
            edge_b[offset + count] = other
        count += 1
    return count


@cuda.jit
def basin_edges_kernel(order, label, dual_flags, n_dims, height, width, connectivity, emit,
                       ends, edge_key, edge_a, edge_b):
    """Basin-graph edges of every pixel, in two launches.

    ``emit == 0``: ``ends[gid]`` receives the number of edges weighted by pixel ``gid``.
    ``emit == 1``: ``ends`` holds the inclusive scan of those counts, and the edges are
    written to ``edge_key``, ``edge_a``, ``edge_b`` (uint64, int32, int32; node ids).
    """
    seen = cuda.local.array(8, int32)
    total = ends.size
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for gid in range(start, total, stride):
        if emit == 0:
            ends[gid] = _pixel_edges(gid, order, label, dual_flags, n_dims, height, width,
                                     connectivity, seen, False, 0, edge_key, edge_a, edge_b)
        else:
            offset = int64(0)
            if gid > 0:
                offset = int64(ends[gid - 1])
            _pixel_edges(gid, order, label, dual_flags, n_dims, height, width, connectivity,
                         seen, True, offset, edge_key, edge_a, edge_b)
