"""A NumPy model of the GPU persistence pipeline, to count its work on the CPU.

Every parallel step of ``backend="cuda"`` is modelled by one synchronous vectorised step, so
the counts below are what the GPU kernels iterate over: the critical edges left by the
per-pixel rule (the length of the one sort and of both pairing passes), the critical corners
and squares (the births of the two passes), the rounds of synchronous pointer jumping along
the gradient paths (the GPU's in-place jumping needs at most as many), and the levels of the
recursive-halving pairing. The model also returns the pairs, so it is checked against the
backends.

Run ``python -m satloss_gpu.persistence.parallel_model`` for the counts on 512x512 inputs.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

__all__ = ["critical_edge_counts", "model_image_pairs", "model_counts"]

# (drow, dcol) of the 8 neighbours in the raster order of the rule's neighbourhood mask.
_MASK_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
_SIDE_OFFSETS = [(-1, 0), (0, -1), (0, 1), (1, 0)]  # sides: top, left, right, bottom
_SIDE_CORNERS = [(0, 1), (0, 2), (1, 3), (2, 3)]


def _pass_rank(image: np.ndarray, construction: str) -> np.ndarray:
    """(H, W) rank of every pixel in the pass order: (value, index), reversed for "V"."""
    flat = image.ravel()
    order = np.lexsort((np.arange(flat.size), flat))
    if construction == "V":
        order = order[::-1]
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    return rank.reshape(image.shape)


def _codes(rank: np.ndarray, outside_earlier: bool) -> np.ndarray:
    """(H, W) rule code of every pixel (:data:`RULE_TABLE` of its neighbourhood mask)."""
    from satloss_gpu.kernels.common.local_pairing import RULE_TABLE

    height, width = rank.shape
    padded = np.pad(rank, 1, constant_values=-1 if outside_earlier else rank.size)
    mask = np.zeros(rank.shape, dtype=np.int64)
    for bit, (dr, dc) in enumerate(_MASK_OFFSETS):
        neighbour = padded[1 + dr:1 + dr + height, 1 + dc:1 + dc + width]
        mask |= (neighbour < rank).astype(np.int64) << bit
    return RULE_TABLE[mask].astype(np.int64)


def critical_edge_counts(image: np.ndarray, construction: str = "T") -> np.ndarray:
    """(H, W) int64: the number of critical edges the rule leaves at every pixel."""
    codes = _codes(_pass_rank(np.asarray(image), construction), construction == "V")
    return sum((codes >> (8 + side)) & 1 for side in range(4))


def _jump(parent: np.ndarray) -> Tuple[np.ndarray, int]:
    """Synchronous pointer jumping to the roots; (roots, rounds)."""
    rounds = 0
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent, rounds
        parent = grand
        rounds += 1


def _halving(a: np.ndarray, b: np.ndarray, birth: np.ndarray) -> Tuple[np.ndarray, int]:
    """Elder rule over sorted edges by recursive halving, as the GPU kernels run it.

    Parameters
    ----------
    a, b : (m,) int64
        Node ids of the ends of the edges, in Kruskal's order.
    birth : (N,) int64
        Birth of every node (smaller is older).

    Returns
    -------
    younger : (m,) int64
        Birth killed by each edge, or -1 for an edge that closes a cycle.
    levels : int
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = a.size
    a, b = a.copy(), b.copy()
    births = np.concatenate([birth, np.zeros(m, dtype=np.int64)])
    fresh_base = birth.size
    levels = int(m - 1).bit_length() if m > 1 else 0
    t = np.arange(m)
    for level in range(levels):
        bit = 1 << (levels - 1 - level)
        light = (t & bit) == 0
        nodes, inverse = np.unique(np.concatenate([a[light], b[light]]), return_inverse=True)
        count = int(light.sum())
        graph = coo_matrix((np.ones(count), (inverse[:count], inverse[count:])),
                           shape=(nodes.size, nodes.size))
        _, component = connected_components(graph, directed=False)
        heaviest = np.full(component.max() + 1, -1)
        np.maximum.at(heaviest, component[inverse[:count]], t[light])
        oldest = np.full(component.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(oldest, component, births[nodes])
        heavy = np.flatnonzero(~light)
        for ends in (a, b):
            where = np.searchsorted(nodes, ends[heavy])
            found = (where < nodes.size) & (nodes[np.minimum(where, nodes.size - 1)]
                                            == ends[heavy])
            comp = component[where[found]]
            fresh = fresh_base + heaviest[comp]
            births[fresh] = oldest[comp]
            ends[heavy[found]] = fresh
    younger = np.where(a != b, np.maximum(births[a], births[b]), -1)
    return younger, levels


def _pipeline(image: np.ndarray, construction: str) -> Tuple[list, Dict[str, int]]:
    """Pairs (dim, birth pixel, death pixel) and counts of one image."""
    image = np.asarray(image)
    height, width = image.shape
    n = image.size
    flip = construction == "V"
    rank = _pass_rank(image, construction)
    flat_rank = rank.ravel()
    pixel_of_rank = np.argsort(flat_rank)
    codes = _codes(rank, flip).ravel()
    rows, cols = np.divmod(np.arange(n), width)
    # The rule's gradient: corner and square parents (per-pixel kernel, emit pass).
    n_corners = (height + 1) * (width + 1)
    corner_parent = np.arange(n_corners + 1)
    for corner in range(4):
        kind = (codes >> (2 * corner)) & 3
        cid = (rows + (corner >> 1)) * (width + 1) + cols + (corner & 1)
        row_step = np.where(corner & 1, -1, 1)
        col_step = (width + 1) if corner < 2 else -(width + 1)
        offset = np.select([kind == 2, kind == 3], [row_step, col_step], 0)
        owned = kind != 0
        corner_parent[cid[owned]] = cid[owned] + offset[owned]
    if flip:
        grid_r, grid_c = np.divmod(np.arange(n_corners), width + 1)
        outer = (grid_r == 0) | (grid_r == height) | (grid_c == 0) | (grid_c == width)
        corner_parent[:n_corners][outer] = n_corners
    square_parent = np.append(np.arange(n), n)
    paired = (codes >> 12) & 7
    for side, (dr, dc) in enumerate(_SIDE_OFFSETS):
        sel = paired == side
        r, c = rows[sel] + dr, cols[sel] + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        square_parent[np.flatnonzero(sel)] = np.where(inside, r * width + c, n)
    corner_root, corner_rounds = _jump(corner_parent)
    square_root, square_rounds = _jump(square_parent)
    # Critical edges sorted by (rank of their pixel, side): the one sort.
    pixel, side = np.nonzero(np.stack([(codes >> (8 + s)) & 1 for s in range(4)], axis=1))
    order = np.lexsort((side, flat_rank[pixel]))
    pixel, side = pixel[order], side[order]
    m = pixel.size
    # Corner pass: Kruskal order; a corner's birth is the rank of its earliest square.
    padded = np.pad(rank, 1, constant_values=n)
    corner_birth = np.minimum.reduce([padded[i:i + height + 1, j:j + width + 1]
                                      for i in (0, 1) for j in (0, 1)]).ravel()
    corner_birth = np.append(corner_birth, -1)  # the exterior corner
    ends = [np.array([_SIDE_CORNERS[s][k] for s in side], dtype=np.int64) for k in (0, 1)]
    corner_ids = [(rows[pixel] + (e >> 1)) * (width + 1) + cols[pixel] + (e & 1) for e in ends]
    younger0, levels = _halving(corner_root[corner_ids[0]], corner_root[corner_ids[1]],
                                corner_birth)
    # Square pass: reversed order; loops where the corner pass merged.
    dr = np.array([_SIDE_OFFSETS[s][0] for s in side], dtype=np.int64)
    dc = np.array([_SIDE_OFFSETS[s][1] for s in side], dtype=np.int64)
    r, c = rows[pixel] + dr, cols[pixel] + dc
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    other = np.where(inside, r * width + c, n)
    square_a = square_root[pixel]
    square_b = np.where(younger0 >= 0, square_a, square_root[other])
    square_birth = np.append(n - 1 - flat_rank, -1)  # reversed order; the outside first
    younger1, _ = _halving(square_a[::-1], square_b[::-1], square_birth)
    younger1 = younger1[::-1]
    corner_pairs = [(int(pixel_of_rank[y]), int(p)) for y, p in zip(younger0, pixel) if y >= 0]
    square_pairs = [(int(p), int(pixel_of_rank[n - 1 - y])) for y, p in zip(younger1, pixel)
                    if y >= 0]
    first = int(np.lexsort((np.arange(n), image.ravel()))[0])
    pairs = [(0, first, -1)]
    if flip:
        pairs += [(1, e, d) for d, e in corner_pairs] + [(0, d, e) for e, d in square_pairs]
    else:
        pairs += [(0, b, e) for b, e in corner_pairs] + [(1, e, d) for e, d in square_pairs]
    counts = {
        "critical_edges": int(m),
        "critical_edges_per_pixel": m / n,
        "critical_corners": int(sum(((codes >> (2 * k)) & 3) == 1 for k in range(4)).sum()),
        "critical_squares": int((paired == 4).sum()),
        "jump_rounds_corners": corner_rounds,
        "jump_rounds_squares": square_rounds,
        "halving_levels": levels,
    }
    return sorted(pairs), counts


def model_image_pairs(image: np.ndarray, construction: str = "T") -> list:
    """Sorted (dim, birth_index, death_index) of an image by the model (H0 essential incl.).

    Pairs whose birth and death values are equal are included (the backends drop them).
    """
    return _pipeline(image, construction)[0]


def model_counts(image: np.ndarray, construction: str = "T") -> Dict[str, float]:
    """Counts of one image: ``critical_edges`` (and per pixel), ``critical_corners``,
    ``critical_squares``, ``jump_rounds_corners``, ``jump_rounds_squares``,
    ``halving_levels`` (both pairing passes run over the same sorted edges)."""
    return _pipeline(image, construction)[1]


def _main() -> None:
    from scipy.ndimage import gaussian_filter
    from skimage import data, filters

    rng = np.random.default_rng(0)
    noise = rng.random((512, 512))
    green = data.retina()[:, :, 1].astype(np.float64) / 255.0
    vessels = filters.sato(green, sigmas=(1, 2, 3), black_ridges=True)[400:912, 400:912]
    inputs = {"uniform noise": noise, "blurred s=1": gaussian_filter(noise, 1.0),
              "blurred s=4": gaussian_filter(noise, 4.0), "retina vesselness": vessels}
    keys = ("critical_edges", "critical_edges_per_pixel", "critical_corners",
            "critical_squares", "jump_rounds_corners", "jump_rounds_squares",
            "halving_levels")
    print(f"{'input (512x512, T)':<20}" + "".join(f"{k:>26}" for k in keys))
    for name, image in inputs.items():
        counts = model_counts(image)
        print(f"{name:<20}" + "".join(
            f"{counts[k]:>26.4f}" if isinstance(counts[k], float) else f"{counts[k]:>26}"
            for k in keys))


if __name__ == "__main__":
    _main()
