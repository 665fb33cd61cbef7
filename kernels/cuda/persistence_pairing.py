"""Elder-rule pairing on the weight-sorted spanning-forest edges of every problem.

Kruskal on the forest edges ``t = 0 .. m-1`` (sorted by key) gives edge ``t`` the pair
(younger of the two component minima it joins, weight pixel of ``t``); only the minima of the
two components of the forest of edges ``< t`` matter.

:func:`pairing_halving_kernel` (one block per problem, all its threads) computes them by
recursive halving over the bits of ``t``, from the highest bit down. At the level of bit ``b``
every edge belongs to a subproblem made of edges that agree on the bits above ``b``, on a
node set disjoint from every other subproblem's. Its *light* edges (bit ``b`` clear) are all
lighter than its *heavy* ones, so the components of the light edges are the next level's
subproblems, unchanged, and the heavy edges form one more subproblem on the contracted
graph: their ends are renamed to a fresh node per light component (named ``2m + t_max`` by
the component's heaviest edge, a name no other component ever gets) carrying the oldest
birth of the component. One union-find pass per level (lock-free, CAS linking) finds the
light components. After ``ceil(log2 m)`` levels each edge's ends are exactly the two
components it joins in Kruskal's order. Work ``O(m log m)``, ``log2 m`` levels of barriers.

:func:`pairing_sequential_kernel` is the baseline: one thread per problem runs the
sequential union-find with the elder rule over the same sorted edges.

Nodes of a problem are compacted first: basin ``x`` becomes the smallest slot ``2t`` or
``2t + 1`` at which it is an end of edge ``t``; fresh nodes are ``2m + t``. So the scratch
arrays hold ``3 * width`` entries per problem, ``width`` being the row length of the sorted
edge array.
"""
from __future__ import annotations

from numba import cuda, int32, int64, uint64

from ..common.persistence_common import edge_slot, key_pixel, neighbor_pixel, pixel_key
from .persistence_forest import find_root_halving

__all__ = ["pairing_halving_kernel", "pairing_sequential_kernel", "assemble_kernel"]


@cuda.jit(device=True, inline=True)
def _edge_ends(key, dual, height, width):
    """(weight pixel v, other end u) of an edge key; ``u == n`` is the frame."""
    v = key_pixel(key, dual)
    u = neighbor_pixel(v, edge_slot(key), height, width)
    if u < 0:
        u = height * width
    return v, u


@cuda.jit(device=True, inline=True)
def _basin_key(order, image_base, node, n, dual):
    """Birth key of basin ``node`` (its minimum pixel, or the frame: key 0)."""
    if node == n:
        return uint64(0)
    return uint64(pixel_key(order[image_base + node], node, dual))


@cuda.jit(device=True, inline=True)
def _find_offset(parent, base, x):
    """Root of local node ``x`` in the union-find stored at ``parent[base:]``."""
    while True:
        y = parent[base + x]
        if y == x:
            return x
        z = parent[base + y]
        if z != y:
            parent[base + x] = z
        x = z


@cuda.jit(device=True, inline=True)
def _union_offset(parent, base, x, y):
    """Lock-free union: link the larger root under the smaller one by compare-and-swap."""
    while True:
        x = _find_offset(parent, base, x)
        y = _find_offset(parent, base, y)
        if x == y:
            return
        if x < y:
            x, y = y, x
        # The CAS returns the current parent of ``x``: on failure continue from it, so that
        # progress never depends on re-reading a word another thread has just changed.
        seen = cuda.atomic.cas(parent, base + x, int32(x), int32(y))
        if seen == x:
            return
        x = seen


@cuda.jit(device=True, inline=True)
def _write_pair(dual, weight_pixel, younger_pixel, out_birth, out_death, slot):
    """Store an H0 pair (primal) or the H1 pair it stands for (dual)."""
    if dual != 0:
        out_birth[slot] = weight_pixel
        out_death[slot] = younger_pixel
    else:
        out_birth[slot] = younger_pixel
        out_death[slot] = weight_pixel


@cuda.jit
def pairing_halving_kernel(sorted_keys, width, edge_count, label, order, dual_flags, n_dims,
                           height, image_width, slot_of, ends_a, ends_b, parent, cmax,
                           nbirth, cbirth, out_birth, out_death):
    """Elder-rule pairs of every forest edge; block ``p`` solves problem ``p``.

    Parameters (flat arrays): ``sorted_keys`` (P * width) uint64 per-problem sorted keys;
    ``edge_count`` (P,) int32; ``label`` node -> basin node id; ``slot_of`` (P * (n + 1)) int32
    filled with a value >= 2 * width; ``ends_a``/``ends_b`` (P * width) int32; ``parent``,
    ``cmax`` (P * 3 * width) int32; ``nbirth``, ``cbirth`` (P * 3 * width) uint64;
    ``out_birth``, ``out_death`` (P * width) int64.
    """
    p = cuda.blockIdx.x
    if p >= edge_count.size:
        return
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    m = int64(edge_count[p])
    n = height * image_width
    dual = int64(dual_flags[p])
    image_base = (p // n_dims) * n
    node_base = p * (n + 1)
    row = p * width
    nodes = p * 3 * width
    # Compact node ids: basin -> smallest slot at which it is an edge end.
    for t in range(tid, m, step):
        v, u = _edge_ends(sorted_keys[row + t], dual, height, image_width)
        a = label[node_base + v]
        b = label[node_base + u]
        cuda.atomic.min(slot_of, a, int32(2 * t))
        cuda.atomic.min(slot_of, b, int32(2 * t + 1))
        ends_a[row + t] = a - node_base
        ends_b[row + t] = b - node_base
    cuda.syncthreads()
    for t in range(tid, m, step):
        a = int64(ends_a[row + t])
        b = int64(ends_b[row + t])
        slot_a = slot_of[node_base + a]
        slot_b = slot_of[node_base + b]
        nbirth[nodes + slot_a] = _basin_key(order, image_base, a, n, dual)
        nbirth[nodes + slot_b] = _basin_key(order, image_base, b, n, dual)
        ends_a[row + t] = slot_a
        ends_b[row + t] = slot_b
    cuda.syncthreads()
    levels = 0
    while (int64(1) << levels) < m:
        levels += 1
    for level in range(levels):
        bit = int64(1) << (levels - 1 - level)
        for t in range(tid, m, step):
            x = ends_a[row + t]
            y = ends_b[row + t]
            parent[nodes + x] = x
            parent[nodes + y] = y
            cmax[nodes + x] = -1
            cmax[nodes + y] = -1
            cbirth[nodes + x] = nbirth[nodes + x]
            cbirth[nodes + y] = nbirth[nodes + y]
        cuda.syncthreads()
        for t in range(tid, m, step):
            if (t & bit) == 0:
                _union_offset(parent, nodes, ends_a[row + t], ends_b[row + t])
        cuda.syncthreads()
        for t in range(tid, m, step):
            if (t & bit) == 0:
                x = ends_a[row + t]
                y = ends_b[row + t]
                root = _find_offset(parent, nodes, x)
                parent[nodes + x] = root
                parent[nodes + y] = root
                cuda.atomic.max(cmax, nodes + root, int32(t))
                oldest = min(nbirth[nodes + x], nbirth[nodes + y])
                cuda.atomic.min(cbirth, nodes + root, oldest)
        cuda.syncthreads()
        for t in range(tid, m, step):
            if (t & bit) != 0:
                for side in range(2):
                    x = ends_a[row + t] if side == 0 else ends_b[row + t]
                    root = _find_offset(parent, nodes, x)
                    heaviest = cmax[nodes + root]
                    if heaviest >= 0:
                        fresh = 2 * m + heaviest
                        nbirth[nodes + fresh] = cbirth[nodes + root]
                        if side == 0:
                            ends_a[row + t] = fresh
                        else:
                            ends_b[row + t] = fresh
        cuda.syncthreads()
    for t in range(tid, m, step):
        key = sorted_keys[row + t]
        younger = max(nbirth[nodes + ends_a[row + t]], nbirth[nodes + ends_b[row + t]])
        _write_pair(dual, key_pixel(key, dual), key_pixel(younger, dual), out_birth,
                    out_death, row + t)


@cuda.jit
def pairing_sequential_kernel(sorted_keys, width, edge_count, label, order, dual_flags,
                              n_dims, height, image_width, parent, out_birth, out_death):
    """Baseline: one thread per problem (grid-stride) runs Kruskal with the elder rule.

    ``parent`` (P * (n + 1)) int32 is scratch; a component's root is always its oldest basin,
    so its birth is the root's own key.
    """
    n = height * image_width
    for p in range(cuda.grid(1), edge_count.size, cuda.gridsize(1)):
        m = int64(edge_count[p])
        dual = int64(dual_flags[p])
        image_base = (p // n_dims) * n
        node_base = p * (n + 1)
        row = p * width
        for t in range(m):
            v, u = _edge_ends(sorted_keys[row + t], dual, height, image_width)
            a = label[node_base + v] - node_base
            b = label[node_base + u] - node_base
            parent[node_base + a] = a
            parent[node_base + b] = b
        for t in range(m):
            key = sorted_keys[row + t]
            v, u = _edge_ends(key, dual, height, image_width)
            root_a = _find_offset(parent, node_base, label[node_base + v] - node_base)
            root_b = _find_offset(parent, node_base, label[node_base + u] - node_base)
            key_a = _basin_key(order, image_base, root_a, n, dual)
            key_b = _basin_key(order, image_base, root_b, n, dual)
            younger = root_a
            older = root_b
            younger_key = key_a
            if key_a < key_b:
                younger = root_b
                older = root_a
                younger_key = key_b
            parent[node_base + younger] = older
            _write_pair(dual, v, key_pixel(younger_key, dual), out_birth, out_death, row + t)


@cuda.jit
def assemble_kernel(ends, edge_count, first_key, dual_flags, n_dims, width, out_birth,
                    out_death, image, dim, birth, death):
    """Pack every problem's pairs at its offset (``ends``: inclusive scan of pair counts).

    A primal problem starts with its essential class (birth at the first pixel, death -1),
    then its forest pairs; a dual problem has its forest pairs only.
    """
    per_problem = width + 1
    total = ends.size * per_problem
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for gid in range(start, total, stride):
        p = gid // per_problem
        j = gid - p * per_problem
        offset = int64(0)
        if p > 0:
            offset = int64(ends[p - 1])
        dual = int64(dual_flags[p])
        if j == 0:
            if dual != 0:
                continue
            pos = offset
            birth_index = key_pixel(first_key[p], 0)
            death_index = int64(-1)
        else:
            t = j - 1
            if t >= edge_count[p]:
                continue
            pos = offset + (1 - dual) + t
            birth_index = out_birth[p * width + t]
            death_index = out_death[p * width + t]
        image[pos] = p // n_dims
        dim[pos] = dual
        birth[pos] = birth_index
        death[pos] = death_index
