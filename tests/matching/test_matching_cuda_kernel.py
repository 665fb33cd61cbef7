"""The CUDA matching kernel's launch variants (simulator, or the GPU when there is one): block sizes, shared-memory state and
its global-memory fallback, against the dense CPU twin step for step and against ot.emd2; and
inputs whose sums overflow."""
from __future__ import annotations

import numpy as np
import pytest

from satloss_gpu.matching import MatchResult, match_batch
from satloss_gpu.matching._cpu import match_cpu, oriented_arrays
from satloss_gpu.matching._cuda import _cuda_work_shapes, match_cuda_host

from test_matching import check_result, emd2_reference, random_batch

HUGE = 1.7e308


@pytest.fixture(autouse=True)
def needs_cuda(cuda_mode):
    if cuda_mode == "none":
        pytest.skip("neither a GPU nor the CUDA simulator")


def test_launch_rule():
    from satloss_gpu.kernels.cuda import matching_sap as kernel

    assert kernel.threads_for(1) == 32
    assert kernel.threads_for(33, 1024) == 64
    assert kernel.threads_for(5000, 1024) == 1024
    assert kernel.shared_bytes(2, 3) == 8 * (3 * 2 + 5 * 5) + 5
    with pytest.raises(ValueError, match="threads"):
        kernel.launch(np.zeros((1, 1, 1)), None, None, None, None, [], [], threads=48)


@pytest.mark.parametrize("threads, use_shared", [(32, True), (32, False), (64, True),
                                                 (64, False), (96, True)])
def test_launch_variants_take_the_cpu_steps(threads, use_shared):
    """Problems wider than the block (several columns per thread) and than one warp; ties."""
    rng = np.random.default_rng([7, threads, int(use_shared)])
    for big_n, big_m, kind in [(9, 40, "int"), (35, 12, "float"), (6, 5, "int")]:
        cost, dp, dt, n, m = random_batch(rng, 2, big_n, big_m, kind, garbage=False)
        n[0], m[0] = big_n, big_m  # one problem at full width
        t_cpu, a_cpu, s_cpu = match_cpu(cost, dp, dt, n, m, return_stats=True)
        t_gpu, a_gpu, s_gpu = match_cuda_host(cost, dp, dt, n, m, return_stats=True,
                                              threads=threads, use_shared=use_shared)
        np.testing.assert_array_equal(a_gpu, a_cpu)
        np.testing.assert_array_equal(s_gpu["steps"], s_cpu["steps"])
        np.testing.assert_allclose(t_gpu, t_cpu, rtol=1e-12, atol=1e-12)
        assert (s_gpu["violation"] <= 1e-11 * s_gpu["scale"]).all()
        assert (s_cpu["steps"] > 0).any()  # searches ran, not only the greedy start
        expected = emd2_reference(cost, dp, dt, n, m)
        check_result(MatchResult(total=t_gpu, assignment=a_gpu), cost, dp, dt, n, m, expected)


def test_default_launch_uses_shared_memory_and_falls_back(monkeypatch):
    """The default rule picks shared memory when it fits and global memory when it does not."""
    from satloss_gpu.kernels.cuda import matching_sap as kernel

    seen = []
    original = kernel.sap_kernel

    class Recorder:
        def __getitem__(self, config):
            seen.append(config)
            return original[config]

    monkeypatch.setattr(kernel, "sap_kernel", Recorder())
    rng = np.random.default_rng(11)
    cost, dp, dt, n, m = random_batch(rng, 2, 5, 7, "float")
    expected = emd2_reference(cost, dp, dt, n, m)
    t_shared, _ = match_cuda_host(cost, dp, dt, n, m)
    monkeypatch.setattr(kernel, "SHARED_LIMIT", 0)
    t_global, _ = match_cuda_host(cost, dp, dt, n, m)
    assert seen[0][3] == kernel.shared_bytes(5, 7) and seen[1][3] == 0
    np.testing.assert_allclose(t_shared, expected, rtol=1e-9)
    np.testing.assert_allclose(t_global, expected, rtol=1e-9)


def _overflowing_problem():
    cost = np.array([[[-HUGE, HUGE, HUGE], [-HUGE, HUGE, HUGE], [-HUGE, HUGE, HUGE]]])
    diag = np.full((1, 3), HUGE)
    return cost, diag, diag.copy(), np.array([3]), np.array([3])


def test_match_batch_rejects_overflowing_values():
    cost, dp, dt, n, m = _overflowing_problem()
    for solver in ("cpu", "cuda", "emd"):
        with pytest.raises(ValueError, match=r"`cost` values must have magnitude at most"):
            match_batch(cost, dp, dt, n, m, solver=solver)
    import torch

    with pytest.raises(ValueError, match=r"`cost` values must have magnitude at most"):
        match_batch(*(torch.as_tensor(a) for a in (cost, dp, dt)), n, m, solver="cpu")
    small = np.zeros((1, 3, 3))
    with pytest.raises(ValueError, match=r"`diag_pred` values must have magnitude"):
        match_batch(small, dp, np.zeros((1, 3)), n, m)
    with pytest.raises(ValueError, match=r"`diag_target` values must have magnitude"):
        match_batch(small, np.zeros((1, 3)), dt, n, m)
    # Padding is not checked; float32 inputs are not affected by the float64 bound.
    np.testing.assert_allclose(match_batch(np.ones((1, 3, 3), np.float32), np.ones((1, 3)),
                                           np.ones((1, 3)), n, m).total, [3.0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_kernel_stops_on_overflow_and_fails_the_certificate():
    """Unvalidated input whose sums overflow: the search stops (it looped forever before)."""
    from satloss_gpu.kernels.cuda import matching_sap as kernel

    cost, dp, dt, n, m = _overflowing_problem()
    A, row_diag, col_diag, row_counts, col_counts, _ = oriented_arrays(cost, dp, dt, n, m)
    work = [np.zeros(shape, dtype) for shape, dtype in _cuda_work_shapes(1, 3, 3)]
    results = [np.zeros(1) for _ in range(3)] + [np.zeros(1, np.int64)]
    kernel.launch(A, row_diag, col_diag, row_counts.astype(np.int64),
                  col_counts.astype(np.int64), work, results)
    col4row, violation = work[5], results[1]
    assert (col4row[0] == -1).any(), "a row whose search overflowed stays unassigned"
    assert np.isnan(violation[0]), "the certificate fails, so the host solves again"
