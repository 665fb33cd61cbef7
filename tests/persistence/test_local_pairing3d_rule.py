"""The 3D per-voxel rule against an independent oracle of the lower-link homology.

For a mask, the oracle builds the part ``A`` of the voxel's boundary shared with earlier
neighbours from the geometry of unit boxes (not from the rule's tables), computes its reduced
Betti numbers from its components (union-find over its corners along its edges) and its
Euler characteristic, and expects ``b~_{k-1}(A)`` critical cells of dimension ``k`` (a
perfect gradient). The same checker verifies ownership, the pairs, the order ``seq`` and the
acyclicity of the gradient. An end-to-end check runs a plain boundary-matrix reduction over
the whole complex in the order "voxel rank, then seq" and compares with gudhi.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from numba import njit, prange

from satloss_gpu.kernels.common import local_pairing3d as rule

# -- independent geometry ------------------------------------------------------------------
# Local cell j <-> direction s, j = (s0+1)*9 + (s1+1)*3 + (s2+1); its box along axis i is
# [0, 1] (s_i = 0), [0, 0] (s_i = -1) or [1, 1] (s_i = +1) in voxel-local coordinates.
_DIRS = list(itertools.product((-1, 0, 1), repeat=3))
_LO = np.array([[0 if c <= 0 else 1 for c in s] for s in _DIRS], dtype=np.int64)
_HI = np.array([[1 if c >= 0 else 0 for c in s] for s in _DIRS], dtype=np.int64)
_DIM = (_HI - _LO).sum(axis=1)
# Neighbour bit k: the k-th nonzero direction in raster order; its cube is [t_i, t_i + 1].
_NEIGHBOURS = np.array([t for t in _DIRS if t != (0, 0, 0)], dtype=np.int64)


def _box_in(lo_a, hi_a, lo_b, hi_b) -> bool:
    return bool(np.all(lo_a >= lo_b) and np.all(hi_a <= hi_b))


# _SHARES[k, j]: neighbour k's closed cube contains cell j.
_SHARES = np.array([[_box_in(_LO[j], _HI[j], t, t + 1) for j in range(27)]
                    for t in _NEIGHBOURS], dtype=np.bool_)
# _FACE[a, b]: cell a is a proper face of cell b (box inclusion).
_FACE = np.array([[a != b and _box_in(_LO[a], _HI[a], _LO[b], _HI[b]) for b in range(27)]
                  for a in range(27)], dtype=np.bool_)
_CORNERS = np.array([j for j in range(27) if _DIM[j] == 0], dtype=np.int64)
# Edges as (cell, corner index 1, corner index 2) into _CORNERS.
_EDGES = np.array([[e] + [int(np.flatnonzero(_CORNERS == c)[0]) for c in range(27)
                          if _FACE[c, e] and _DIM[c] == 0]
                   for e in range(27) if _DIM[e] == 1], dtype=np.int64)

# The vertex construction's view (the duality the rule is written in): the owned cells other
# than the cube, read as cells of the octahedron around a vertex (a face = an octahedron
# vertex, an edge = an octahedron edge between the two faces along its nonzero axes, a corner =
# a triangle), form the lower link of that vertex for the complemented mask.
_OCT_VERTICES = np.array([j for j in range(27) if _DIM[j] == 2], dtype=np.int64)
_OCT_EDGES = np.array(
    [[e] + [int(np.flatnonzero(_OCT_VERTICES == v)[0]) for v in _OCT_VERTICES
            if sum(abs(c) for c in _DIRS[v]) == 1
            and all(_DIRS[v][i] in (0, _DIRS[e][i]) for i in range(3))]
     for e in range(27) if _DIM[e] == 1], dtype=np.int64)

ERRORS = {
    1: "ownership differs from the geometry",
    2: "a pair is not a face/coface pair of owned cells one dimension apart",
    3: "critical counts differ from the lower-link homology (not perfect)",
    4: "returned count differs from the critical cells",
    5: "seq is not a permutation of the owned cells",
    6: "a face comes after its coface in seq",
    7: "a pair is not consecutive, or another face of its coface comes later",
    8: "the gradient has a cycle",
    9: "critical counts differ from the dual lower link (vertex construction)",
}


@njit(cache=True)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True)
def _expected_counts(mask, shares, dim, corners, edges, out):
    """Reduced Betti numbers of A shifted by one: out[k] = b~_{k-1}(A)."""
    in_a = np.zeros(27, dtype=np.bool_)
    for k in range(26):
        if (mask >> k) & 1:
            for j in range(27):
                if shares[k, j]:
                    in_a[j] = True
    out[:] = 0
    cells = 0
    chi = 0
    for j in range(27):
        if in_a[j]:
            cells += 1
            chi += 1 if dim[j] % 2 == 0 else -1
    if cells == 0:
        out[0] = 1
        return in_a
    parent = np.arange(8)
    for e in range(edges.shape[0]):
        if in_a[edges[e, 0]]:
            ra = _find(parent, edges[e, 1])
            rb = _find(parent, edges[e, 2])
            parent[ra] = rb
    b0 = 0
    for c in range(8):
        if in_a[corners[c]] and _find(parent, c) == c:
            b0 += 1
    b2 = 1 if cells == 26 else 0
    out[1] = b0 - 1
    out[2] = b0 + b2 - chi
    out[3] = b2
    return in_a


@njit(cache=True)
def _dual_expected_counts(owned, dim, oct_vertices, oct_edges, out):
    """out[3 - k] = b~_{k-1} of the octahedral lower link made of the owned cells."""
    out[:] = 0
    cells = 0
    chi = 0
    for j in range(27):
        if owned[j] and dim[j] < 3:
            cells += 1
            chi += 1 if dim[j] % 2 == 0 else -1  # octahedron dimension 2 - dim keeps parity
    if cells == 0:
        out[3] = 1
        return
    parent = np.arange(6)
    for e in range(oct_edges.shape[0]):
        if owned[oct_edges[e, 0]]:
            ra = _find(parent, oct_edges[e, 1])
            rb = _find(parent, oct_edges[e, 2])
            parent[ra] = rb
    b0 = 0
    for v in range(6):
        if owned[oct_vertices[v]] and _find(parent, v) == v:
            b0 += 1
    b2 = 1 if cells == 26 else 0
    out[2] = b0 - 1
    out[1] = b0 + b2 - chi
    out[0] = b2


@njit(cache=True)
def _check_mask(mask, partner, seq, expected, shares, face, dim, corners, edges):
    """0 when the rule's output for ``mask`` passes every check, else an ERRORS code."""
    n_critical = rule.voxel_rule(mask, partner, seq)
    return _check_output(mask, partner, seq, n_critical, expected, shares, face, dim, corners,
                         edges)


@njit(cache=True)
def _check_output(mask, partner, seq, n_critical, expected, shares, face, dim, corners, edges):
    """0 when ``partner``, ``seq`` and ``n_critical`` are a valid perfect rule output for
    ``mask``, else an ERRORS code."""
    in_a = _expected_counts(mask, shares, dim, corners, edges, expected)
    owned = ~in_a
    n_owned = 0
    counts = np.zeros(4, dtype=np.int64)
    for j in range(27):
        if (partner[j] == -2) == owned[j]:
            return 1
        if owned[j]:
            n_owned += 1
        if partner[j] == -1:
            counts[dim[j]] += 1
        elif partner[j] >= 0:
            q = partner[j]
            if partner[q] != j or not owned[q] or abs(dim[q] - dim[j]) != 1:
                return 2
            if not (face[j, q] or face[q, j]):
                return 2
    for k in range(4):
        if counts[k] != expected[k]:
            return 3
    dual = np.empty(4, dtype=np.int64)
    _dual_expected_counts(owned, dim, _OCT_VERTICES, _OCT_EDGES, dual)
    for k in range(4):
        if counts[k] != dual[k]:
            return 9
    if counts.sum() != n_critical:
        return 4
    seen = np.zeros(27, dtype=np.bool_)
    for j in range(27):
        if owned[j]:
            if seq[j] < 0 or seq[j] >= n_owned or seen[seq[j]]:
                return 5
            seen[seq[j]] = True
        elif seq[j] != -1:
            return 5
    for a in range(27):
        for b in range(27):
            if owned[a] and owned[b] and face[a, b] and seq[a] >= seq[b]:
                return 6
    for a in range(27):
        b = partner[a]
        if b >= 0 and dim[b] == dim[a] + 1:
            if seq[b] != seq[a] + 1:
                return 7
            for c in range(27):
                if c != a and owned[c] and face[c, b] and seq[c] >= seq[a]:
                    return 7
    # Kahn's algorithm on the modified Hasse diagram of the owned cells: every
    # (facet c, cell b) is an arrow b -> c, reversed when (c, b) is a gradient pair.
    indegree = np.zeros(27, dtype=np.int64)
    for c in range(27):
        for b in range(27):
            if owned[c] and owned[b] and face[c, b] and dim[b] == dim[c] + 1:
                if partner[c] == b:
                    indegree[b] += 1
                else:
                    indegree[c] += 1
    stack = np.empty(27, dtype=np.int64)
    top = 0
    for j in range(27):
        if owned[j] and indegree[j] == 0:
            stack[top] = j
            top += 1
    removed = 0
    while top > 0:
        top -= 1
        u = stack[top]
        removed += 1
        for v in range(27):
            if not (owned[v] and abs(dim[v] - dim[u]) == 1):
                continue
            arrow = False
            if dim[v] == dim[u] - 1 and face[v, u] and partner[v] != u:
                arrow = True
            if dim[v] == dim[u] + 1 and face[u, v] and partner[u] == v:
                arrow = True
            if arrow:
                indegree[v] -= 1
                if indegree[v] == 0:
                    stack[top] = v
                    top += 1
    if removed != n_owned:
        return 8
    return 0


@njit(cache=True)
def _check_masks(masks, shares, face, dim, corners, edges):
    """Error code per mask (0 = all checks pass)."""
    codes = np.zeros(masks.size, dtype=np.int8)
    partner = np.empty(27, dtype=np.int8)
    seq = np.empty(27, dtype=np.int8)
    expected = np.empty(4, dtype=np.int64)
    for i in range(masks.size):
        codes[i] = _check_mask(masks[i], partner, seq, expected, shares, face, dim, corners,
                               edges)
    return codes


@njit(cache=True, parallel=True)
def _check_range(start, stop, shares, face, dim, corners, edges):
    """Error counts per code and the first failing mask over masks start..stop-1."""
    chunk = 1 << 16
    n_chunks = (stop - start + chunk - 1) // chunk
    errors = np.zeros((n_chunks, 10), dtype=np.int64)
    first_bad = np.full(n_chunks, -1, dtype=np.int64)
    for c in prange(n_chunks):
        partner = np.empty(27, dtype=np.int8)
        seq = np.empty(27, dtype=np.int8)
        expected = np.empty(4, dtype=np.int64)
        for mask in range(start + c * chunk, min(stop, start + (c + 1) * chunk)):
            code = _check_mask(mask, partner, seq, expected, shares, face, dim, corners, edges)
            if code != 0:
                errors[c, code] += 1
                if first_bad[c] < 0:
                    first_bad[c] = mask
    return errors.sum(axis=0), first_bad


def check_masks(masks: np.ndarray) -> None:
    """Assert that the rule passes every check on every mask of ``masks``."""
    masks = np.ascontiguousarray(masks, dtype=np.int64)
    codes = _check_masks(masks, _SHARES, _FACE, _DIM, _CORNERS, _EDGES)
    bad = np.flatnonzero(codes)
    assert bad.size == 0, (
        f"{bad.size} masks fail; first {int(masks[bad[0]]):#09x}: {ERRORS[int(codes[bad[0]])]}")


def _masks_with_popcount(counts) -> np.ndarray:
    out = []
    for count in counts:
        low = count if count <= 13 else 26 - count
        for bits in itertools.combinations(range(26), low):
            mask = sum(1 << b for b in bits)
            out.append(mask if count <= 13 else (1 << 26) - 1 - mask)
    return np.array(out, dtype=np.int64)


def _masks_of_fields(rng: np.random.Generator, n: int) -> np.ndarray:
    """Masks of smooth local fields: quadratic forms plus a linear part, random ties broken
    by neighbour index like the tie rule (earlier when the value is smaller, or equal and
    the neighbour's flat index is smaller, i.e. bit k < 13)."""
    t = _NEIGHBOURS.astype(np.float64)
    masks = np.empty(n, dtype=np.int64)
    weights = 1 << np.arange(26, dtype=np.int64)
    for i in range(n):
        q = rng.normal(size=(3, 3)) * rng.choice([0.0, 0.3, 1.0])
        w = rng.normal(size=3)
        values = np.einsum("ki,ij,kj->k", t, q, t) + t @ w
        values = np.round(values, int(rng.integers(0, 3)))
        earlier = (values < 0) | ((values == 0) & (np.arange(26) < 13))
        masks[i] = int((earlier * weights).sum())
    return masks


def _masks_of_volume(volume: np.ndarray) -> np.ndarray:
    """Masks of the interior voxels of a volume under the (value, C-order index) rule."""
    depth, height, width = volume.shape
    index = np.arange(volume.size).reshape(volume.shape)
    inner = (slice(1, -1),) * 3
    masks = np.zeros((depth - 2, height - 2, width - 2), dtype=np.int64)
    for k, (dz, dy, dx) in enumerate(_NEIGHBOURS):
        shifted = (slice(1 + dz, depth - 1 + dz), slice(1 + dy, height - 1 + dy),
                   slice(1 + dx, width - 1 + dx))
        earlier = (volume[shifted] < volume[inner]) | (
            (volume[shifted] == volume[inner]) & (index[shifted] < index[inner]))
        masks |= earlier.astype(np.int64) << k
    return masks.ravel()


# -- tests -------------------------------------------------------------------------------
def test_tables_follow_the_geometry():
    for j in range(27):
        assert tuple(rule.LOCAL_OFFSETS[j]) == _DIRS[j]
        assert rule.LOCAL_DIM[j] == _DIM[j]
        facets = sum(1 << a for a in range(27) if _FACE[a, j] and _DIM[a] == _DIM[j] - 1)
        cofacets = sum(1 << b for b in range(27) if _FACE[j, b] and _DIM[b] == _DIM[j] + 1)
        shared = sum(1 << k for k in range(26) if _SHARES[k, j])
        assert int(rule.FACE_BITS[j]) == facets
        assert int(rule.COFACE_BITS[j]) == cofacets
        assert int(rule.SHARED_NEIGHBOUR_BITS[j]) == shared
    for k in range(26):
        assert tuple(rule.NEIGHBOUR_OFFSETS[k]) == tuple(_NEIGHBOURS[k])
    assert [int(rule.DIM_BITS[d]).bit_count() for d in range(4)] == [8, 12, 6, 1]
    assert rule.CUBE == 13 and rule.N_LOCAL == 27


def test_owned_cells_match_the_geometry():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 1 << 26, size=20_000)
    bits = (masks[:, None] >> np.arange(26)) & 1
    shared_earlier = (bits @ _SHARES.astype(np.int64)) > 0
    expected = ((~shared_earlier).astype(np.int64) << np.arange(27)).sum(axis=1)
    assert [rule.owned_cells(int(m)) for m in masks] == expected.tolist()


def test_extreme_masks():
    partner = np.empty(27, dtype=np.int32)
    seq = np.empty(27, dtype=np.int32)
    # A local minimum owns the whole cube: one critical corner, everything else paired.
    assert rule.voxel_rule(0, partner, seq) == 1
    assert rule.critical_counts(0) == (1, 0, 0, 0)
    assert sorted(seq) == list(range(27)) and seq[rule.CUBE] == 26
    # A local maximum owns only the cube, which is critical.
    assert rule.voxel_rule(rule.MASK26_ALL, partner, seq) == 1
    assert rule.critical_counts(rule.MASK26_ALL) == (0, 0, 0, 1)
    assert partner[rule.CUBE] == -1 and seq[rule.CUBE] == 0
    # Two opposite earlier corners: A has two components, one critical edge.
    assert rule.critical_counts((1 << 0) | (1 << 25)) == (0, 1, 0, 0)
    # The 8 neighbours around the z axis: A is the band of the 4 side faces, an annulus
    # (one component, one loop): one critical face.
    ring = sum(1 << k for k in range(26) if _NEIGHBOURS[k][0] == 0)
    assert rule.critical_counts(ring) == (0, 0, 1, 0)
    # The 6 face neighbours earlier: A is the whole boundary, the cube is critical.
    faces = sum(1 << k for k in range(26) if np.abs(_NEIGHBOURS[k]).sum() == 1)
    assert rule.critical_counts(faces) == (0, 0, 0, 1)


def test_the_two_oracles_on_known_links():
    """Both oracles on masks whose shared boundary A is known by hand."""
    ring = sum(1 << k for k in range(26) if _NEIGHBOURS[k][0] == 0)  # A: an annulus
    cases = {0: [1, 0, 0, 0], rule.MASK26_ALL: [0, 0, 0, 1], 0b101: [0, 1, 0, 0],
             ring: [0, 0, 1, 0]}
    out = np.empty(4, dtype=np.int64)
    for mask, expected in cases.items():
        in_a = _expected_counts(mask, _SHARES, _DIM, _CORNERS, _EDGES, out)
        assert list(out) == expected, hex(mask)
        _dual_expected_counts(~in_a, _DIM, _OCT_VERTICES, _OCT_EDGES, out)
        assert list(out) == expected, hex(mask)


@pytest.mark.parametrize("counts", [(0, 1, 2), (24, 25, 26), (3, 23)])
def test_all_masks_with_few_or_many_bits(counts):
    check_masks(_masks_with_popcount(counts))


def test_random_masks():
    rng = np.random.default_rng(12345)
    uniform = rng.integers(0, 1 << 26, size=100_000)
    # Noise voxels: with the centre at quantile u, each neighbour is earlier with prob. u.
    u = rng.random(100_000)[:, None]
    bits = rng.random((100_000, 26)) < u
    skewed = (bits.astype(np.int64) << np.arange(26, dtype=np.int64)).sum(axis=1)
    check_masks(np.concatenate([uniform, skewed]))


def test_structured_masks():
    rng = np.random.default_rng(7)
    noise = rng.random((24, 24, 24))
    ties = rng.integers(0, 2, size=(16, 16, 16)).astype(np.float64)
    z, y, x = np.mgrid[:20, :20, :20] / 3.0
    smooth = np.sin(z) * np.cos(y) + np.sin(x + z)
    check_masks(np.concatenate([_masks_of_fields(rng, 3000), _masks_of_volume(noise),
                                _masks_of_volume(ties), _masks_of_volume(smooth)]))


def _corrupted_codes(mask: int) -> dict[str, int]:
    """Checker codes of the rule's output for ``mask`` after deliberate corruptions."""
    partner = np.empty(27, dtype=np.int8)
    seq = np.empty(27, dtype=np.int8)
    expected = np.empty(4, dtype=np.int64)
    n = rule.voxel_rule(mask, partner, seq)
    args = (expected, _SHARES, _FACE, _DIM, _CORNERS, _EDGES)
    codes = {"intact": _check_output(mask, partner, seq, n, *args)}
    a = int(np.flatnonzero((partner >= 0) & (_DIM < 3))[0])
    b = int(partner[a])
    broken, order = partner.copy(), seq.copy()
    broken[a] = broken[b] = -1
    codes["pair split"] = _check_output(mask, broken, seq, n + 2, *args)
    order[a], order[b] = seq[b], seq[a]
    codes["pair order swapped"] = _check_output(mask, partner, order, n, *args)
    codes["count"] = _check_output(mask, partner, seq, n + 1, *args)
    return codes


def test_checker_detects_a_broken_rule():
    """The checker can fail: corrupted outputs of the rule are caught."""
    for mask in (0, 0b101, 12345):
        codes = _corrupted_codes(mask)
        assert codes.pop("intact") == 0
        assert all(code != 0 for code in codes.values()), codes


@pytest.mark.slow
def test_all_masks_exhaustively():
    """Every one of the 2**26 masks, both oracles (about 70 s of CPU time plus 15 s of
    compilation, split over the cores by prange)."""
    errors, first_bad = _check_range(0, 1 << 26, _SHARES, _FACE, _DIM, _CORNERS, _EDGES)
    bad = first_bad[first_bad >= 0]
    assert errors.sum() == 0, (
        {ERRORS[c]: int(errors[c]) for c in range(1, 10) if errors[c]}, hex(int(bad[0])))


# -- end to end: the rule's filtration of a whole volume against gudhi ---------------------
def _rule_filtration(volume: np.ndarray, outside_earlier: bool, ranks: np.ndarray):
    """Owner voxel, key (voxel rank, seq), dimension and critical flag of every owned cell of
    the doubled grid (cell of local index j of voxel p at 2p + 1 + direction)."""
    depth, height, width = volume.shape
    partner = np.empty(27, dtype=np.int32)
    seq = np.empty(27, dtype=np.int32)
    cells = {}
    for p, (z, y, x) in enumerate(itertools.product(range(depth), range(height), range(width))):
        mask = 0
        for k, (dz, dy, dx) in enumerate(_NEIGHBOURS):
            zz, yy, xx = z + dz, y + dy, x + dx
            if 0 <= zz < depth and 0 <= yy < height and 0 <= xx < width:
                earlier = ranks[(zz * height + yy) * width + xx] < ranks[p]
            else:
                earlier = outside_earlier
            mask |= int(earlier) << k
        rule.voxel_rule(mask, partner, seq)
        for j in range(27):
            if partner[j] != -2:
                cell = (2 * z + 1 + _DIRS[j][0], 2 * y + 1 + _DIRS[j][1], 2 * x + 1 + _DIRS[j][2])
                assert cell not in cells, "a cell owned by two voxels"
                cells[cell] = (p, (ranks[p], int(seq[j])), int(_DIM[j]), partner[j] == -1)
    return cells


def _reduce(cells: dict) -> tuple[list, list]:
    """Z/2 boundary-matrix reduction of the owned cells in key order (faces that nobody owns
    are dropped: the complex relative to them). Returns finite pairs (dim, birth voxel, death
    voxel) of nonzero persistence and the unpaired cells as (dim, voxel)."""
    order = sorted(cells, key=lambda c: cells[c][1])
    position = {c: i for i, c in enumerate(order)}
    low_owner: dict[int, int] = {}
    columns: dict[int, set] = {}
    pairs, births = [], set()
    for i, cell in enumerate(order):
        column = set()
        for axis in range(3):
            if cell[axis] % 2 == 1:  # the cell spans this axis
                for step in (-1, 1):
                    face = list(cell)
                    face[axis] += step
                    if tuple(face) in position:
                        column ^= {position[tuple(face)]}
        while column and max(column) in low_owner:
            column ^= columns[low_owner[max(column)]]
        columns[i] = column
        if column:
            low = max(column)
            low_owner[low] = i
            births.discard(low)
            b, d = cells[order[low]], cells[cell]
            assert d[2] == b[2] + 1
            if b[0] != d[0]:
                pairs.append((b[2], b[0], d[0]))
        else:
            births.add(i)
    essential = [(cells[order[i]][2], cells[order[i]][0]) for i in births]
    return pairs, essential


def _gudhi_pairs(ranks_volume: np.ndarray, construction: str) -> list:
    gudhi = pytest.importorskip("gudhi")
    if construction == "T":
        complex_ = gudhi.CubicalComplex(top_dimensional_cells=ranks_volume)
    else:
        complex_ = gudhi.CubicalComplex(vertices=ranks_volume)
    voxel_of_rank = np.argsort(ranks_volume.ravel())
    out = []
    for dim, (birth, death) in complex_.persistence(homology_coeff_field=2,
                                                    min_persistence=-1):
        if death == birth:
            continue
        dying = -1 if np.isinf(death) else int(voxel_of_rank[int(death)])
        out.append((dim, int(voxel_of_rank[int(birth)]), dying))
    return sorted(out)


def _strict_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0 .. N-1 of the flat voxels in the (value, C-order index) order."""
    order = np.lexsort((np.arange(values.size), values.ravel()))
    ranks = np.empty(values.size, dtype=np.int64)
    ranks[order] = np.arange(values.size)
    return ranks


def _rule_pairs(volume: np.ndarray, construction: str) -> list:
    """Voxel pairs of the rule's filtration; checks perfectness (critical cells = pair ends)."""
    ranks = _strict_ranks(volume)
    if construction == "T":
        cells = _rule_filtration(volume, False, ranks)
    else:  # the T machinery on the reversed order, the outside earlier
        cells = _rule_filtration(volume, True, volume.size - 1 - ranks)
    pairs, essential = _reduce(cells)
    critical = sorted((dim, p) for p, _, dim, is_critical in cells.values() if is_critical)
    ends = sorted([(d, b) for d, b, _ in pairs] + [(d + 1, e) for d, _, e in pairs]
                  + list(essential))
    assert critical == ends, "the gradient is not perfect on the whole volume"
    if construction == "T":
        return sorted(pairs + [(d, b, -1) for d, b in essential])
    assert [d for d, _ in essential] == [3]
    return sorted([(2 - d, e, b) for d, b, e in pairs] + [(0, essential[0][1], -1)])


def _volumes():
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[:5, :5, :5]
    return {
        "noise 3x4x5": rng.random((3, 4, 5)),
        "noise 4x4x4": rng.random((4, 4, 4)),
        "noise 6x5x7": rng.random((6, 5, 7)),
        "binary 6x6x6": (rng.random((6, 6, 6)) < 0.5).astype(np.float64),
        "binary 4x3x4": rng.integers(0, 2, size=(4, 3, 4)).astype(np.float64),
        "levels 4x4x3": rng.integers(0, 4, size=(4, 4, 3)).astype(np.float64),
        "constant 2x3x3": np.zeros((2, 3, 3)),
        "smooth 5x5x5": np.sin(z / 1.5) + np.cos(y / 1.3) * np.sin(x / 1.7),
        "slice 1x4x5": rng.random((1, 4, 5)),
        "rod 1x1x6": rng.random((1, 1, 6)),
        "rod 5x1x1": rng.random((5, 1, 1)),
        "one voxel": np.zeros((1, 1, 1)),
    }


@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("name", list(_volumes()))
def test_rule_filtration_matches_gudhi(name, construction):
    volume = _volumes()[name]
    ranks = _strict_ranks(volume).reshape(volume.shape).astype(np.float64)
    assert _rule_pairs(volume, construction) == _gudhi_pairs(ranks, construction)
