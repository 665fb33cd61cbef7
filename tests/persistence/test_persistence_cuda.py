"""The GPU persistence backend against gudhi and the CPU backend.

Under the Numba CUDA simulator (no GPU) every kernel runs on small NumPy inputs; on a real GPU
the ``gpu`` tests run the same comparisons on torch CUDA batches of realistic sizes, plus
inputs that stress the parallel stages, repeated to expose races between blocks.
"""

import numpy as np
import pytest

from satloss_gpu import cubical_persistence
from satloss_gpu.persistence import get_backend

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")


def pair_tuples(diagrams):
    """Sorted (image, dim, birth_index, death_index) of every pair."""
    d = diagrams.to_numpy()
    columns = (d.image, d.dim, d.birth_index, d.death_index)
    return sorted(zip(*(np.asarray(c).tolist() for c in columns)))


def cuda_backend(pairing="halving"):
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    return CUDABackend(pairing=pairing)


def run_cuda(images, to_cuda, pairing="halving", backend=None, **options):
    """cubical_persistence with a fresh CUDA backend instance (``backend``, or one of the given
    pairing)."""
    from satloss_gpu.persistence import backends

    saved = backends._INSTANCES.get("cuda")
    backends._INSTANCES["cuda"] = backend or cuda_backend(pairing)
    try:
        return cubical_persistence(to_cuda(images), backend="cuda", **options)
    finally:
        if saved is None:
            backends._INSTANCES.pop("cuda", None)
        else:
            backends._INSTANCES["cuda"] = saved


def oracle_names():
    names = ["gudhi"]
    try:
        get_backend("cpu")
        names.append("cpu")
    except (ImportError, RuntimeError):
        pass
    return names


def assert_same_as_oracles(images, to_cuda, pairing="halving", oracles=None, **options):
    got = pair_tuples(run_cuda(images, to_cuda, pairing, **options))
    for name in oracles or oracle_names():
        expected = pair_tuples(cubical_persistence(images, backend=name, **options))
        assert got == expected, f"cuda ({pairing}) differs from {name} for {options}"
    return got


RNG = np.random.default_rng(20261101)
SMALL_CASES = {
    "noise": RNG.random((2, 9, 11)),
    "noise_f32": RNG.random((2, 10, 8)).astype(np.float32),
    "ties": RNG.integers(0, 3, (2, 9, 9)).astype(np.float64),
    "ties_f32": (RNG.integers(0, 4, (1, 10, 10)) / 4).astype(np.float32),
    "binary": (RNG.random((1, 10, 9)) < 0.45).astype(np.float32),
    "signed_zeros": np.where(RNG.random((1, 8, 8)) < 0.5, -0.0, 0.0).astype(np.float32),
    "constant": np.full((1, 6, 7), 0.25),
    "row": RNG.random((1, 1, 13)),
    "column": RNG.random((1, 13, 1)).astype(np.float32),
    "pixel": np.zeros((1, 1, 1)),
    "mixed": np.stack([RNG.random((8, 8)), np.zeros((8, 8)),
                       np.add.outer(np.arange(8.0), np.arange(8.0)),
                       (RNG.random((8, 8)) < 0.5).astype(np.float64)]),
}


@pytest.mark.parametrize("case", sorted(SMALL_CASES))
@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("superlevel", [False, True])
def test_matches_oracles(case, construction, superlevel, to_cuda):
    images = SMALL_CASES[case]
    assert_same_as_oracles(images, to_cuda, construction=construction, superlevel=superlevel)


@pytest.mark.parametrize("dims", [(0,), (1,)])
def test_single_dimension(dims, to_cuda):
    images = SMALL_CASES["noise"]
    got = assert_same_as_oracles(images, to_cuda, dims=dims)
    assert {dim for _, dim, _, _ in got} == set(dims)


@pytest.mark.parametrize("construction", ["T", "V"])
def test_sequential_pairing_matches(construction, to_cuda):
    images = np.concatenate([SMALL_CASES["noise"][:1, :8, :8], SMALL_CASES["ties"][:1, :8, :8]])
    halving = assert_same_as_oracles(images, to_cuda, construction=construction)
    sequential = pair_tuples(run_cuda(images, to_cuda, "sequential", construction=construction))
    assert sequential == halving


@pytest.mark.parametrize("pairing", ["halving", "sequential"])
def test_more_problems_than_launched_threads(pairing, to_cuda):
    # 2 * 30 problems: more than the capped grid of the pixel kernels runs threads in the
    # simulator (3 blocks of 16), so every per-problem kernel must loop over problems.
    images = RNG.random((30, 4, 5)).astype(np.float32)
    got = assert_same_as_oracles(images, to_cuda, pairing=pairing, oracles=["cpu"])
    assert {i for i, _, _, _ in got} == set(range(30))


class _ReversedOrder:
    """Stand-in for NumPy in the simulator's launcher: blocks and threads start in reverse."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def ndindex(*shape):
        return reversed(list(np.ndindex(*shape)))


@pytest.mark.parametrize("pairing", ["halving", "sequential"])
def test_reversed_block_and_thread_order(pairing, cuda_mode, monkeypatch):
    # Blocks run one after another in the simulator; reversing their order (and the start
    # order of the threads of each block) changes which writes the in-place pointer jumping,
    # and the union-finds of the pairing see first. Results must not change.
    if cuda_mode != "sim":
        pytest.skip("reorders the simulator's blocks")
    from numba.cuda.simulator import kernel as sim_kernel

    images = np.stack([RNG.random((12, 12)), RNG.integers(0, 3, (12, 12)).astype(np.float64)])
    expected = pair_tuples(cubical_persistence(images, backend="gudhi"))
    monkeypatch.setattr(sim_kernel, "np", _ReversedOrder())
    assert pair_tuples(run_cuda(images, lambda x: x, pairing)) == expected


def test_larger_image_and_single_image_input(to_cuda):
    image = RNG.random((24, 20)).astype(np.float32)
    got = assert_same_as_oracles(image, to_cuda)
    assert {i for i, _, _, _ in got} == {0}


def test_values_and_layout(to_cuda):
    image = np.array([[0.0, 0.9, 0.1], [0.9, 0.8, 0.9], [0.2, 0.9, 0.0]])
    ring = np.array([[0.0, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 0.0]])
    dg = run_cuda(np.stack([image, ring]), to_cuda).to_numpy()
    h0 = dg.for_image(0, dim=0)
    assert sorted(np.asarray(h0.death).tolist()) == [0.8, 0.8, 0.8, np.inf]
    assert len(dg.for_image(0, dim=1)) == 0
    hole = dg.for_image(1, dim=1)
    assert np.asarray(hole.birth_pixel).tolist() == [[2, 1]]
    assert np.asarray(hole.death_pixel).tolist() == [[1, 1]]
    assert np.asarray(hole.death).tolist() == [0.8]
    order = np.lexsort((np.asarray(dg.dim), np.asarray(dg.image)))
    assert np.array_equal(order, np.arange(len(order))), "pairs must be grouped by image, dim"


def test_pairing_option_is_checked():
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    with pytest.raises(ValueError, match="`pairing` must be one of"):
        CUDABackend(pairing="bogus")


def test_too_many_pixels_rejected(monkeypatch):
    from satloss_gpu.persistence.backends import cuda as cuda_module
    from satloss_gpu.kernels.cuda import _glue
    from satloss_gpu.kernels.cuda import local_pairing

    monkeypatch.setattr(local_pairing, "MAX_PIXELS", 10)
    with pytest.raises(ValueError, match="at most 10 pixels"):
        cuda_module._Pipeline(_glue.Glue(), np.zeros((1, 4, 4)), "T", (0,), cuda_backend())


def test_too_many_edges_rejected(monkeypatch, cuda_mode):
    # Slots and fresh nodes of the pairing are int32: a larger edge total must not wrap.
    if cuda_mode != "sim":
        pytest.skip("patches the simulator's glue")
    from satloss_gpu.kernels.cuda import _glue

    monkeypatch.setattr(_glue.Glue, "to_host",
                        lambda self, array: np.full(np.asarray(array).shape, 2 ** 30))
    with pytest.raises(ValueError, match="critical edges"):
        cuda_backend().pairs(np.zeros((1, 3, 3), dtype=np.float32), "T", (0,))


# ---------------------------------------------------------------------------------------------
# Real GPU: realistic sizes against the CPU backend, adversarial inputs, repeats.


def gpu_inputs(size, batch, seed):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = rng.random((batch, size, size)).astype(np.float32)
    smooth = np.stack([gaussian_filter(x, 2.0) for x in noise]).astype(np.float32)
    return noise, smooth


def adversarial_images(size):
    """Monotone ramps, a spiral, plateaus and quantised noise: long chains and many ties."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    ramp = rows * size + cols
    snake = np.where(rows % 2 == 0, ramp, rows * size + (size - 1 - cols))
    angle = np.arctan2(rows - size / 2, cols - size / 2)
    radius = np.hypot(rows - size / 2, cols - size / 2)
    spiral = np.sin(radius / 3.0 - 4 * angle)
    plateaus = np.floor(np.random.default_rng(3).random((size, size)) * 3)
    stripes = (cols % 4 < 2).astype(np.float64)
    rings = ((radius // 5) % 2).astype(np.float64)
    return np.stack([ramp, -ramp, snake, spiral, plateaus, stripes, rings]).astype(np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("size,batch", [(256, 16), (512, 8), (1024, 2)])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_gpu_matches_cpu_backend(size, batch, construction, to_cuda):
    noise, smooth = gpu_inputs(size, batch, seed=size)
    for images in (noise, smooth):
        for superlevel in (False, True):
            assert_same_as_oracles(images, to_cuda, oracles=["cpu"], construction=construction,
                                   superlevel=superlevel)


@pytest.mark.gpu
@pytest.mark.parametrize("pairing", ["halving", "sequential"])
def test_gpu_adversarial_repeated(pairing, to_cuda):
    images = adversarial_images(256)
    expected = {c: pair_tuples(cubical_persistence(images, backend="cpu", construction=c))
                for c in "TV"}
    for _ in range(5):
        for construction in "TV":
            got = pair_tuples(run_cuda(images, to_cuda, pairing, construction=construction))
            assert got == expected[construction]


@pytest.mark.gpu
def test_gpu_float64_and_small_gudhi(to_cuda):
    rng = np.random.default_rng(7)
    images = np.round(rng.random((4, 64, 48)) * 20) / 20
    assert_same_as_oracles(images, to_cuda, oracles=["gudhi", "cpu"])
    assert_same_as_oracles(images.astype(np.float32), to_cuda, oracles=["gudhi", "cpu"],
                           construction="V")


@pytest.mark.gpu
def test_gpu_results_stay_on_device():
    import torch

    images = torch.rand(3, 64, 64, device="cuda")
    dg = cubical_persistence(images, backend="cuda")
    assert dg.library == "torch" and dg.birth.is_cuda
    expected = pair_tuples(cubical_persistence(images.cpu().numpy(), backend="cpu"))
    assert pair_tuples(dg) == expected


@pytest.mark.parametrize("construction", ["T", "V"])
def test_parallel_model_matches_gudhi(construction):
    from satloss_gpu.persistence.parallel_model import model_counts, model_image_pairs

    rng = np.random.default_rng(11)
    for image in (rng.random((12, 9)), rng.integers(0, 3, (10, 10)).astype(float),
                  rng.random((1, 7))):
        dg = cubical_persistence(image, backend="gudhi", construction=construction).to_numpy()
        expected = sorted(zip(dg.dim.tolist(), dg.birth_index.tolist(),
                              dg.death_index.tolist()))
        values = image.ravel()
        got = [p for p in model_image_pairs(image, construction)
               if p[2] < 0 or values[p[1]] != values[p[2]]]
        assert got == expected
    counts = model_counts(rng.random((32, 32)), construction)
    # Every critical edge is paired: it merges two corner or two square components.
    assert counts["critical_edges"] == (counts["critical_corners"] + counts["critical_squares"]
                                        - 1)
    assert counts["halving_levels"] == (counts["critical_edges"] - 1).bit_length()
