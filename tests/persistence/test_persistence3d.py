"""cubical_persistence on volumes (spatial_dims=3): every backend against gudhi (the oracle),
and gudhi's 3D results (critical voxels, H2) against cripser, an independent implementation.

Each comparison is exact: the sorted (image, dim, birth, death, birth voxel, death voxel) of
every pair, and the last voxel of every volume.
"""
import zlib

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from satloss_gpu import PersistenceDiagrams, cubical_persistence
from satloss_gpu.persistence.backends.gudhi_backend import gudhi_to_c_order, strict_ranks

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")

KINDS = ["noise", "smooth", "quantised", "binary", "constant"]
DIM_SUBSETS = [None, (0,), (1,), (2,), (0, 2), (1, 2), (0, 1)]


def seed_of(*parts) -> int:
    """A seed that does not change between runs (``hash`` of a str does)."""
    return zlib.crc32(repr(parts).encode())


def canonical(dg: PersistenceDiagrams) -> list:
    """Sorted (image, dim, birth, death, birth voxel, death voxel) of every pair."""
    d = dg.to_numpy()
    rows = zip(d.image.tolist(), d.dim.tolist(), d.birth.tolist(), d.death.tolist(),
               map(tuple, d.birth_voxel.tolist()), map(tuple, d.death_voxel.tolist()))
    return sorted(rows)


def make_volume(kind: str, shape: tuple, rng: np.random.Generator, dtype=np.float64):
    """A volume of ``shape`` ((B, D, H, W) or (D, H, W)) of the named kind."""
    if kind == "noise":
        volume = rng.random(shape)
    elif kind == "smooth":
        sigma = (0,) * (len(shape) - 3) + (1.2, 1.2, 1.2)
        volume = gaussian_filter(rng.random(shape), sigma, mode="nearest")
    elif kind == "quantised":
        volume = rng.integers(0, 3, shape).astype(np.float64)
    elif kind == "binary":
        volume = (rng.random(shape) > 0.5).astype(np.float64)
    elif kind == "constant":
        volume = np.full(shape, 0.5)
    else:
        raise ValueError(kind)
    return volume.astype(dtype)


def random_shape(rng: np.random.Generator, largest: int) -> tuple:
    """(D, H, W) with sides 1..largest, often thin (a side 1 or 2) or flat."""
    shape = rng.integers(1, largest + 1, size=3)
    style = rng.integers(0, 4)
    if style == 1:
        shape[rng.integers(0, 3)] = rng.integers(1, 3)
    elif style == 2:
        shape[rng.choice(3, size=2, replace=False)] = 1
    return tuple(int(s) for s in shape)


def _cuda_skip_reason(cuda_mode: str):
    """Why the CUDA backend cannot be checked on volumes here, or None."""
    if cuda_mode == "none":
        return "no CUDA GPU and the Numba CUDA simulator is off"
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    if not CUDABackend.supports_volumes:
        return "the CUDA backend does not compute volumes (supports_volumes is False)"
    if not CUDABackend.is_available():
        return f"the CUDA backend is not available: {CUDABackend.unavailable_reason()}"
    return None


@pytest.fixture(params=["cpu", "cuda"])
def backend(request, cuda_mode, to_cuda):
    """(name, input converter, largest side, random cases per test) of the backend under
    test; smaller under the CUDA simulator."""
    if request.param == "cuda":
        reason = _cuda_skip_reason(cuda_mode)
        if reason is not None:
            pytest.skip(reason)
        if cuda_mode == "sim":
            return "cuda", to_cuda, 6, 3
        return "cuda", to_cuda, 10, 8
    return "cpu", (lambda a: a), 10, 8


def assert_equals_gudhi(backend, volumes, **options):
    name, convert = backend[:2]
    ours = cubical_persistence(convert(volumes), spatial_dims=3, backend=name, **options)
    oracle = cubical_persistence(volumes, spatial_dims=3, backend="gudhi", **options)
    assert canonical(ours) == canonical(oracle), (volumes.shape, options)
    np.testing.assert_array_equal(np.asarray(ours.to_numpy().last_voxel),
                                  oracle.last_voxel)
    assert ours.image_shape == oracle.image_shape == tuple(volumes.shape[-3:])


@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("superlevel", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_backend_equals_gudhi_on_random_volumes(backend, construction, superlevel, kind):
    rng = np.random.default_rng(seed_of(construction, superlevel, kind))
    for case in range(backend[3]):
        dtype = np.float32 if case % 2 else np.float64
        batch = int(rng.integers(1, 4))
        shape = (batch,) + random_shape(rng, backend[2])
        volumes = make_volume(kind, shape, rng, dtype)
        assert_equals_gudhi(backend, volumes, construction=construction,
                            superlevel=superlevel)


@pytest.mark.parametrize("dims", DIM_SUBSETS)
@pytest.mark.parametrize("construction", ["T", "V"])
def test_backend_equals_gudhi_for_every_subset_of_dims(backend, dims, construction):
    rng = np.random.default_rng(seed_of(dims, construction))
    side = min(backend[2], 7)
    volumes = make_volume("noise", (2, side, side - 1, side), rng)
    assert_equals_gudhi(backend, volumes, construction=construction, dims=dims)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 9), (1, 9, 1), (9, 1, 1), (2, 2, 2),
                                   (1, 5, 6), (5, 1, 6), (5, 6, 1), (2, 9, 3), (10, 10, 10)])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_backend_equals_gudhi_on_thin_and_flat_volumes(backend, shape, construction):
    if max(shape) > backend[2]:
        pytest.skip(f"sides above {backend[2]} are not run on this backend here")
    rng = np.random.default_rng(seed_of(shape, construction))
    for kind in ("noise", "quantised"):
        assert_equals_gudhi(backend, make_volume(kind, (1,) + shape, rng),
                            construction=construction)


@pytest.mark.parametrize("construction", ["T", "V"])
def test_backend_equals_gudhi_on_shapes_with_voids_and_tunnels(backend, construction):
    """Shells, rings and a hollow box in a larger volume: H1 and H2 pairs that live long."""
    volume = np.ones((6, 6, 6))
    volume[1:5, 1:5, 1:5] = 0.2        # a box shell around ...
    volume[2:4, 2:4, 2:4] = 0.9        # ... a cavity
    volume[0, 1:5, 1] = volume[0, 1:5, 4] = 0.1   # a ring on the bottom face
    volume[0, 1, 1:5] = volume[0, 4, 1:5] = 0.1
    rng = np.random.default_rng(5)
    batch = np.stack([volume, volume + 0.01 * rng.random(volume.shape), 1.0 - volume])
    for superlevel in (False, True):
        assert_equals_gudhi(backend, batch, construction=construction, superlevel=superlevel)


@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("kind", ["noise", "smooth"])
def test_gudhi_volumes_equal_cripser(construction, kind):
    """The oracle itself: gudhi's 3D pairs, with H2, equal cripser's on rank volumes (distinct
    values, so each value names one voxel and the voxels are checked too)."""
    cripser = pytest.importorskip("cripser")
    rng = np.random.default_rng(seed_of(construction, kind))
    for shape in [(7, 5, 6), (3, 9, 4), (1, 6, 7), (8, 8, 8)]:
        ranks = strict_ranks(make_volume(kind, shape, rng))
        compute = cripser.computePH_T if construction == "T" else cripser.computePH
        rows = compute(ranks, maxdim=2)
        theirs = sorted((int(d), float(b), np.inf if e > 1e300 else float(e))
                        for d, b, e in rows[:, :3] if b != e)
        dg = cubical_persistence(ranks, spatial_dims=3, construction=construction,
                                 backend="gudhi")
        ours = sorted(zip(dg.dim.tolist(), dg.birth.tolist(), dg.death.tolist()))
        assert ours == theirs, shape
        assert {d for d, _, _ in ours} <= {0, 1, 2}
        # the critical voxels hold the pair's values (the F-order unravel is the right one)
        birth = ranks[tuple(dg.birth_voxel.T)]
        np.testing.assert_array_equal(birth, dg.birth)
        finite = dg.dim >= 0
        finite[dg.death_index < 0] = False
        np.testing.assert_array_equal(ranks[tuple(dg.death_voxel[finite].T)], dg.death[finite])


def test_gudhi_cell_indices_are_fortran_order():
    """gudhi numbers cells with the first axis fastest: check the conversion on an asymmetric
    shape against np.ravel_multi_index."""
    shape = (2, 3, 5)
    z, y, x = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    fortran = z + 2 * y + 6 * x
    c_order = np.arange(30).reshape(shape)
    np.testing.assert_array_equal(gudhi_to_c_order(fortran.ravel(), shape), c_order.ravel())


def test_gudhi_finds_the_void_of_a_hollow_cube_in_either_construction():
    """Independent of any backend: a shell of 26 voxels has one void in T and V; the
    construction decides which shell voxel closes it (6- versus 26-connected voids)."""
    shell = np.zeros((3, 3, 3))
    shell[1, 1, 1] = 1.0
    closing = {"T": [2, 1, 1], "V": [2, 2, 2]}
    for construction, voxel in closing.items():
        dg = cubical_persistence(shell, spatial_dims=3, construction=construction,
                                 backend="gudhi")
        assert dg.counts().tolist() == [[1, 0, 1]]
        assert dg.for_image(0, dim=2).birth_voxel.tolist() == [voxel]
        assert dg.for_image(0, dim=2).death_voxel.tolist() == [[1, 1, 1]]
