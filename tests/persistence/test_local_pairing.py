"""The local-pairing core: the per-pixel rule, and the CPU core against gudhi and the old core."""
import numpy as np
import pytest

from satloss_gpu.kernels.common import local_pairing as rule

# Cells of a pixel: corner c = ("corner", c), side s = ("side", s).
CORNER_SIDES = {0: (0, 1), 1: (0, 2), 2: (3, 1), 3: (3, 2)}  # (horizontal side, vertical side)
SIDE_ENDS = {0: (0, 1), 1: (0, 2), 2: (1, 3), 3: (2, 3)}
SIDE_NEIGHBOUR_BIT = {0: 1, 1: 3, 2: 4, 3: 6}
CORNER_NEIGHBOUR_BITS = {0: (0, 1, 3), 1: (1, 2, 4), 2: (3, 5, 6), 3: (4, 6, 7)}
RING = [("corner", 0), ("side", 0), ("corner", 1), ("side", 2),
        ("corner", 3), ("side", 3), ("corner", 2), ("side", 1)]


def owned_cells(mask: int) -> set:
    """Owned cells of a pixel, straight from the definition (the earliest square owns)."""
    cells = set()
    for side, bit in SIDE_NEIGHBOUR_BIT.items():
        if not (mask >> bit) & 1:
            cells.add(("side", side))
    for corner, bits in CORNER_NEIGHBOUR_BITS.items():
        if not any((mask >> b) & 1 for b in bits):
            cells.add(("corner", corner))
    return cells


def not_owned_arcs(owned: set) -> int:
    """Number of connected arcs of the not-owned part of the pixel's boundary cycle."""
    flags = [cell not in owned for cell in RING]
    if all(flags):
        return 1
    return sum(1 for p in range(8) if flags[p] and not flags[p - 1])


@pytest.mark.parametrize("mask", range(256))
def test_rule_pairs_every_owned_cell_once_and_leaves_the_homology_critical(mask):
    code = int(rule.RULE_TABLE[mask])
    assert code < 1 << 15
    owned = owned_cells(mask)
    used = {}

    def use(cell, how):
        assert cell in owned, (cell, how)
        assert cell not in used, (cell, used[cell], how)
        used[cell] = how

    parent = {}
    for corner in range(4):
        kind = rule.corner_kind(code, corner)
        if kind == rule.CORNER_NOT_OWNED:
            assert ("corner", corner) not in owned
            continue
        use(("corner", corner), "corner")
        if kind == rule.CORNER_CRITICAL:
            continue
        side = CORNER_SIDES[corner][0 if kind == rule.CORNER_ALONG_ROW else 1]
        use(("side", side), "paired with corner")
        a, b = SIDE_ENDS[side]
        parent[corner] = b if a == corner else a
    for side in range(4):
        if rule.side_is_critical(code, side):
            use(("side", side), "critical")
    square = rule.square_kind(code)
    if square != rule.SQUARE_CRITICAL:
        assert 0 <= square < 4
        use(("side", square), "paired with square")
    assert set(used) == owned
    # Gradient paths inside the pixel end (no cycle), at a critical or a not-owned corner.
    for corner in parent:
        seen = set()
        while corner in parent:
            assert corner not in seen
            seen.add(corner)
            corner = parent[corner]
    # Critical cells: the relative homology of (closed square, not-owned boundary).
    n_critical_corners = sum(rule.corner_kind(code, c) == rule.CORNER_CRITICAL for c in range(4))
    n_critical_sides = rule.critical_side_count(code)
    assert n_critical_sides == sum(rule.side_is_critical(code, s) for s in range(4))
    if len(owned) == 8:
        assert (n_critical_corners, n_critical_sides, square != 4) == (1, 0, True)
    elif not any(cell[0] == "side" for cell in owned):
        assert (n_critical_corners, n_critical_sides, square) == (0, 0, rule.SQUARE_CRITICAL)
    else:
        arcs = not_owned_arcs(owned)
        assert (n_critical_corners, n_critical_sides, square != 4) == (0, arcs - 1, True)


def test_neighbour_mask_follows_the_tie_rule_and_the_outside_sentinel():
    vals = np.array([[1.0, 2.0, 2.0],
                     [0.0, 2.0, 3.0],
                     [2.0, 5.0, 2.0]]).ravel()
    # Centre (1, 1) = 2.0 at index 4: earlier are 1.0, 2.0 at 1, 2.0 at 2, 0.0 (indices 0..3).
    assert rule.neighbour_mask(vals, 1, False, 1, 1, 3, 3) == 0b00001111
    # Reversed order (vals negated, sign -1): earlier are -2 at 6, 8, -3 at 5, -5 at 7.
    assert rule.neighbour_mask(-vals, -1, False, 1, 1, 3, 3) == 0b11110000
    # Corner pixel (0, 0): the 5 outside neighbours follow the sentinel.
    outside = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5)
    assert rule.neighbour_mask(vals, 1, True, 0, 0, 3, 3) == outside | (1 << 6)
    assert rule.neighbour_mask(vals, 1, False, 0, 0, 3, 3) == 1 << 6


def test_geometry_helpers():
    width = 5
    assert rule.corner_id(2, 3, 0, width) == 2 * 6 + 3
    assert rule.corner_id(2, 3, 3, width) == 3 * 6 + 4
    assert rule.side_corners(2, 3, 0, width) == (15, 16)
    assert rule.side_corners(2, 3, 1, width) == (15, 21)
    assert rule.side_corners(2, 3, 2, width) == (16, 22)
    assert rule.side_corners(2, 3, 3, width) == (21, 22)
    assert rule.side_neighbour(0, 3, 0, 4, width) == -1
    assert rule.side_neighbour(2, 3, 0, 4, width) == 8
    assert rule.side_neighbour(2, 4, 2, 4, width) == -1
    assert rule.side_neighbour(3, 0, 3, 4, width) == -1
    for corner in range(4):
        for kind, side_slot in ((rule.CORNER_ALONG_ROW, 0), (rule.CORNER_ALONG_COLUMN, 1)):
            side = CORNER_SIDES[corner][side_slot]
            ends = rule.side_corners(2, 3, side, width)
            here = rule.corner_id(2, 3, corner, width)
            target = here + rule.corner_parent_offset(kind, corner, width)
            assert sorted(ends) == sorted((here, target))
        assert rule.corner_parent_offset(rule.CORNER_CRITICAL, corner, width) == 0


# --- The CPU core ------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from satloss_gpu import cubical_persistence  # noqa: E402
from satloss_gpu.persistence.backends.gudhi_backend import GudhiBackend  # noqa: E402
from satloss_gpu.kernels.cpu.local_pairing import batch_pairs, image_pairs  # noqa: E402


def make_image(kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.random(shape)
    if kind == "smooth":
        return gaussian_filter(rng.random(shape), 1.5)
    if kind == "ties":
        return rng.integers(0, 4, shape).astype(np.float64)
    if kind == "binary":
        return (rng.random(shape) > 0.5).astype(np.float32)
    if kind == "constant":
        return np.full(shape, 0.25, dtype=np.float32)
    raise ValueError(kind)


KINDS = ["random", "smooth", "ties", "binary", "constant"]
SHAPES = [(1, 1), (1, 2), (2, 1), (1, 17), (23, 1), (2, 2), (3, 7), (17, 5), (32, 32), (64, 64),
          (64, 41)]


def nonzero_pairs(images, image, dim, birth, death) -> list:
    """Sorted (image, dim, birth, death) pixel tuples whose two values differ."""
    flat = images.reshape(images.shape[0], -1)
    rows = []
    for i, d, b, e in zip(image.tolist(), dim.tolist(), birth.tolist(), death.tolist()):
        if e < 0 or flat[i, b] != flat[i, e]:
            rows.append((i, d, b, e))
    return sorted(rows)


def oracle_pairs(images, construction, dims):
    p = GudhiBackend().pairs(images, construction, dims)
    return nonzero_pairs(images, p.image, p.dim, p.birth_index, p.death_index)


@pytest.fixture(params=["plain", "numbered"])
def passes(request, monkeypatch):
    """Both ways of the core: small images run the plain passes unless every image is made to
    run the numbered ones."""
    if request.param == "numbered":
        from satloss_gpu.kernels.cpu import local_pairing as core

        monkeypatch.setattr(core, "_NUMBERED_FROM", 0)
    return request.param


@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("superlevel", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_core_equals_gudhi(construction, superlevel, kind, passes):
    rng = np.random.default_rng(hash((construction, superlevel, kind, 12)) % 2**32)
    shapes = SHAPES + [tuple(rng.integers(1, 64, size=2)) for _ in range(5)]
    h0_neighbors = 8 if construction == "T" else 4
    for shape in shapes:
        images = np.stack([make_image(kind, shape, rng) for _ in range(2)])
        if superlevel:
            images = -images
        for dims in ((0, 1), (0,), (1,)):
            image, dim, birth, death, last = batch_pairs(images, h0_neighbors, 0 in dims,
                                                         1 in dims)
            ours = nonzero_pairs(images, image, dim, birth, death)
            assert ours == oracle_pairs(images, construction, dims), (shape, dims)
            # Grouped by image, then dimension; the essential class first in each H0.
            assert np.all(np.diff(image * 2 + dim) >= 0)
            if 0 in dims:
                starts = np.flatnonzero((dim == 0) & (np.r_[-1, image[:-1]] != image))
                assert death[starts].tolist() == [-1] * len(images)
            # The last pixel of the (value, index) order.
            flat = images.reshape(len(images), -1)
            expected = [flat.shape[1] - 1 - int(np.argmax(row[::-1])) for row in flat]
            assert last.tolist() == expected


@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(1, 20),
    width=st.integers(1, 20),
    levels=st.integers(1, 5),
    construction=st.sampled_from(["T", "V"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_core_equals_gudhi_on_quantised_images(height, width, levels, construction,
                                                        seed):
    from satloss_gpu.kernels.cpu import local_pairing as core

    rng = np.random.default_rng(seed)
    images = rng.integers(0, levels, (2, height, width)).astype(np.float32)
    oracle = oracle_pairs(images, construction, (0, 1))
    plain = batch_pairs(images, 8 if construction == "T" else 4, True, True)
    saved = core._NUMBERED_FROM
    core._NUMBERED_FROM = 0
    try:
        numbered = batch_pairs(images, 8 if construction == "T" else 4, True, True)
    finally:
        core._NUMBERED_FROM = saved
    assert nonzero_pairs(images, *plain[:4]) == oracle
    assert nonzero_pairs(images, *numbered[:4]) == oracle


def test_threads_give_the_same_result_as_one_thread(passes):
    rng = np.random.default_rng(4)
    images = rng.random((5, 40, 33)).astype(np.float32)
    for h0_neighbors in (8, 4):
        one = batch_pairs(images, h0_neighbors, True, True, n_threads=1)
        many = batch_pairs(images, h0_neighbors, True, True, n_threads=3)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)


def test_negative_zero_sorts_with_zero(passes):
    """-0.0 and 0.0 are one value: the tie rule orders them by index, as gudhi's ranks do."""
    images = np.array([[[0.0, -0.0, 1.0], [-0.0, 2.0, 0.0], [1.0, 0.0, -0.0]]],
                      dtype=np.float32)
    for construction, neighbours in (("T", 8), ("V", 4)):
        for dtype in (np.float32, np.float64):
            batch = images.astype(dtype)
            result = batch_pairs(batch, neighbours, True, True)
            assert nonzero_pairs(batch, *result[:4]) == oracle_pairs(batch, construction, (0, 1))


def test_image_pairs_layout(passes):
    """H0 at the front (essential first), H1 at the back of the output buffers."""
    ring = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    birth, death, n_h0, n_h1, first, last = image_pairs(ring.ravel(), 3, 3, False, True, True)
    assert (n_h0, n_h1, first, last) == (1, 1, 0, 4)
    assert (birth[0], death[0]) == (0, -1)
    assert (birth[-1], death[-1]) == (7, 4)


@pytest.mark.parametrize("construction", ["T", "V"])
def test_cpu_backend_equals_cripser_with_pixels_on_a_larger_image(construction):
    cripser = pytest.importorskip("cripser")
    image = np.random.default_rng(8).random((160, 211))
    compute = cripser.computePH_T if construction == "T" else cripser.computePH
    rows = compute(image, maxdim=1)
    theirs = []
    for d, b, e, r1, c1, _, r2, c2, _ in rows:
        if e > 1e300:
            theirs.append((int(d), b, np.inf, (int(r1), int(c1)), (-1, -1)))
        elif b != e:
            theirs.append((int(d), b, e, (int(r1), int(c1)), (int(r2), int(c2))))
    dg = cubical_persistence(image, construction=construction, backend="cpu").to_numpy()
    ours = list(zip(dg.dim.tolist(), dg.birth.tolist(), dg.death.tolist(),
                    map(tuple, dg.birth_pixel.tolist()), map(tuple, dg.death_pixel.tolist())))
    # Distinct values: the diagrams and the critical pixels are unique.
    assert sorted(ours) == sorted(theirs)
    assert len(ours) > 1000


@pytest.mark.parametrize("construction", ["T", "V"])
def test_dense_critical_edges_grow_the_edge_buffer(construction, passes):
    """A noisy checkerboard has more critical edges than the first edge buffer holds."""
    from satloss_gpu.kernels.cpu import local_pairing as core

    rows, cols = np.mgrid[0:64, 0:64]
    image = ((rows + cols) % 2 + 0.5 * np.random.default_rng(0).random((64, 64)))
    images = image[None].astype(np.float32)
    n = image.size
    corner = np.empty(65 * 65 + 1, dtype=np.int32)
    square = np.empty(n + 1, dtype=np.int32)
    edges = core._sorted_critical_edges(images[0].ravel(), 64, 64, construction == "V",
                                        corner, square)[0]
    assert edges.size > n // 2 + 3 * 64 + 1
    result = batch_pairs(images, 8 if construction == "T" else 4, True, True)
    assert nonzero_pairs(images, *result[:4]) == oracle_pairs(images, construction, (0, 1))


@pytest.mark.parametrize("construction", ["T", "V"])
def test_raster_pass_equals_the_rule_applied_pixel_by_pixel(construction):
    """The CPU raster pass writes what the shared scalar rule says, cell by cell."""
    from satloss_gpu.kernels.cpu import local_pairing as core

    vertex = construction == "V"
    rng = np.random.default_rng(9)
    for shape, kind in (((1, 1), "random"), ((1, 6), "ties"), ((7, 1), "random"),
                        ((13, 11), "ties"), ((20, 17), "random"), ((9, 9), "binary")):
        image = make_image(kind, shape, rng).astype(np.float32)
        height, width = shape
        n = height * width
        flat = image.ravel()
        corner = np.full((height + 1) * (width + 1) + 1, -7, dtype=np.int32)
        corner[-1] = -(n + 1)
        square = np.full(n + 1, -7, dtype=np.int32)
        square[n] = n
        table = core._RULE_TABLE_V if vertex else rule.RULE_TABLE
        keys, payload = core._decode(flat, height, width, table, corner, square)
        want_corner, want_square, want_edges = rule_cells(flat, height, width, vertex)
        np.testing.assert_array_equal(corner, want_corner)
        np.testing.assert_array_equal(square, want_square)
        assert payload.tolist() == want_edges


def rule_cells(flat, height, width, vertex):
    """What the raster pass must write, from the shared scalar rule pixel by pixel.

    Returns the corner parents (the exterior corner last, ``-(pixel + 1)`` for a critical
    corner), the square parents (the outside last, a critical square its own parent) and the
    critical edges ``4 * pixel + side`` in raster order.
    """
    n = height * width
    exterior = (height + 1) * (width + 1)
    want_corner = np.full(exterior + 1, exterior, dtype=np.int64)
    want_corner[-1] = -(n + 1)
    want_square = np.empty(n + 1, dtype=np.int64)
    want_square[n] = n
    want_edges = []
    for row in range(height):
        for col in range(width):
            v = row * width + col
            if vertex:  # the reversed order, outside earlier
                mask = rule.neighbour_mask(-flat, -1, True, row, col, height, width)
            else:
                mask = rule.neighbour_mask(flat, 1, False, row, col, height, width)
            code = rule.pixel_code(mask, rule.RULE_TABLE)
            for c in range(4):
                kind_c = rule.corner_kind(code, c)
                if kind_c == rule.CORNER_NOT_OWNED:
                    continue
                cid = rule.corner_id(row, col, c, width)
                want_corner[cid] = (-(v + 1) if kind_c == rule.CORNER_CRITICAL else
                                    cid + rule.corner_parent_offset(kind_c, c, width))
            side = rule.square_kind(code)
            if side == rule.SQUARE_CRITICAL:
                want_square[v] = v
            else:
                across = rule.side_neighbour(row, col, side, height, width)
                want_square[v] = across if across >= 0 else n
            want_edges += [4 * v + s for s in range(4) if rule.side_is_critical(code, s)]
    return want_corner, want_square, want_edges


def gradient_end(parent, cell, is_end):
    """The cell at the end of ``cell``'s gradient path (a plain walk, no compression)."""
    while not is_end(cell):
        cell = int(parent[cell])
    return cell


@pytest.mark.parametrize("construction", ["T", "V"])
def test_numbered_raster_pass_and_edge_records_follow_the_gradient(construction):
    """The core numbers the critical cells in raster order, and every edge record holds the
    numbers of the critical cells at the ends of its corners' and squares' paths."""
    from satloss_gpu.kernels.cpu import local_pairing as core

    vertex = construction == "V"
    rng = np.random.default_rng(10)
    for shape, kind in (((1, 1), "random"), ((1, 6), "ties"), ((7, 1), "random"),
                        ((13, 11), "ties"), ((20, 17), "random"), ((9, 9), "binary"),
                        ((31, 40), "smooth"), ((24, 30), "random")):
        for dtype in (np.float32, np.float64):
            image = make_image(kind, shape, rng).astype(dtype)
            height, width = shape
            n = height * width
            flat = image.ravel()
            want_corner, want_square, want_edges = rule_cells(flat, height, width, vertex)
            exterior = want_corner.size - 1
            critical_corners = [c for c in range(exterior) if -(n + 1) < want_corner[c] < 0]
            critical_squares = [v for v in range(n) if want_square[v] == v]
            corner_number = {c: k + 1 for k, c in enumerate(critical_corners)}
            corner_number[exterior] = 0
            square_number = {v: k + 1 for k, v in enumerate(critical_squares)}
            square_number[n] = 0

            scratch = core._scratch(flat, height, width)
            corner, square, edge_keys, edge_payload, records, _, sort_keys, _, _, _, cpx, spx = (
                scratch)
            table = core._RULE_TABLE_V if vertex else rule.RULE_TABLE
            keys, payload = core._decode_into(flat, height, width, table, corner, square,
                                              edge_keys, edge_payload)
            assert payload.tolist() == want_edges
            n_corners = core._number_critical(corner, n, False, cpx)
            n_squares = core._number_critical(square, n, True, spx)
            assert (n_corners, n_squares) == (len(critical_corners) + 1,
                                             len(critical_squares) + 1)
            records, sort_keys, corner_pixel, corner_nodes, square_pixel, square_nodes = (
                core._resolve_ends(flat, height, width, keys, payload, corner, square,
                                   cpx[:n_corners], spx[:n_squares], records, sort_keys))
            assert corner_pixel[1:].tolist() == [-int(want_corner[c]) - 1
                                                 for c in critical_corners]
            assert square_pixel[1:].tolist() == critical_squares
            for pixels, nodes in ((corner_pixel, corner_nodes), (square_pixel, square_nodes)):
                assert nodes[:, 0].tolist() == list(range(len(pixels)))
                # The nodes' keys order the numbers as the values order their pixels.
                np.testing.assert_array_equal(np.argsort(nodes[1:, 1], kind="stable"),
                                              np.argsort(flat[pixels[1:]], kind="stable"))

            def corner_end(c):
                return gradient_end(want_corner, c, lambda x: x == exterior or want_corner[x] < 0)

            def square_end(v):
                return gradient_end(want_square, v, lambda x: x == n or want_square[x] == x)

            assert records.shape == (len(want_edges), 3)
            for (ends, squares, pixel), packed in zip(records.tolist(), want_edges):
                v, side = divmod(packed, 4)
                row, col = divmod(v, width)
                a, b = rule.side_corners(row, col, side, width)
                across = rule.side_neighbour(row, col, side, height, width)
                assert pixel == v
                assert ends == corner_number[corner_end(a)] | corner_number[corner_end(b)] << 32
                assert squares == (square_number[square_end(v)]
                                   | square_number[square_end(across if across >= 0 else n)]
                                   << 32)
            assert sort_keys.tolist() == keys.tolist()


@pytest.mark.parametrize("construction", ["T", "V"])
def test_core_equals_gudhi_on_an_image_with_many_critical_cells(construction):
    """Enough critical corners and squares for the union-find passes to prefetch."""
    from satloss_gpu.kernels.cpu import local_pairing as core

    images = np.random.default_rng(11).random((1, 640, 1024)).astype(np.float32)
    vertex = construction == "V"
    height, width = images.shape[1:]
    flat = images[0].ravel()
    scratch = core._scratch(flat, height, width)
    table = core._RULE_TABLE_V if vertex else rule.RULE_TABLE
    payload = core._decode_into(flat, height, width, table, *scratch[:4])[1]
    assert payload.size >= core._NUMBERED_FROM
    counts = [core._number_critical(scratch[0], flat.size, False, scratch[-2]),
              core._number_critical(scratch[1], flat.size, True, scratch[-1])]
    assert min(counts) >= core._PREFETCH_FROM
    result = batch_pairs(images, 4 if vertex else 8, True, True)
    assert nonzero_pairs(images, *result[:4]) == oracle_pairs(images, construction, (0, 1))
