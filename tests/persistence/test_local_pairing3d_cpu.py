"""The 3D CPU core against gudhi on rank volumes (T and V), the 2D core on flat volumes, and
the pattern table against the per-voxel rule."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satloss_gpu.kernels.common import local_pairing3d as rule
from satloss_gpu.kernels.cpu import local_pairing3d as core
from satloss_gpu.kernels.cpu.local_pairing import batch_pairs

gudhi = pytest.importorskip("gudhi")


def strict_ranks(volume: np.ndarray) -> np.ndarray:
    """Rank of every voxel in the (value, C-order index) order, as floats."""
    order = np.argsort(volume.ravel(), kind="stable")
    ranks = np.empty(order.size, dtype=np.float64)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(volume.shape)


def gudhi_pairs(volume: np.ndarray, vertex: bool, dims) -> Counter:
    """Multiset of (dim, birth voxel, death voxel) from gudhi on the rank volume, pairs of
    zero persistence (equal input values) dropped. Z/2 coefficients, as the core (gudhi's
    default field pairs some H1 classes of volumes differently)."""
    depth, height, width = volume.shape
    ranks = strict_ranks(volume)
    if vertex:
        complex_ = gudhi.CubicalComplex(vertices=ranks)
    else:
        complex_ = gudhi.CubicalComplex(top_dimensional_cells=ranks)
    complex_.compute_persistence(homology_coeff_field=2, min_persistence=0)
    if vertex:
        regular, essential = complex_.vertices_of_persistence_pairs()
    else:
        regular, essential = complex_.cofaces_of_persistence_pairs()

    def c_order(cells) -> list[int]:
        z, y, x = np.unravel_index(np.asarray(cells, dtype=np.int64).ravel(),
                                   (depth, height, width), order="F")
        return [int(i) for i in (z * height + y) * width + x]

    flat = volume.ravel()
    out = Counter()
    for d in dims:
        if d < len(regular) and len(regular[d]):
            cells = np.asarray(regular[d]).reshape(-1, 2)
            for b, e in zip(c_order(cells[:, 0]), c_order(cells[:, 1])):
                if flat[b] != flat[e]:
                    out[(d, b, e)] += 1
        if d < len(essential) and len(essential[d]):
            for b in c_order(essential[d]):
                out[(d, b, -1)] += 1
    return out


def core_pairs(volumes: np.ndarray, vertex: bool, dims, n_threads: int = 1):
    """Per volume, the multiset of (dim, birth, death) of the core (zero persistence dropped),
    and the last voxels."""
    image, dim, birth, death, last = core.batch_pairs3d(volumes, vertex, dims, n_threads)
    for column in (image, dim, birth, death, last):
        assert column.dtype == np.int64
    assert np.all(np.diff(image) >= 0)
    out = []
    for b in range(volumes.shape[0]):
        flat = volumes[b].ravel()
        mine = image == b
        assert np.all(np.diff(dim[mine]) >= 0)
        counter = Counter()
        for d, x, y in zip(dim[mine], birth[mine], death[mine]):
            if y == -1 or flat[x] != flat[y]:
                counter[(int(d), int(x), int(y))] += 1
        out.append(counter)
    return out, last


def make_volume(rng, shape, kind: str, dtype) -> np.ndarray:
    if kind == "noise":
        volume = rng.random(shape)
    elif kind == "quantised":
        volume = np.round(rng.random(shape) * 4) - 2
    elif kind == "binary":
        volume = (rng.random(shape) > 0.5).astype(np.float64)
    elif kind == "constant":
        volume = np.full(shape, 0.5)
    else:  # smooth: a sum of a few blobs
        grids = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
        volume = np.zeros(shape)
        for _ in range(3):
            centre = [rng.uniform(0, s) for s in shape]
            volume += rng.uniform(-1, 1) * np.exp(
                -sum((g - c) ** 2 for g, c in zip(grids, centre)) / 8.0)
    return np.ascontiguousarray(volume, dtype=dtype)


def check_against_gudhi(volumes: np.ndarray, vertex: bool, dims, n_threads: int = 1) -> None:
    got, last = core_pairs(volumes, vertex, dims, n_threads)
    for b in range(volumes.shape[0]):
        expected = gudhi_pairs(volumes[b], vertex, dims)
        assert got[b] == expected, (volumes.shape, vertex, dims, b,
                                    dict(expected - got[b]), dict(got[b] - expected))
        assert last[b] == int(np.argmax(strict_ranks(volumes[b])))


KINDS = ("noise", "quantised", "binary", "constant", "smooth")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       shape=st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8)),
       kind=st.sampled_from(KINDS), vertex=st.booleans(),
       dtype=st.sampled_from((np.float32, np.float64)), batch=st.integers(1, 3),
       dims=st.sampled_from([d for r in (1, 2, 3) for d in itertools.combinations((0, 1, 2), r)]))
def test_small_volumes_equal_gudhi(seed, shape, kind, vertex, dtype, batch, dims):
    rng = np.random.default_rng(seed)
    volumes = np.stack([make_volume(rng, shape, kind, dtype) for _ in range(batch)])
    check_against_gudhi(volumes, vertex, dims)


@pytest.mark.parametrize("shape", [(1, 9, 11), (7, 1, 1), (1, 1, 13), (1, 1, 1), (2, 1, 9),
                                   (12, 10, 9)])
@pytest.mark.parametrize("vertex", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_thin_and_flat_volumes_equal_gudhi(shape, vertex, kind):
    rng = np.random.default_rng(sum(shape) + 7 * vertex + KINDS.index(kind))
    check_against_gudhi(make_volume(rng, shape, kind, np.float64)[None], vertex, (0, 1, 2))


@pytest.mark.parametrize("shape,kind", [((24, 24, 24), "noise"), ((32, 20, 28), "noise"),
                                        ((28, 28, 28), "smooth"), ((24, 30, 26), "quantised")])
@pytest.mark.parametrize("vertex", [False, True])
def test_larger_volumes_equal_gudhi(shape, kind, vertex):
    rng = np.random.default_rng(shape[0] + 3 * vertex)
    if kind == "smooth":
        from scipy.ndimage import gaussian_filter

        volume = gaussian_filter(rng.random(shape), 2.0).astype(np.float32)
    else:
        volume = make_volume(rng, shape, kind, np.float32)
    check_against_gudhi(volume[None], vertex, (0, 1, 2))


@pytest.mark.parametrize("vertex", [False, True])
def test_threads_split_one_volume_and_spread_a_batch(vertex):
    rng = np.random.default_rng(11)
    volumes = rng.random((3, 13, 9, 10))
    for n_threads in (2, 3):
        check_against_gudhi(volumes[:1], vertex, (0, 1, 2), n_threads)  # one volume, slabs
        check_against_gudhi(volumes, vertex, (0, 1, 2), n_threads)  # a batch over threads
    check_against_gudhi(volumes[:1], vertex, (1,), 2)


@pytest.mark.parametrize("vertex", [False, True])
@pytest.mark.parametrize("kind", ["noise", "quantised", "binary"])
def test_one_slice_volumes_equal_the_2d_core(vertex, kind):
    rng = np.random.default_rng(5 + vertex)
    images = np.stack([make_volume(rng, (17, 23), kind, np.float64) for _ in range(2)])
    image, dim, birth, death, last = batch_pairs(images, 4 if vertex else 8, True, True, 1)
    got, last3 = core_pairs(images[:, None], vertex, (0, 1, 2))
    for b in range(2):
        flat = images[b].ravel()
        expected = Counter((int(d), int(x), int(y))
                           for d, x, y, i in zip(dim, birth, death, image)
                           if i == b and (y == -1 or flat[x] != flat[y]))
        assert got[b] == expected
    np.testing.assert_array_equal(last3, last)


def test_pattern_table_holds_every_owned_set_with_the_rules_output():
    owned, rows, hash_keys, hash_values = core.pattern_table()[:4]
    assert owned.size == 15935  # the distinct owned sets of all 2^26 masks
    assert np.unique(owned).size == owned.size
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 1 << 26, size=3000)
    # Masks with few earlier neighbours own many cells: bias some samples that way.
    sparse = rng.integers(0, 1 << 26, size=(3000, 3))
    masks = np.concatenate([masks, sparse[:, 0] & sparse[:, 1] & sparse[:, 2], [0, (1 << 26) - 1]])
    partner = np.empty(27, dtype=np.int32)
    seq = np.empty(27, dtype=np.int32)
    for mask in masks:
        mask = int(mask)
        cells = rule.owned_cells(mask)
        h = np.flatnonzero(hash_keys == cells)
        assert h.size == 1
        row = rows[hash_values[h[0]]]
        rule.voxel_rule(mask, partner, seq)
        np.testing.assert_array_equal(row[core._PARTNER : core._PARTNER + 27], partner)
        np.testing.assert_array_equal(row[core._SEQ : core._SEQ + 27], seq)
        critical_edges = [j for j in np.argsort(seq) if seq[j] >= 0 and partner[j] == -1
                          and rule.LOCAL_DIM[j] == 1]
        assert list(row[core._CE : core._CE + row[core._N_CE]]) == critical_edges


def test_memory_estimate_refuses_before_allocating(monkeypatch):
    monkeypatch.setattr(core, "_available_memory", lambda: 10 * 2**20)
    volumes = np.zeros((1, 64, 64, 64), dtype=np.float32)
    with pytest.raises(MemoryError, match="`images`"):
        core.batch_pairs3d(volumes, False, (0, 1, 2))
    assert core.estimated_bytes((256, 256, 256)) < 4 * 2**30


@pytest.mark.parametrize("bad,error", [(np.zeros((4, 4, 4)), ValueError),
                                       (np.zeros((1, 4, 4, 4), dtype=np.int32), TypeError),
                                       (np.zeros((1, 4, 4, 8))[..., ::2], ValueError),
                                       (np.zeros((1, 0, 4, 4)), ValueError)])
def test_bad_input_names_images(bad, error):
    with pytest.raises(error, match="`images`"):
        core.batch_pairs3d(bad, False, (0, 1, 2))


def test_bad_dims_are_refused():
    with pytest.raises(ValueError, match="`dims`"):
        core.batch_pairs3d(np.zeros((1, 2, 2, 2)), False, (2, 0))


def test_stage_times_cover_the_stages():
    volume = np.random.default_rng(0).random((10, 11, 12)).astype(np.float32)
    times = core.stage_times3d(volume)
    for stage in ("raster", "sort", "h0", "h2", "h1", "pack", "total"):
        assert times[stage] >= 0.0
    assert times["edges"] > 0 and times["faces"] > 0 and times["columns"] > 0


@pytest.mark.parametrize("method", ["lazy", "staged"])
@pytest.mark.parametrize("vertex", [False, True])
@pytest.mark.parametrize("kind", ["noise", "smooth", "quantised"])
def test_each_h1_method_equals_gudhi(monkeypatch, method, vertex, kind):
    monkeypatch.setattr(core, "H1_METHOD", method)
    monkeypatch.setattr(core, "_MIN_PART", 16)  # stage A in parts on two threads
    rng = np.random.default_rng(17 + vertex)
    shape = (14, 12, 13)
    if kind == "smooth":
        from scipy.ndimage import gaussian_filter

        volume = gaussian_filter(rng.random(shape), 1.5).astype(np.float32)
    else:
        volume = make_volume(rng, shape, kind, np.float32)
    for n_threads in (1, 2):
        check_against_gudhi(volume[None], vertex, (0, 1, 2), n_threads)
        check_against_gudhi(volume[None], vertex, (1,), n_threads)


@pytest.mark.parametrize("vertex", [False, True])
def test_h1_methods_give_identical_pairs(monkeypatch, vertex):
    rng = np.random.default_rng(23 + vertex)
    volumes = np.stack([rng.random((20, 18, 19)), rng.random((20, 18, 19)).round(1)])
    got = {}
    for method in ("lazy", "staged"):
        monkeypatch.setattr(core, "H1_METHOD", method)
        got[method] = core.batch_pairs3d(volumes, vertex, (0, 1, 2), 1)
    for a, b in zip(got["lazy"], got["staged"]):
        np.testing.assert_array_equal(a, b)


def test_auto_h1_method_stages_many_columns(monkeypatch):
    monkeypatch.setattr(core, "H1_METHOD", "auto")
    assert core._h1_method(core._STAGED_COLUMNS - 1, 10**6) == "lazy"
    assert core._h1_method(core._STAGED_COLUMNS, 10**6) == "staged"
    monkeypatch.setattr(core, "_STAGED_COLUMNS", 8)
    volume = np.random.default_rng(29).random((1, 9, 10, 11)).astype(np.float32)
    check_against_gudhi(volume, False, (1,))
