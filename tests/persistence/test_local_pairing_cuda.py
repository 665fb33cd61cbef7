"""The local-pairing GPU pipeline (``backend="cuda"``) against gudhi and the CPU backend.

Without a GPU every kernel runs in the Numba CUDA simulator on small NumPy batches (the sort
runs on the host there, with NumPy); the kernels are also compiled to PTX for compute
capability 9.0. On a real GPU the same comparisons run on torch CUDA tensors.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satloss_gpu import cubical_persistence
from test_persistence_cuda import _ReversedOrder, pair_tuples, run_cuda
from test_persistence_cuda import assert_same_as_oracles as assert_matches

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")

RNG = np.random.default_rng(20261126)


def random_shapes(count, low, high):
    return [tuple(int(x) for x in RNG.integers(low, high + 1, 2)) for _ in range(count)]


CASES = {
    "noise": lambda: RNG.random((2, 11, 9)),
    "ties": lambda: RNG.integers(0, 3, (2, 10, 10)).astype(np.float64),
    "binary": lambda: (RNG.random((2, 12, 9)) < 0.5).astype(np.float32),
    "constant": lambda: np.full((1, 5, 6), 0.5),
    "row": lambda: RNG.random((2, 1, 17)),
    "column": lambda: RNG.random((2, 17, 1)),
    "pixel": lambda: np.ones((1, 1, 1)),
    # very different edge lists in one batch: none, few, many
    "mixed": lambda: np.stack([np.zeros((9, 9)), np.add.outer(np.arange(9.0), np.arange(9.0)),
                               RNG.random((9, 9)), (RNG.random((9, 9)) < 0.3) * 1.0]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("superlevel", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pairing", ["halving", "sequential"])
def test_matches_gudhi_and_cpu(case, construction, superlevel, dtype, pairing, to_cuda):
    images = CASES[case]().astype(dtype)
    got = assert_matches(images, to_cuda, pairing, construction=construction,
                         superlevel=superlevel)
    assert {i for i, _, _, _ in got} == set(range(images.shape[0]))


@pytest.mark.parametrize("construction", ["T", "V"])
def test_random_shapes(construction, to_cuda):
    for height, width in random_shapes(6, 1, 24):
        images = RNG.random((2, height, width)).astype(np.float32)
        images[1] = np.round(images[1] * 4) / 4  # ties
        assert_matches(images, to_cuda, construction=construction)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    levels=st.integers(1, 5),
    construction=st.sampled_from(["T", "V"]),
    superlevel=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_quantised_batches_equal_gudhi(batch, height, width, levels, construction,
                                                superlevel, seed, to_cuda):
    """Few distinct values: many ties, plateaus and zero-persistence pairs."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, levels, (batch, height, width)).astype(np.float32)
    assert_matches(images, to_cuda, oracles=["gudhi"], construction=construction,
                   superlevel=superlevel)


@pytest.mark.parametrize("dims", [(0,), (1,)])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_single_dimension(dims, construction, to_cuda):
    images = RNG.random((2, 10, 12))
    got = assert_matches(images, to_cuda, dims=dims, construction=construction)
    assert {dim for _, dim, _, _ in got} == set(dims)


def test_larger_images(to_cuda):
    images = np.stack([RNG.random((48, 40)), np.round(RNG.random((48, 40)) * 3)])
    for construction in "TV":
        assert_matches(images.astype(np.float32), to_cuda, construction=construction)


@pytest.mark.parametrize("base_edges", [1, 4, 2 ** 20])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_halving_down_to_any_base(base_edges, construction, to_cuda):
    # The halving runs levels down to runs of base_edges edges, each then solved by one
    # thread: from every level in parallel (1) to one thread per image (2**20).
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    images = np.stack([RNG.random((20, 18)), np.round(RNG.random((20, 18)) * 3)])
    expected = pair_tuples(cubical_persistence(images, backend="gudhi",
                                               construction=construction))
    backend = CUDABackend(base_edges=base_edges)
    got = run_cuda(images, to_cuda, backend=backend, construction=construction)
    assert pair_tuples(got) == expected


@pytest.mark.parametrize("base_edges", [0, 3, 2.0, True])
def test_base_edges_is_checked(base_edges):
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    with pytest.raises(ValueError, match="`base_edges` must be a power of two"):
        CUDABackend(base_edges=base_edges)


@pytest.mark.parametrize("pairing", ["halving", "sequential"])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_reversed_block_and_thread_order(pairing, construction, cuda_mode, monkeypatch):
    # Blocks run one after another in the simulator; reversing their order and the start
    # order of the threads changes what the in-place pointer jumping, the compaction's
    # atomics and the lock-free union-find see first. Results must not change.
    if cuda_mode != "sim":
        pytest.skip("reorders the simulator's blocks")
    from numba.cuda.simulator import kernel as sim_kernel
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    images = np.stack([RNG.random((14, 13)), RNG.integers(0, 3, (14, 13)).astype(np.float64)])
    expected = pair_tuples(cubical_persistence(images, backend="gudhi",
                                               construction=construction))
    monkeypatch.setattr(sim_kernel, "np", _ReversedOrder())
    backend = CUDABackend(pairing=pairing, base_edges=2)  # exercise the parallel levels
    got = run_cuda(images, lambda x: x, backend=backend, construction=construction)
    assert pair_tuples(got) == expected


def test_sort_in_chunks_of_images(monkeypatch, cuda_mode, to_cuda):
    # When the image number, the order word and the position do not fit one 64-bit key, the
    # batch is sorted in chunks of images; force chunks of two images.
    if cuda_mode != "sim":
        pytest.skip("patches the simulator's key width")
    from satloss_gpu.persistence.backends import cuda as cuda_module

    images = RNG.random((5, 8, 9)).astype(np.float32)
    expected = pair_tuples(run_cuda(images, to_cuda))
    calls = []
    real_sort = cuda_module._Pipeline._sort

    def narrow_sort(self):
        self.key_bits = 32 + max(int(int(self.edge_counts.max()) - 1).bit_length(), 1) + 1
        calls.append(self.key_bits)
        real_sort(self)
        calls.append(self.sort_chunk)

    monkeypatch.setattr(cuda_module._Pipeline, "_sort", narrow_sort)
    assert pair_tuples(run_cuda(images, to_cuda)) == expected
    assert calls[1] == 2


@pytest.mark.parametrize("construction", ["T", "V"])
def test_statistics_first_and_last_pixels(construction, cuda_mode):
    if cuda_mode != "sim":
        pytest.skip("calls the backend on NumPy input")
    from satloss_gpu.persistence.backends.cuda import CUDABackend
    from satloss_gpu.persistence.parallel_model import model_counts

    images = np.stack([RNG.random((12, 10)), np.round(RNG.random((12, 10)) * 2)])
    backend = CUDABackend()
    indices = backend.pairs(backend.asarray(images), construction, (0, 1))
    order = [np.lexsort((np.arange(image.size), image.ravel())) for image in images]
    np.testing.assert_array_equal(indices.last_index, [o[-1] for o in order])
    essential = np.asarray(indices.death_index) < 0
    np.testing.assert_array_equal(np.asarray(indices.birth_index)[essential],
                                  [o[0] for o in order])
    counts = [model_counts(image, construction)["critical_edges"] for image in images]
    stats = backend.last_stats
    assert stats["critical_edges"] == sum(counts)
    assert stats["longest_list"] == max(counts)
    assert stats["halving_levels"] == (max(counts) - 1).bit_length()


def test_every_glue_overrides_the_array_operations():
    # A method a GPU glue forgot to override would run NumPy code on device arrays.
    from satloss_gpu.kernels.cuda import _glue

    operations = ["alloc", "fill", "arange", "from_host", "cumsum", "max_item", "to_host",
                  "stack_i64", "merged_flags", "sort_u64", "argsort_rows", "float32_bits",
                  "view", "launcher", "sm_count"]
    for glue in (_glue.TorchGlue, _glue.CupyGlue):
        missing = [name for name in operations if name not in vars(glue)]
        assert not missing, (glue.__name__, missing)


def test_torch_glue_on_host_tensors(monkeypatch):
    # The torch glue's sizes, flags and its sort without CuPy, on CPU tensors: the unsigned
    # order of 64-bit keys stored in signed tensors.
    import torch

    from satloss_gpu.kernels.cuda import _glue

    glue = _glue.TorchGlue(torch.device("cpu"))
    keys = np.array([5, 2 ** 63 + 1, 3, 2 ** 64 - 1, 2 ** 63, 7], dtype=np.uint64)
    tensor = glue.from_host("u64", keys)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    glue.sort_u64(tensor, 1, 5)
    expected = keys.copy()
    expected[1:5].sort()
    assert np.array_equal(tensor.numpy().view(np.uint64), expected)
    no_merge = np.array([2 ** 64 - 1, 4, 2 ** 63], dtype=np.uint64)
    flags = glue.merged_flags(glue.from_host("u64", no_merge), 3)
    assert flags.tolist() == [0, 1, 1]
    stacked = glue.to_host(glue.stack_i64(torch.tensor([1, 2], dtype=torch.int32),
                                          torch.tensor([3], dtype=torch.int64)))
    assert stacked.tolist() == [1, 2, 3] and stacked.dtype == np.int64


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
    from satloss_gpu.kernels.cuda import local_pairing as lp

    u64, u32, i32, i64 = t.uint64[::1], t.uint32[::1], t.int32[::1], t.int64[::1]
    s = t.int64
    level = (i32, i32, i32, i64, s, i32)
    signatures = {
        lp.float32_order_kernel: (u32, s, u32),
        lp.rank_order_kernel: (t.int64[:, ::1], s, s, u32),
        lp.pixel_kernel: (u32, i32, s, s, s, s, i64, i32, u64, u64, i32, i32, i32, u32, i32,
                          i32),
        lp.jump_kernel: (i32,),
        lp.edge_key_kernel: (u32, i32, i64, s, s, s, u64),
        lp.corner_ends_kernel: (u64, i32, i64, i32, s, u32, s, s, s, i32, i32, i32, u64),
        lp.square_ends_kernel: (u64, i32, i64, i32, s, u32, s, s, s, i32, u64, i64, i64, i32,
                                i32, i32, u64),
        lp.halving_slots_kernel: (i32, i32, i32),
        lp.halving_rename_kernel: (i32, i32, i32, u64, u64),
        lp.halving_reset_kernel: level + (i32, u64, u64),
        lp.halving_union_kernel: level,
        lp.halving_collect_kernel: level + (i32, u64, u64),
        lp.halving_contract_kernel: level + (i32, u64, u64, s),
        lp.halving_base_kernel: level[:5] + (u64, i32, u64),
        lp.sequential_pass_kernel: (i32, i32, i64, u64, i32, u64),
        lp.assemble_kernel: (s, u64, i32, i64, i32, s, s, u64, i64, u64, i64, i64, i64, i64,
                             u64, u64, s, s, i64, i64, i64, i64, i64),
    }
    missing = set(lp.__all__) - {k.py_func.__name__ for k in signatures}
    missing -= {"MAX_PIXELS", "NO_MERGE"}
    assert not missing, missing
    for kernel, signature in signatures.items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        assert ".target sm_90" in ptx, kernel.py_func.__name__
        print("compiled", kernel.py_func.__name__)
    """
)


@pytest.mark.slow
def test_every_kernel_compiles_to_ptx_for_hopper():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    result = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True,
                            env=env, timeout=900)
    if "libnvvm" in result.stderr and "not found" in result.stderr.lower():
        pytest.skip("libNVVM is not installed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 16


# ---------------------------------------------------------------------------------------------
# Real GPU: realistic sizes against the CPU backend, repeated to expose races between blocks.


@pytest.mark.gpu
@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("pairing", ["halving", "sequential"])
def test_gpu_matches_cpu(construction, pairing, to_cuda):
    from scipy.ndimage import gaussian_filter

    noise = RNG.random((8, 256, 256)).astype(np.float32)
    smooth = np.stack([gaussian_filter(x, 3.0) for x in noise]).astype(np.float32)
    binary = (noise > 0.6).astype(np.float32)
    for images in (noise, smooth, binary):
        expected = pair_tuples(cubical_persistence(images, backend="cpu",
                                                   construction=construction))
        for _ in range(3):
            got = pair_tuples(run_cuda(images, to_cuda, pairing, construction=construction))
            assert got == expected
