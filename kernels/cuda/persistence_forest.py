"""Boruvka rounds: the minimum spanning forest of the basin graphs of all problems at once.

Edge keys are unique (see :mod:`persistence_common`), so the forest is unique and a root that
hooks along its lightest edge never closes a cycle except with the root at the other end of
the same edge; of such a mutual pair the larger node id hooks. One round is two launches:

1. :func:`boruvka_min_kernel`: for every live edge, the roots of its ends (``find`` with
   path halving); edges inside one component are dropped, the others are compacted into the
   next list (block-aggregated atomics) and offered to both roots (atomic min of the key).
2. :func:`boruvka_hook_kernel`: every root whose lightest edge is a compacted edge hooks to
   the other root, and that edge is appended to its problem's forest list.

The ``best`` arrays alternate between rounds; the entries a round set are reset by the next
round's first kernel, from the endpoints it reads, so no full refill is needed.
"""
from __future__ import annotations

from numba import cuda, int32, int64, uint64

from ..common.persistence_common import NO_EDGE

__all__ = ["find_root_halving", "boruvka_min_kernel", "boruvka_hook_kernel"]


@cuda.jit(device=True, inline=True)
def find_root_halving(parent, x):
    """Root of ``x``; halves the path by writes that only ever point to ancestors."""
    while True:
        y = parent[x]
        if y == x:
            return x
        z = parent[y]
        if z != y:
            parent[x] = z
        x = z


@cuda.jit
def boruvka_min_kernel(src_key, src_a, src_b, src_count, parent, best_reset, best,
                       dst_key, dst_a, dst_b, dst_count):
    """Drop edges inside a component, compact the others, offer them to both roots."""
    shared = cuda.shared.array(2, int32)
    count = src_count[0]
    tid = cuda.threadIdx.x
    width = cuda.blockDim.x
    for base in range(cuda.blockIdx.x * width, count, cuda.gridDim.x * width):
        if tid == 0:
            shared[0] = 0
        cuda.syncthreads()
        i = base + tid
        keep = False
        key = uint64(0)
        root_a = 0
        root_b = 0
        local = 0
        if i < count:
            a = src_a[i]
            b = src_b[i]
            best_reset[a] = uint64(NO_EDGE)
            best_reset[b] = uint64(NO_EDGE)
            root_a = find_root_halving(parent, a)
            root_b = find_root_halving(parent, b)
            if root_a != root_b:
                keep = True
                key = src_key[i]
                cuda.atomic.min(best, root_a, key)
                cuda.atomic.min(best, root_b, key)
                local = cuda.atomic.add(shared, 0, 1)
        cuda.syncthreads()
        if tid == 0:
            shared[1] = cuda.atomic.add(dst_count, 0, shared[0])
        cuda.syncthreads()
        if keep:
            j = shared[1] + local
            dst_key[j] = key
            dst_a[j] = root_a
            dst_b[j] = root_b
        cuda.syncthreads()


@cuda.jit
def boruvka_hook_kernel(key_list, a_list, b_list, count, best, parent, nodes_per_problem,
                        forest, forest_count):
    """Hook every root along its lightest edge and record that edge in the forest.

    ``forest`` holds ``nodes_per_problem`` slots per problem; a forest has fewer edges than
    nodes, so it never overflows.
    """
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, count[0], stride):
        key = key_list[i]
        a = a_list[i]
        b = b_list[i]
        best_a = best[a]
        best_b = best[b]
        hook_a = best_a == key and not (best_b == key and a < b)
        hook_b = best_b == key and not (best_a == key and b < a)
        child = -1
        if hook_a:
            parent[a] = b
            child = a
        elif hook_b:
            parent[b] = a
            child = b
        if child >= 0:
            problem = int64(child) // nodes_per_problem
            slot = cuda.atomic.add(forest_count, problem, 1)
            forest[problem * nodes_per_problem + slot] = key
