"""A NumPy model of the GPU persistence pipeline, to count its rounds and levels on the CPU.

Every parallel step of ``backend="cuda"`` is modelled by one synchronous vectorised step, so
the counts below are what the GPU kernels iterate over (up to the asynchronous speed-ups of
in-place pointer jumping): steepest-descent pointer-jumping rounds, basin-graph edges, Boruvka
rounds, spanning-forest edges, and levels of the recursive-halving pairing. The model also
returns the pairs, so it is checked against the backends.

Run ``python -m satloss_gpu.persistence.parallel_model`` for the counts on 512x512 inputs.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..kernels.common.scalar import NEIGHBOR_OFFSETS

__all__ = ["model_pass", "model_image_pairs", "model_counts"]


def _neighbours(height: int, width: int, k: int) -> np.ndarray:
    """(n,) flat index of neighbour ``k`` of every pixel, -1 outside the image."""
    rows, cols = np.divmod(np.arange(height * width), width)
    r, c = rows + NEIGHBOR_OFFSETS[k, 0], cols + NEIGHBOR_OFFSETS[k, 1]
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    return np.where(inside, r * width + c, -1)


def model_pass(image: np.ndarray, connectivity: int, dual: bool) -> Tuple[np.ndarray, Dict]:
    """H0 of one pass (primal, or dual with a frame), as the GPU pipeline computes it.

    Parameters
    ----------
    image : (H, W) float ndarray
    connectivity : {4, 8}
        Connectivity of this pass.
    dual : bool
        Reversed order and a frame (node ``n``, key -1) around the image.

    Returns
    -------
    pairs : (K, 2) int64
        (birth pixel, death pixel) of the H0 pairs of this pass.
    counts : dict
        ``jump_rounds``, ``basins``, ``basin_edges``, ``boruvka_rounds``, ``forest_edges``,
        ``halving_levels``.
    """
    height, width = image.shape
    n = height * width
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(image.ravel(), kind="stable")] = np.arange(n)
    key = np.append(n - 1 - rank if dual else rank, -1)  # node n: the frame
    neighbours = []
    for k in range(connectivity):
        u = _neighbours(height, width, k)
        neighbours.append(np.where(u < 0, n if dual else -1, u))
    # Steepest descent and synchronous pointer jumping.
    pointer = np.arange(n + 1)
    best = key[:n].copy()
    for u in neighbours:
        ok = (u >= 0) & (key[u] < best)
        pointer[:n][ok], best[ok] = u[ok], key[u][ok]
    jump_rounds = 0
    while not np.array_equal(pointer[pointer], pointer):
        pointer = pointer[pointer]
        jump_rounds += 1
    label = pointer
    # Basin-graph edges: one per (weight pixel, other basin).
    v_all = np.arange(n)
    ev, ek, eb = [], [], []
    for k, u in enumerate(neighbours):
        ok = (u >= 0) & (key[np.maximum(u, 0)] < key[:n]) & (label[np.maximum(u, 0)] != label[:n])
        ev.append(v_all[ok]), ek.append(np.full(ok.sum(), k)), eb.append(label[u[ok]])
    ev, ek, eb = (np.concatenate(x) for x in (ev, ek, eb))
    _, first = np.unique(ev * (n + 1) + eb, return_index=True)
    ev, ek, eb = ev[first], ek[first], eb[first]
    ea = label[ev]
    weight = key[ev] * 8 + ek
    # Boruvka rounds.
    comp = np.arange(n + 1)
    forest = []
    rounds = 0
    a, b, w = ea, eb, weight
    while True:
        while not np.array_equal(comp[comp], comp):
            comp = comp[comp]
        ra, rb = comp[a], comp[b]
        live = ra != rb
        a, b, w, ra, rb = a[live], b[live], w[live], ra[live], rb[live]
        if a.size == 0:
            break
        rounds += 1
        best_edge = np.full(n + 1, np.iinfo(np.int64).max)
        np.minimum.at(best_edge, ra, w)
        np.minimum.at(best_edge, rb, w)
        mutual = (best_edge[ra] == w) & (best_edge[rb] == w)
        hook_a = (best_edge[ra] == w) & ~(mutual & (ra < rb))
        hook_b = (best_edge[rb] == w) & ~(mutual & (rb < ra)) & ~hook_a
        comp[ra[hook_a]] = rb[hook_a]
        comp[rb[hook_b]] = ra[hook_b]
        forest.append(w[hook_a | hook_b])
    forest_w = np.sort(np.concatenate(forest)) if forest else np.zeros(0, np.int64)
    pairs, levels = _halving(forest_w, key, label, neighbours, n)
    counts = {
        "jump_rounds": jump_rounds,
        "basins": int(np.unique(label[:n]).size),
        "basin_edges": int(weight.size),
        "boruvka_rounds": rounds,
        "forest_edges": int(forest_w.size),
        "halving_levels": levels,
    }
    return pairs, counts


def _halving(forest_w, key, label, neighbours, n):
    """Recursive halving over the bits of the sorted forest edge index (as the GPU kernel)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = forest_w.size
    k = forest_w % 8
    by_key = np.argsort(key[:n])
    v = by_key[np.searchsorted(key[:n][by_key], forest_w // 8)]
    u = np.array([neighbours[kk][vv] for vv, kk in zip(v, k)], dtype=np.int64)
    a, b = label[v].astype(np.int64), label[u].astype(np.int64)
    birth = {int(x): int(key[x]) for x in np.concatenate([a, b])}
    levels = 0 if m <= 1 else int(m - 1).bit_length()
    t = np.arange(m)
    fresh_base = n + 1
    for level in range(levels):
        bit = 1 << (levels - 1 - level)
        light = (t & bit) == 0
        nodes, inverse = np.unique(np.concatenate([a[light], b[light]]), return_inverse=True)
        if nodes.size:
            la, lb = inverse[: light.sum()], inverse[light.sum():]
            graph = coo_matrix((np.ones(la.size), (la, lb)), shape=(nodes.size,) * 2)
            _, comp = connected_components(graph, directed=False)
            heaviest = np.full(comp.max() + 1, -1)
            np.maximum.at(heaviest, comp[la], t[light])
            oldest = np.full(comp.max() + 1, np.iinfo(np.int64).max)
            node_birth = np.array([birth[int(x)] for x in nodes])
            np.minimum.at(oldest, comp, node_birth)
            rename = {int(x): (fresh_base + int(heaviest[c]), int(oldest[c]))
                      for x, c in zip(nodes, comp)}
            for ends in (a, b):
                for i in np.flatnonzero(~light):
                    if int(ends[i]) in rename:
                        name, value = rename[int(ends[i])]
                        ends[i] = name
                        birth[name] = value
    younger = np.maximum([birth[int(x)] for x in a], [birth[int(x)] for x in b]) if m else []
    order_pixel = np.argsort(key[:n])  # pixel of each key value
    younger_pixel = order_pixel[np.searchsorted(key[:n][order_pixel], younger)] if m else []
    pairs = np.stack([np.asarray(younger_pixel, np.int64), v]).T if m else np.zeros((0, 2),
                                                                                   np.int64)
    return pairs, levels


def model_image_pairs(image: np.ndarray, construction: str = "T") -> list:
    """Sorted (dim, birth_index, death_index) of an image by the model (H0 essential incl.)."""
    conn = 8 if construction == "T" else 4
    h0, _ = model_pass(image, conn, dual=False)
    h1, _ = model_pass(image, 12 - conn, dual=True)
    first = int(np.lexsort((np.arange(image.size), image.ravel()))[0])
    out = [(0, first, -1)] + [(0, int(b), int(d)) for b, d in h0]
    out += [(1, int(d), int(b)) for b, d in h1]
    return sorted(out)


def model_counts(image: np.ndarray, construction: str = "T") -> Dict[str, Dict]:
    """Counts of both passes of one image: ``{"H0": {...}, "H1": {...}}``."""
    conn = 8 if construction == "T" else 4
    return {"H0": model_pass(image, conn, False)[1], "H1": model_pass(image, 12 - conn, True)[1]}


def _main() -> None:
    from scipy.ndimage import gaussian_filter
    from skimage import data, filters

    rng = np.random.default_rng(0)
    noise = rng.random((512, 512))
    green = data.retina()[:, :, 1].astype(np.float64) / 255.0
    vessels = filters.sato(green, sigmas=(1, 2, 3), black_ridges=True)[400:912, 400:912]
    inputs = {"uniform noise": noise, "blurred s=1": gaussian_filter(noise, 1.0),
              "blurred s=4": gaussian_filter(noise, 4.0), "retina vesselness": vessels}
    keys = ("jump_rounds", "basins", "basin_edges", "boruvka_rounds", "forest_edges",
            "halving_levels")
    print(f"{'input (512x512, T)':<26}" + "".join(f"{k:>15}" for k in keys))
    for name, image in inputs.items():
        for dim, counts in model_counts(image).items():
            print(f"{name + ' ' + dim:<26}" + "".join(f"{counts[k]:>15}" for k in keys))


if __name__ == "__main__":
    _main()
