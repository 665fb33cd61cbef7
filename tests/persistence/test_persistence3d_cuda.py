"""The GPU backend on volumes (B, D, H, W) against gudhi and the CPU backend.

Without a GPU every kernel runs in the Numba CUDA simulator (set up by ``tests/conftest.py``)
on volumes of at most 6^3 voxels; the 3D kernels are also compiled to PTX for compute
capability 9.0. On a real GPU the ``gpu`` tests run the same comparisons on torch CUDA
batches of realistic sizes.

The oracle is gudhi on the strict-rank volume (the tie rule), written here independently of
the package's gudhi backend: T-construction ``top_dimensional_cells`` with
``cofaces_of_persistence_pairs``, V-construction ``vertices`` with
``vertices_of_persistence_pairs``; gudhi's flat indices run with the first axis fastest.
Coefficients are Z/2, as in every backend (gudhi's default field differs on some volumes).
"""
import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")

RNG = np.random.default_rng(20261202)
HAS_CPU_CORE = importlib.util.find_spec("satloss_gpu.kernels.cpu.local_pairing3d") is not None
#: H1 runs on the host by the CPU core: without it only H0 and H2 can be compared.
ALL_DIMS = (0, 1, 2) if HAS_CPU_CORE else (0, 2)
needs_cpu_core = pytest.mark.skipif(not HAS_CPU_CORE, reason="the 3D CPU core is not there")


# -- oracle and helpers -----------------------------------------------------------------------
def strict_ranks(volume):
    order = np.argsort(volume.ravel(), kind="stable")
    ranks = np.empty(order.size)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(volume.shape)


def gudhi_pairs(volume, construction, dims):
    """Sorted (dim, birth voxel, death voxel) of gudhi on the rank volume, pairs whose two
    voxels have equal values dropped."""
    import gudhi

    ranks = strict_ranks(volume)
    if construction == "T":
        complex_ = gudhi.CubicalComplex(top_dimensional_cells=ranks)
    else:
        complex_ = gudhi.CubicalComplex(vertices=ranks)
    complex_.compute_persistence(homology_coeff_field=2, min_persistence=0)
    regular, essential = (complex_.cofaces_of_persistence_pairs() if construction == "T"
                          else complex_.vertices_of_persistence_pairs())

    def c_order(flat_f):
        coords = np.unravel_index(np.asarray(flat_f, dtype=np.int64).ravel(), volume.shape,
                                  order="F")
        return np.ravel_multi_index(coords, volume.shape).tolist()

    pairs = []
    for d in dims:
        if d < len(regular) and len(regular[d]):
            cells = np.asarray(regular[d]).reshape(-1, 2)
            pairs += [(d, b, e) for b, e in zip(c_order(cells[:, 0]), c_order(cells[:, 1]))]
        if d < len(essential) and len(essential[d]):
            pairs += [(d, b, -1) for b in c_order(essential[d])]
    values = volume.ravel()
    return sorted((d, b, e) for d, b, e in pairs if e < 0 or values[b] != values[e])


def volume_pairs(indices, volumes, b):
    """Sorted (dim, birth, death) of volume ``b``, pairs of zero persistence dropped."""
    image = np.asarray(indices.image)
    keep = image == b
    values = np.asarray(volumes[b]).ravel()
    rows = zip(np.asarray(indices.dim)[keep].tolist(),
               np.asarray(indices.birth_index)[keep].tolist(),
               np.asarray(indices.death_index)[keep].tolist())
    return sorted((d, s, e) for d, s, e in rows if e < 0 or values[s] != values[e])


def cuda_backend(**options):
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    return CUDABackend(**options)


def cuda_pairs(volumes, construction, dims=ALL_DIMS, backend=None, to_device=None):
    """The backend's pairs of ``volumes`` (sublevel; negate for superlevel), on NumPy results."""
    backend = backend or cuda_backend()
    work = backend.asarray(to_device(volumes) if to_device else volumes)
    indices = backend.pairs(work, construction, tuple(dims))
    return _to_numpy(indices)


def _to_numpy(indices):
    from satloss_gpu.persistence.backends import PairIndices

    def host(array):
        return array.cpu().numpy() if hasattr(array, "cpu") else np.asarray(array)

    return PairIndices(*(host(getattr(indices, name)) for name in
                         ("image", "dim", "birth_index", "death_index", "last_index")))


def assert_matches_gudhi(volumes, construction, dims=ALL_DIMS, **options):
    indices = cuda_pairs(volumes, construction, dims, **options)
    for b in range(volumes.shape[0]):
        expected = gudhi_pairs(volumes[b], construction, dims)
        assert volume_pairs(indices, volumes, b) == expected, (construction, b)
    return indices


def volume_cases():
    rng = np.random.default_rng(7)
    ramp = np.add.outer(np.add.outer(np.arange(4.0), np.arange(4.0)), np.arange(4.0))
    return {
        "noise": rng.random((2, 4, 5, 3)),
        "noise_f32": rng.random((1, 5, 4, 4)).astype(np.float32),
        "ties": rng.integers(0, 3, (2, 4, 4, 4)).astype(np.float64),
        "binary": (rng.random((1, 5, 4, 5)) < 0.5).astype(np.float32),
        "constant": np.full((1, 3, 4, 3), 0.5),
        "thin_x": rng.random((1, 1, 1, 7)),
        "thin_z": rng.random((1, 6, 1, 1)).astype(np.float32),
        "slab": rng.integers(0, 2, (1, 1, 4, 5)).astype(np.float64),
        "voxel": np.zeros((1, 1, 1, 1)),
        "signed_zeros": np.where(rng.random((1, 4, 3, 4)) < 0.5, -0.0, 0.0).astype(np.float32),
        "ties_f32": (rng.integers(0, 4, (1, 4, 5, 4)) / 4).astype(np.float32),
        "mixed": np.stack([rng.random((4, 4, 4)), np.zeros((4, 4, 4)), ramp]),
    }


CASES = volume_cases()


# -- the whole pipeline against gudhi -----------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("superlevel", [False, True])
def test_matches_gudhi(case, construction, superlevel, cuda_mode):
    if cuda_mode != "sim":
        pytest.skip("NumPy input: simulator only (see the gpu tests)")
    volumes = -CASES[case] if superlevel else CASES[case]
    indices = assert_matches_gudhi(volumes, construction)
    assert set(np.asarray(indices.image).tolist()) == set(range(volumes.shape[0]))


@pytest.mark.parametrize("dims", [(0,), (1,), (2,), (0, 2), (1, 2)])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_single_dimensions(dims, construction, cuda_mode):
    if cuda_mode != "sim":
        pytest.skip("NumPy input: simulator only")
    if 1 in dims and not HAS_CPU_CORE:
        pytest.skip("H1 needs the 3D CPU core")
    volumes = RNG.random((2, 4, 4, 5))
    indices = assert_matches_gudhi(volumes, construction, dims)
    assert set(np.asarray(indices.dim).tolist()) == set(dims)


@pytest.mark.parametrize("options", [dict(pairing="sequential"), dict(base_edges=1),
                                     dict(base_edges=2 ** 20)])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_pairing_variants(options, construction, cuda_mode):
    if cuda_mode != "sim":
        pytest.skip("NumPy input: simulator only")
    volumes = np.stack([RNG.random((5, 4, 4)), RNG.integers(0, 3, (5, 4, 4)).astype(float)])
    assert_matches_gudhi(volumes, construction, backend=cuda_backend(**options))


@pytest.mark.parametrize("pairing", ["halving", "sequential"])
def test_more_volumes_than_launched_threads(pairing, cuda_mode):
    # 2 * 20 segments and 240 voxels: more than the simulator's capped grid runs threads
    # (3 blocks of 16), so every kernel must loop over voxels, items and segments.
    if cuda_mode != "sim":
        pytest.skip("NumPy input: simulator only")
    volumes = RNG.random((20, 2, 3, 2)).astype(np.float32)
    volumes[::3] = np.round(volumes[::3])
    assert_matches_gudhi(volumes, "T", backend=cuda_backend(pairing=pairing))


class _ReversedOrder:
    """Stand-in for NumPy in the simulator's launcher: blocks and threads start in reverse."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def ndindex(*shape):
        return reversed(list(np.ndindex(*shape)))


@pytest.mark.parametrize("pairing", ["halving", "sequential"])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_reversed_block_and_thread_order(pairing, construction, cuda_mode, monkeypatch):
    # Reversed blocks and threads change what the in-place pointer jumping, the counting
    # atomics and the lock-free union-find see first. Results must not change.
    if cuda_mode != "sim":
        pytest.skip("reorders the simulator's blocks")
    from numba.cuda.simulator import kernel as sim_kernel

    volumes = np.stack([RNG.random((4, 5, 4)), RNG.integers(0, 3, (4, 5, 4)).astype(float)])
    monkeypatch.setattr(sim_kernel, "np", _ReversedOrder())
    backend = cuda_backend(pairing=pairing, base_edges=2)
    assert_matches_gudhi(volumes, construction, backend=backend)


def test_sort_in_chunks_of_segments(monkeypatch, cuda_mode):
    # When segment number, order word and position do not fit one 64-bit key, the edges and
    # faces are sorted in chunks of segments; force chunks of two segments.
    if cuda_mode != "sim":
        pytest.skip("patches the simulator's key width")
    from satloss_gpu.persistence.backends import _cuda3d

    volumes = RNG.random((3, 4, 3, 4)).astype(np.float32)
    expected = cuda_pairs(volumes, "T")
    chunks = []
    real_sort = _cuda3d.Pipeline3D._sort

    def narrow_sort(self):
        self.key_bits = 32 + max(int(np.diff(self.seg_start_host).max() - 1).bit_length(), 1) + 1
        real_sort(self)
        chunks.append(self.sort_chunk)

    monkeypatch.setattr(_cuda3d.Pipeline3D, "_sort", narrow_sort)
    got = cuda_pairs(volumes, "T")
    assert chunks == [2]
    for name in ("image", "dim", "birth_index", "death_index", "last_index"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


# -- the kernels' intermediate results ----------------------------------------------------------
def rule_counts(volume, construction):
    """Per voxel (c0, c1, c2, c3) critical cells of the shared rule, on the CPU."""
    from satloss_gpu.kernels.common import local_pairing3d as rule

    depth, height, width = volume.shape
    flat = (-volume if construction == "V" else volume).ravel()
    sign = -1 if construction == "V" else 1
    counts = np.zeros((flat.size, 4), dtype=np.int64)
    for z, y, x in np.ndindex(volume.shape):
        mask = rule.neighbour_mask26.py_func(flat, sign, construction == "V", z, y, x, depth,
                                             height, width)
        counts[(z * height + y) * width + x] = rule.critical_counts(mask)
    return counts


@pytest.mark.parametrize("construction", ["T", "V"])
def test_voxel_kernel_counts_and_gradient_roots(construction, cuda_mode):
    # The voxel kernel's critical cells are the rule's (computed on the CPU); pointer jumping
    # sends every corner to a critical corner (or the exterior corner) and every voxel to a
    # critical cube (or the outside).
    if cuda_mode != "sim":
        pytest.skip("reads the simulator's buffers")
    from satloss_gpu.kernels.cuda._glue import Glue
    from satloss_gpu.persistence.backends._cuda3d import Pipeline3D

    volumes = np.stack([RNG.random((4, 3, 5)), RNG.integers(0, 2, (4, 3, 5)).astype(float)])
    pipeline = Pipeline3D(Glue(), volumes, construction, (0, 2), cuda_backend())
    pipeline._order_words()
    pipeline._count()
    pipeline._emit()
    pipeline._jump()
    depth, height, width = volumes.shape[1:]
    n_corners = (depth + 1) * (height + 1) * (width + 1) + 1
    for b, volume in enumerate(volumes):
        counts = rule_counts(volume, construction)
        assert pipeline.critical_corners[b] == counts[:, 0].sum()
        assert pipeline.edge_counts[b] == counts[:, 1].sum()
        assert pipeline.face_counts[b] == counts[:, 2].sum()
        assert pipeline.critical_cubes[b] == counts[:, 3].sum()
        corner_roots = np.asarray(pipeline.corner_parent[0][b * n_corners:(b + 1) * n_corners])
        roots = set(corner_roots.tolist()) - {(b + 1) * n_corners - 1}
        assert len(roots) == counts[:, 0].sum()
        voxel_roots = np.asarray(
            pipeline.voxel_parent[0][b * (volume.size + 1):(b + 1) * (volume.size + 1)])
        roots = set(voxel_roots.tolist()) - {(b + 1) * (volume.size + 1) - 1}
        critical_cubes = {b * (volume.size + 1) + v for v in np.flatnonzero(counts[:, 3])}
        assert roots == critical_cubes


@pytest.mark.parametrize("construction", ["T", "V"])
def test_first_last_voxels_and_statistics(construction, cuda_mode):
    if cuda_mode != "sim":
        pytest.skip("calls the backend on NumPy input")
    volumes = np.stack([RNG.random((3, 4, 5)), np.round(RNG.random((3, 4, 5)) * 2)])
    backend = cuda_backend()
    indices = cuda_pairs(volumes, construction, (0, 2), backend=backend)
    order = [np.lexsort((np.arange(v.size), v.ravel())) for v in volumes]
    np.testing.assert_array_equal(indices.last_index, [o[-1] for o in order])
    essential = indices.death_index < 0
    np.testing.assert_array_equal(indices.birth_index[essential], [o[0] for o in order])
    np.testing.assert_array_equal(indices.image[essential], [0, 1])
    assert np.all(np.diff(indices.image * 3 + indices.dim) >= 0), "grouped by volume, dim"
    stats = backend.last_stats
    counts = sum(rule_counts(v, construction).sum(axis=0) for v in volumes)
    assert stats["critical_edges"] == counts[1] and stats["critical_faces"] == counts[2]


# -- against the CPU backend and through the public API ------------------------------------------
@needs_cpu_core
@pytest.mark.parametrize("construction", ["T", "V"])
def test_same_arrays_as_cpu_backend(construction, cuda_mode):
    # Same pairs in the same packed order, zero-persistence pairs included.
    if cuda_mode != "sim":
        pytest.skip("NumPy input: simulator only")
    from satloss_gpu.persistence.backends.cpu import CPUBackend

    volumes = np.stack([RNG.random((4, 4, 5)), RNG.integers(0, 3, (4, 4, 5)).astype(float),
                        np.zeros((4, 4, 5))])
    for dims in ((0, 1, 2), (1,), (0, 2)):
        got = cuda_pairs(volumes, construction, dims)
        expected = _to_numpy(CPUBackend().pairs(volumes, construction, dims))
        for name in ("image", "dim", "birth_index", "death_index", "last_index"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name),
                                          err_msg=f"{name} {dims}")


def _public_api_takes_volumes():
    from satloss_gpu import cubical_persistence

    return "spatial_dims" in inspect.signature(cubical_persistence).parameters


@pytest.mark.parametrize("construction", ["T", "V"])
def test_public_api_equals_gudhi_and_cpu(construction, to_cuda):
    if not _public_api_takes_volumes():
        pytest.skip("cubical_persistence does not take volumes yet")
    from satloss_gpu import cubical_persistence
    from satloss_gpu.persistence import backends

    volumes = np.stack([RNG.random((5, 4, 4)), np.round(RNG.random((5, 4, 4)) * 3)])
    options = dict(spatial_dims=3, construction=construction, superlevel=True,
                   dims=ALL_DIMS)
    saved = backends._INSTANCES.pop("cuda", None)
    try:
        got = cubical_persistence(to_cuda(volumes), backend="cuda", **options).to_numpy()
    finally:
        if saved is not None:
            backends._INSTANCES["cuda"] = saved
    names = ["gudhi"] + (["cpu"] if HAS_CPU_CORE else [])
    for name in names:
        expected = cubical_persistence(volumes, backend=name, **options).to_numpy()
        for field in ("image", "dim", "birth", "death", "birth_pixel", "death_pixel"):
            a, e = np.asarray(getattr(got, field)), np.asarray(getattr(expected, field))
            key = np.lexsort((*np.asarray(got.death_pixel).T, *np.asarray(got.birth_pixel).T,
                              got.dim, got.image))
            key_e = np.lexsort((*np.asarray(expected.death_pixel).T,
                                *np.asarray(expected.birth_pixel).T, expected.dim,
                                expected.image))
            np.testing.assert_array_equal(a[key], e[key_e], err_msg=f"{field} vs {name}")


# -- H1 on the device (stage A) and the host (stage B) -------------------------------------------
def assert_device_h1_matches(volumes, construction, dims=ALL_DIMS, where="device"):
    """h1="device" gives the same arrays as the CPU backend (or, without it, H1 as gudhi)."""
    backend = cuda_backend(h1="device")
    got = cuda_pairs(volumes, construction, dims, backend=backend)
    if 1 in dims and backend.last_stats["h1_pairs"]:
        assert backend.last_stats["h1"] == where
        assert (backend.last_stats["h1_terms"] > 0) == (where == "device")
    if HAS_CPU_CORE:
        from satloss_gpu.persistence.backends.cpu import CPUBackend

        expected = _to_numpy(CPUBackend().pairs(volumes, construction, dims))
        for name in ("image", "dim", "birth_index", "death_index", "last_index"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name),
                                          err_msg=name)
    for b in range(volumes.shape[0]):
        assert volume_pairs(got, volumes, b) == gudhi_pairs(volumes[b], construction, dims)


@pytest.mark.parametrize("case", ["noise", "ties", "binary", "thin_x", "mixed"])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_device_h1(case, construction, cuda_mode):
    if cuda_mode != "sim":
        pytest.skip("NumPy input: simulator only")
    assert_device_h1_matches(CASES[case], construction, (0, 1, 2) if HAS_CPU_CORE else (1,))


def test_device_h1_heap_overflow_falls_back_to_the_host(monkeypatch, cuda_mode):
    # A column whose Morse boundary does not fit its heap must not truncate anything: the
    # whole H1 is then computed by the host path.
    if cuda_mode != "sim" or not HAS_CPU_CORE:
        pytest.skip("shrinks the simulator's heaps; the fallback is the CPU core")
    from satloss_gpu.kernels.cuda import morse_h1
    from satloss_gpu.persistence.backends import _cuda3d

    monkeypatch.setattr(morse_h1, "HEAP_CAPACITY", 3)
    fallbacks = []
    real_start = _cuda3d.Pipeline3D._start_h1

    def start(self):
        fallbacks.append(self.backend.h1)
        return real_start(self)

    monkeypatch.setattr(_cuda3d.Pipeline3D, "_start_h1", start)
    volumes = np.stack([RNG.random((4, 4, 4)), RNG.random((4, 4, 4))])
    for construction in "TV":
        assert_device_h1_matches(volumes, construction, where="host")
    assert fallbacks == ["device", "device"]


def test_h1_option_is_checked():
    with pytest.raises(ValueError, match="`h1` must be one of"):
        cuda_backend(h1="gpu")


# -- limits -------------------------------------------------------------------------------------
def test_too_many_voxels_rejected(monkeypatch):
    from satloss_gpu.kernels.cuda import local_pairing3d
    from satloss_gpu.persistence.backends._cuda3d import check_volume_shape

    check_volume_shape((2, 64, 64, 64))
    with pytest.raises(ValueError, match="split it"):
        check_volume_shape((2 ** 16, 32, 32, 32))
    monkeypatch.setattr(local_pairing3d, "MAX_VOXELS", 10)
    with pytest.raises(ValueError, match="`images` must have at most 10 voxels"):
        cuda_backend().check_size((1, 3, 2, 2))


# -- PTX ----------------------------------------------------------------------------------------
PTX_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    os.environ.setdefault("NUMBA_FORCE_CUDA_CC", "9.0")
    import numba.cuda.cuda_paths as cuda_paths
    import numba.cuda.dispatcher as dispatcher

    class _Device:
        compute_capability = (9, 0)
        id = 0

    dispatcher.get_current_device = lambda: _Device()
    try:  # NVRTC is not needed to emit PTX; machines without it still compile
        cuda_paths._get_nvrtc_path()
    except Exception:
        cuda_paths._get_nvrtc_path = lambda: ("<not needed>", None)
    from numba import cuda, types as t
    from satloss_gpu.kernels.cuda import local_pairing3d as lp3
    from satloss_gpu.kernels.cuda import morse_h1 as mh

    u64, u32, i32, i64 = t.uint64[::1], t.uint32[::1], t.int32[::1], t.int64[::1]
    s = t.int64
    signatures = {
        lp3.voxel_kernel: (u32, s, s, s, s, s, i64, i64, u64, u64, i32, s, i32, i32, u32, i32,
                           i32),
        lp3.item_ends_kernel: (u64, i32, i64, i32, s, s, u32, s, s, s, i32, i32, i32, i32,
                               u64),
        lp3.assemble3d_kernel: (u64, i32, i64, i32, s, s, u64, i64, i64, i64, i64, u64, u64,
                                i64, i64, i64, i64, i64, s, i64, i64, i64, i64, i64),
    }
    signatures.update({
        mh.negative_kernel: (u64, i32, i64, s, s, u64, s, i32),
        mh.column_kernel: (u64, i32, i64, i32, s, s, u32, s, s, s, u64, i64, i64, i64, i32,
                           i64, s, i64, i64, i64, u64, i64, i32),
    })
    missing = {name for name in lp3.__all__ + mh.__all__ if name.endswith("_kernel")}
    missing -= {k.py_func.__name__ for k in signatures}
    assert not missing, missing
    for kernel, signature in signatures.items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        assert ".target sm_90" in ptx, kernel.py_func.__name__
        print("compiled", kernel.py_func.__name__)
    """
)


def test_3d_kernels_compile_to_ptx_for_hopper():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    result = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True,
                            env=env, timeout=600)
    if "libnvvm" in result.stderr and "not found" in result.stderr.lower():
        pytest.skip("libNVVM is not installed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 5


# -- real GPU -----------------------------------------------------------------------------------
def gpu_volumes(size, batch, seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = rng.random((batch, size, size, size)).astype(np.float32)
    smooth = np.stack([gaussian_filter(v, 2.0) for v in noise]).astype(np.float32)
    binary = (noise > 0.6).astype(np.float32)
    return noise, smooth, binary


@pytest.mark.gpu
@needs_cpu_core
@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("pairing", ["halving", "sequential"])
def test_gpu_same_arrays_as_cpu_backend(construction, pairing, to_cuda):
    from satloss_gpu.persistence.backends.cpu import CPUBackend

    for volumes in gpu_volumes(32, 4, seed=32):
        expected = _to_numpy(CPUBackend().pairs(volumes, construction, (0, 1, 2)))
        for _ in range(3):
            got = cuda_pairs(volumes, construction, (0, 1, 2),
                             backend=cuda_backend(pairing=pairing), to_device=to_cuda)
            for name in ("image", "dim", "birth_index", "death_index", "last_index"):
                np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


@pytest.mark.gpu
@pytest.mark.parametrize("construction", ["T", "V"])
def test_gpu_small_volumes_match_gudhi(construction, to_cuda):
    volumes = np.round(RNG.random((3, 12, 10, 11)) * 8) / 8
    indices = cuda_pairs(volumes, construction, ALL_DIMS, to_device=to_cuda)
    for b in range(volumes.shape[0]):
        assert volume_pairs(indices, volumes, b) == gudhi_pairs(volumes[b], construction,
                                                                ALL_DIMS)
