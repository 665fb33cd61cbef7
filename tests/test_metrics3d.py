"""Metrics of volumes (spatial_dims=3) against straightforward implementations: gudhi's
Betti numbers, scipy labelling, scikit-image's Euler number, and homology over GF(2) of the
cubical complex written out cell by cell."""
import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi

from satloss_gpu import metrics
from satloss_gpu.metrics import (METRIC_NAMES, METRIC_NAMES_3D, adapted_rand_error,
                                 betti_errors, betti_matching_error, betti_numbers, cldice, dice,
                                 metric_names, segmentation_metrics, signed_betti_differences,
                                 variation_of_information)

gudhi = pytest.importorskip("gudhi")


# --------------------------------------------------------------------------- oracles
def gudhi_betti(mask, pad=False):
    if pad:
        mask = np.pad(mask, 1, constant_values=True)
    cc = gudhi.CubicalComplex(top_dimensional_cells=1.0 - mask.astype(np.float64))
    cc.compute_persistence()
    return list(cc.persistent_betti_numbers(0.0, 0.0)[:3])


def scipy_b0_b2(mask):
    b0 = ndi.label(mask, structure=np.ones((3, 3, 3)))[1]
    regions, n = ndi.label(~mask, structure=ndi.generate_binary_structure(3, 1))
    faces = np.concatenate([np.moveaxis(regions, a, 0)[i].ravel()
                            for a in range(3) for i in (0, -1)])
    return b0, n - len(set(faces.tolist()) - {0})


def _cells(mask):
    """Cells of the closed-voxel complex of ``mask`` on the doubled grid: bool (2D+1, ...)."""
    grid = np.zeros(tuple(2 * n + 1 for n in mask.shape), bool)
    for z, y, x in np.argwhere(mask):
        grid[2 * z:2 * z + 3, 2 * y:2 * y + 3, 2 * x:2 * x + 3] = True
    return grid


def _of_dim(grid, dim):
    return [tuple(c) for c in np.argwhere(grid) if int(np.sum(np.asarray(c) % 2)) == dim]


def _boundary(cells, faces):
    """GF(2) boundary matrix (len(faces), len(cells)) of cells of one dimension."""
    index = {f: i for i, f in enumerate(faces)}
    out = np.zeros((len(faces), len(cells)), bool)
    for j, c in enumerate(cells):
        for axis in range(3):
            if c[axis] % 2:
                for step in (-1, 1):
                    f = list(c)
                    f[axis] += step
                    out[index[tuple(f)], j] = True
    return out


def gf2_rref(matrix):
    m = matrix.copy()
    pivots, r = [], 0
    for col in range(m.shape[1]):
        rows = np.nonzero(m[r:, col])[0]
        if len(rows) == 0:
            continue
        k = r + rows[0]
        m[[r, k]] = m[[k, r]]
        others = np.nonzero(m[:, col])[0]
        others = others[others != r]
        m[others] ^= m[r]
        pivots.append(col)
        r += 1
        if r == m.shape[0]:
            break
    return m[:r], pivots


def gf2_rank(matrix):
    return len(gf2_rref(matrix)[1]) if matrix.size else 0


def gf2_nullspace(matrix):
    """Rows spanning the kernel of ``matrix`` over GF(2)."""
    n = matrix.shape[1]
    reduced, pivots = gf2_rref(matrix) if matrix.shape[0] else (matrix, [])
    free = [c for c in range(n) if c not in pivots]
    basis = np.zeros((len(free), n), bool)
    for i, f in enumerate(free):
        basis[i, f] = True
        for row, p in enumerate(pivots):
            basis[i, p] = reduced[row, f]
    return basis


def matched_by_linear_algebra(p, t, dim):
    """dim(im H_dim(P) n im H_dim(T)) in H_dim(P u T), by cycles and boundaries over GF(2)."""
    grid_c, grid_p, grid_t = _cells(p | t), _cells(p), _cells(t)
    cells = _of_dim(grid_c, dim)
    col = {c: i for i, c in enumerate(cells)}
    lower = _of_dim(grid_c, dim - 1) if dim else []
    boundary = _boundary(cells, lower) if dim else np.zeros((0, len(cells)), bool)
    bounding = _boundary(_of_dim(grid_c, dim + 1), cells).T   # rows: boundaries
    cycles = []
    for grid in (grid_p, grid_t):
        inside = np.array([grid[c] for c in cells])
        sub = gf2_nullspace(boundary[:, inside]) if inside.any() else np.zeros((0, 0), bool)
        full = np.zeros((len(sub), len(cells)), bool)
        full[:, np.nonzero(inside)[0]] = sub
        cycles.append(full)
    rank_b = gf2_rank(bounding)
    both = gf2_rank(np.vstack([cycles[0], bounding])) + gf2_rank(np.vstack([cycles[1], bounding]))
    return both - gf2_rank(np.vstack([cycles[0], cycles[1], bounding])) - rank_b


def oracle_betti_matching(p, t, dim):
    b = [gudhi_betti(p)[dim], gudhi_betti(t)[dim]]
    return sum(b) - 2 * matched_by_linear_algebra(p, t, dim)


# --------------------------------------------------------------------------- shapes
def torus(shape=(5, 7, 7), z=2, lo=1, hi=6):
    v = np.zeros(shape, bool)
    v[z, lo:hi, lo:hi] = True
    v[z, lo + 1:hi - 1, lo + 1:hi - 1] = False
    return v


def hollow_sphere(shape=(7, 7, 7)):
    v = np.zeros(shape, bool)
    v[1:6, 1:6, 1:6] = True
    v[2:5, 2:5, 2:5] = False
    return v


def linked_rings():
    """Two square rings, one in the plane z = 4, one in the plane row = 4 through its hole."""
    a = np.zeros((9, 9, 10), bool)
    a[4, 2:7, 2:7] = True
    a[4, 3:6, 3:6] = False
    b = np.zeros_like(a)
    b[1:8, 4, 4:9] = True
    b[2:7, 4, 5:8] = False
    return a | b


# --------------------------------------------------------------------------- Betti numbers
def test_betti_numbers_random_volumes_against_gudhi_scipy_and_euler():
    from skimage.measure import euler_number

    rng = np.random.default_rng(1)
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 8, 3))
        mask = rng.random(shape) < rng.uniform(0.2, 0.8)
        betti = betti_numbers(mask, spatial_dims=3).tolist()
        assert betti == gudhi_betti(mask)
        assert (betti[0], betti[2]) == scipy_b0_b2(mask)
        chi = euler_number(np.pad(mask, 1), connectivity=3)
        assert betti[0] - betti[1] + betti[2] == chi
        assert betti_numbers(mask, pad=True, spatial_dims=3).tolist() == gudhi_betti(mask, pad=True)


@pytest.mark.parametrize("shape, expected", [
    (torus(), [1, 1, 0]), (hollow_sphere(), [1, 0, 1]), (linked_rings(), [2, 2, 0]),
    (np.zeros((3, 4, 5), bool), [0, 0, 0]), (np.ones((3, 4, 5), bool), [1, 0, 0]),
])
def test_betti_numbers_of_constructed_shapes(shape, expected):
    assert gudhi_betti(shape) == expected            # the shapes are what they claim
    assert betti_numbers(shape, spatial_dims=3).tolist() == expected


def test_betti_numbers_batches_probabilities_and_frame():
    batch = np.stack([torus(), hollow_sphere()[:5]]).astype(np.float32) * 0.8
    out = betti_numbers(batch, spatial_dims=3)
    assert out.dtype == np.int64 and out.shape == (2, 3)
    assert out.tolist() == [gudhi_betti(m > 0.5) for m in batch]
    assert betti_numbers(batch, threshold=0.9, spatial_dims=3).tolist() == [[0, 0, 0]] * 2
    # an arc from a face to the same face: no tunnel unframed, a tunnel once the frame
    # closes it (and the frame encloses the background: a void)
    arc = np.zeros((5, 5, 5), bool)
    arc[2, 0:3, 1] = arc[2, 2, 1:4] = arc[2, 0:3, 3] = True
    assert betti_numbers(arc, spatial_dims=3).tolist() == [1, 0, 0]
    assert betti_numbers(arc, pad=True, spatial_dims=3).tolist() == [1, 1, 1]
    assert gudhi_betti(arc, pad=True) == [1, 1, 1]


def test_volume_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`masks` must have shape \(D, H, W\) or \(B, D, H, W\)"):
        betti_numbers(np.zeros((4, 4)), spatial_dims=3)
    with pytest.raises(ValueError, match=r"`pred` must have shape \(D, H, W\)"):
        dice(np.zeros((4, 4)), np.zeros((4, 4)), spatial_dims=3)
    with pytest.raises(ValueError, match=r"`pred` must have shape \(H, W\)"):
        dice(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="`spatial_dims` must be 2 or 3"):
        betti_numbers(np.zeros((4, 4)), spatial_dims=1)
    with pytest.raises(TypeError, match="`spatial_dims` must be 2 or 3"):
        betti_errors(np.zeros((4, 4)), np.zeros((4, 4)), spatial_dims=True)
    with pytest.raises(ValueError, match="same shape"):
        cldice(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), spatial_dims=3)


def test_betti_errors_and_signed_differences():
    pred, target = hollow_sphere(), torus(shape=(7, 7, 7))
    assert betti_errors(pred, target, spatial_dims=3) == (0, 1, 1)
    assert signed_betti_differences(pred, target, spatial_dims=3) == (0, -1, 1)


# --------------------------------------------------------------------------- Betti matching
@pytest.mark.parametrize("seed", range(6))
def test_betti_matching_random_volumes_against_linear_algebra(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 6, 3))
    p = rng.random(shape) < 0.55
    t = p ^ (rng.random(shape) < (0.1 if seed % 2 else 0.5))   # similar or unrelated masks
    errors = betti_matching_error(p, t, per_dimension=True, spatial_dims=3)
    assert errors[0] == oracle_betti_matching(p, t, 0)
    assert errors[1] == oracle_betti_matching(p, t, 1)
    assert betti_matching_error(p, t, spatial_dims=3) == float(sum(errors))


def test_betti_matching_of_constructed_shapes():
    ring = torus(shape=(5, 9, 9), lo=1, hi=6)
    shifted = np.roll(ring, 1, axis=2)
    far = torus(shape=(5, 9, 9), z=2, lo=5, hi=9)
    far[:, :, :] = False
    far[2, 5:9, 5:9] = True
    far[2, 6:8, 6:8] = False
    cases = [
        (ring, ring, (0, 0, 0)),
        (shifted, ring, (0, 0, 0)),                  # the same loop, moved by a voxel
        (ring & ~far, far, None),                   # loops in different places
        (hollow_sphere(), hollow_sphere(), (0, 0, 0)),
        (linked_rings(), linked_rings(), (0, 0, 0)),
    ]
    for p, t, expected in cases:
        errors = betti_matching_error(p, t, per_dimension=True, spatial_dims=3)
        if expected is not None:
            assert errors == expected
        assert errors[1] == oracle_betti_matching(p, t, 1)
    # a loop and one far away: each is unmatched, where the Betti error sees nothing wrong
    apart = np.zeros((5, 12, 12), bool)
    apart[2, 1:5, 1:5] = True
    apart[2, 2:4, 2:4] = False
    other = np.roll(apart, 7, axis=(1, 2))
    assert betti_errors(apart, other, spatial_dims=3)[1] == 0
    assert betti_matching_error(apart, other, per_dimension=True, spatial_dims=3)[1] == 2
    # a void and one elsewhere
    void_a = np.zeros((5, 5, 12), bool)
    void_a[1:4, 1:4, 1:4] = True
    void_a[2, 2, 2] = False
    void_b = np.roll(void_a, 6, axis=2)
    assert betti_matching_error(void_a, void_b, per_dimension=True, spatial_dims=3) == (2, 0, 2)
    both = void_a | void_b
    assert betti_matching_error(void_a, both, per_dimension=True, spatial_dims=3) == (1, 0, 1)


def test_betti_matching_on_generated_vessels_matches_linear_algebra_counts():
    from satloss_gpu.training.synthetic3d import generate_volume

    _, label = generate_volume(size=(16, 16, 16), seed=2)
    label = label.astype(bool)
    eroded = ndi.binary_erosion(label) | (np.random.default_rng(0).random(label.shape) < 0.02)
    errors = betti_matching_error(eroded, label, per_dimension=True, spatial_dims=3)
    assert errors[1] == oracle_betti_matching(eroded, label, 1)
    assert errors[0] == oracle_betti_matching(eroded, label, 0)


# --------------------------------------------------------------------------- the rest
def _skeleton_dice(p, t):
    from skimage.morphology import skeletonize

    sp, st = skeletonize(p), skeletonize(t)
    prec = (sp & t).sum() / max(sp.sum(), 1)
    sens = (st & p).sum() / max(st.sum(), 1)
    return 2 * prec * sens / (prec + sens)


def test_cldice_dice_are_voi_on_volumes():
    from skimage.metrics import adapted_rand_error as are_ref
    from skimage.metrics import variation_of_information as voi_ref

    tube = np.zeros((9, 9, 20), bool)
    tube[3:6, 3:6, 1:19] = True
    broken = tube.copy()
    broken[:, :, 9:11] = False
    assert cldice(tube, tube, spatial_dims=3) == 1.0
    value = cldice(broken, tube, spatial_dims=3)
    assert value < 1.0 and value == pytest.approx(_skeleton_dice(broken, tube))
    assert dice(broken, tube, spatial_dims=3) == pytest.approx(
        2 * (broken & tube).sum() / (broken.sum() + tube.sum()))
    labels_t = ndi.label(tube, structure=np.ones((3, 3, 3)))[0]
    labels_b = ndi.label(broken, structure=np.ones((3, 3, 3)))[0]
    assert adapted_rand_error(broken, tube, spatial_dims=3) == pytest.approx(
        are_ref(labels_t, labels_b)[0])
    assert variation_of_information(broken, tube, spatial_dims=3) == pytest.approx(
        float(np.sum(voi_ref(labels_t, labels_b))))
    # diagonal contact joins components in 3D (26-connectivity)
    diag = np.zeros((3, 3, 3), bool)
    diag[0, 0, 0] = diag[1, 1, 1] = True
    assert adapted_rand_error(diag, diag, spatial_dims=3) == 0.0
    assert betti_numbers(diag, spatial_dims=3).tolist() == [1, 0, 0]


def test_segmentation_metrics_for_volumes():
    assert metric_names(3) == METRIC_NAMES_3D and metric_names() == METRIC_NAMES
    pred, target = hollow_sphere(), torus(shape=(7, 7, 7))
    row = segmentation_metrics(pred, target, spatial_dims=3)
    assert tuple(row) == METRIC_NAMES_3D
    assert row["betti2_error"] == 1.0 and row["betti1_signed"] == -1.0
    assert row["dice"] == pytest.approx(dice(pred, target, spatial_dims=3))
    framed = betti_errors(pred, target, pad=True, spatial_dims=3)
    assert [row[f"betti{k}_error_framed"] for k in range(3)] == list(framed)
    assert row["betti_matching_error"] == betti_matching_error(pred, target, spatial_dims=3)
    quick = segmentation_metrics(pred, target, topology=False, spatial_dims=3)
    assert tuple(quick) == METRIC_NAMES_3D
    assert all(np.isnan(quick[k]) for k in METRIC_NAMES_3D[6:])
    summary = metrics.summarize([row, row], METRIC_NAMES_3D)
    assert summary["betti2_error"] == 1.0 and summary["n_images"] == 2.0


def test_matched_pairs_never_exceed_the_features():
    rng = np.random.default_rng(7)
    for _ in range(5):
        p = rng.random((6, 6, 6)) < 0.6
        t = rng.random((6, 6, 6)) < 0.6
        errors = betti_matching_error(p, t, per_dimension=True, spatial_dims=3)
        b = betti_numbers(np.stack([p, t]), spatial_dims=3)
        for k, e in enumerate(errors):
            assert abs(b[0, k] - b[1, k]) <= e <= b[0, k] + b[1, k]
            assert (b[0, k] + b[1, k] - e) % 2 == 0
    assert list(itertools.islice(iter(METRIC_NAMES_3D), 6)) == list(METRIC_NAMES[:6])
