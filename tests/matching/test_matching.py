"""Tests of satloss_gpu.matching: every solver against POT's ot.emd2 on the augmented problem."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import ot
import pytest
import torch

from satloss_gpu.matching import MatchResult, assignment_cost, match_batch

RTOL = 1e-6


# ----------------------------------------------------------------------------- helpers


def emd2_reference(cost, diag_pred, diag_target, n, m) -> np.ndarray:
    """Optimal totals from ot.emd2 on the (n+1) x (m+1) problem, built independently."""
    totals = []
    for b in range(cost.shape[0]):
        nb, mb = int(n[b]), int(m[b])
        big = np.zeros((nb + 1, mb + 1))
        big[:nb, :mb] = cost[b, :nb, :mb]
        big[:nb, mb] = diag_pred[b, :nb]
        big[nb, :mb] = diag_target[b, :mb]
        a = np.r_[np.ones(nb), float(mb)]
        w = np.r_[np.ones(mb), float(nb)]
        if nb == 0 or mb == 0:
            totals.append(float(big[:nb, mb].sum() + big[nb, :mb].sum()))
        else:
            totals.append(float(ot.emd2(a, w, big, numItermax=10**7)))
    return np.array(totals)


def random_batch(rng, batch, big_n, big_m, kind="float", dtype=np.float64, garbage=True):
    """A padded batch with random true sizes; padding filled with garbage (NaN included)."""
    n = rng.integers(0, big_n + 1, batch)
    m = rng.integers(0, big_m + 1, batch)
    if kind == "int":
        cost = rng.integers(0, 4, (batch, big_n, big_m)).astype(dtype)
        dp = rng.integers(0, 4, (batch, big_n)).astype(dtype)
        dt = rng.integers(0, 4, (batch, big_m)).astype(dtype)
    elif kind == "to_diagonal":
        cost = (10 + rng.random((batch, big_n, big_m))).astype(dtype)
        dp = rng.random((batch, big_n)).astype(dtype)
        dt = rng.random((batch, big_m)).astype(dtype)
    else:
        cost = rng.random((batch, big_n, big_m)).astype(dtype)
        dp = (0.5 * rng.random((batch, big_n))).astype(dtype)
        dt = (0.5 * rng.random((batch, big_m))).astype(dtype)
    if garbage:
        for b in range(batch):
            cost[b, n[b]:, :] = np.nan
            cost[b, :, m[b]:] = -1e30
            dp[b, n[b]:] = np.inf
            dt[b, m[b]:] = np.nan
    return cost, dp, dt, n, m


def check_result(res, cost, dp, dt, n, m, expected):
    """Totals equal ``expected``; the assignment is a valid matching with that total."""
    total = np.asarray(res.total, dtype=np.float64)
    assignment = np.asarray(res.assignment)
    assert assignment.dtype == np.int64
    assert assignment.shape == cost.shape[:2]
    np.testing.assert_allclose(total, expected, rtol=RTOL, atol=1e-9)
    for b in range(cost.shape[0]):
        row = assignment[b]
        assert (row[n[b]:] == -1).all()
        used = row[: n[b]][row[: n[b]] >= 0]
        assert (used < m[b]).all()
        assert len(np.unique(used)) == len(used), "a target point is matched twice"
    clean = [np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
             for a in (cost, dp, dt)]
    recomputed = assignment_cost(*clean, n, m, assignment)
    np.testing.assert_allclose(recomputed, expected, rtol=RTOL, atol=1e-9)


def solve_and_check(solver, rng, batch, big_n, big_m, kind, dtype=np.float64):
    cost, dp, dt, n, m = random_batch(rng, batch, big_n, big_m, kind, dtype)
    res = match_batch(cost, dp, dt, n, m, solver=solver)
    assert isinstance(res, MatchResult)
    assert np.asarray(res.total).dtype == dtype
    check_result(res, cost, dp, dt, n, m, emd2_reference(cost, dp, dt, n, m))
    return res


# ----------------------------------------------------------------------------- every solver


@pytest.mark.parametrize("kind", ["float", "int", "to_diagonal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", ["emd", "cpu", "auto"])
def test_host_solvers_match_emd2(solver, kind, dtype):
    rng = np.random.default_rng([1, len(kind), np.dtype(dtype).itemsize])
    for big_n, big_m in [(7, 3), (3, 9), (12, 12), (40, 9), (1, 1)]:
        solve_and_check(solver, rng, 6, big_n, big_m, kind, dtype)


@pytest.mark.parametrize("kind", ["float", "int", "to_diagonal"])
def test_cuda_kernel_matches_emd2(kind, to_cuda, cuda_mode):
    """The CUDA kernel (the simulator here) on small problems, in one launch per batch."""
    rng = np.random.default_rng([2, len(kind)])
    for big_n, big_m in [(6, 3), (2, 7), (5, 5)]:
        cost, dp, dt, n, m = random_batch(rng, 3, big_n, big_m, kind)
        res = match_batch(to_cuda(cost), to_cuda(dp), to_cuda(dt), n, m, solver="cuda")
        host = MatchResult(total=_host(res.total), assignment=_host(res.assignment))
        check_result(host, cost, dp, dt, n, m, emd2_reference(cost, dp, dt, n, m))


def _host(array):
    return array.cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def test_cpu_and_cuda_take_the_same_steps():
    """Same tie rule: the kernel and the CPU solver return the same matching and step count."""
    from satloss_gpu.matching._cpu import match_cpu
    from satloss_gpu.matching._cuda import match_cuda_host

    rng = np.random.default_rng(3)
    cost, dp, dt, n, m = random_batch(rng, 3, 8, 6, "int", garbage=False)
    n[:], m[:] = 8, 6
    t_cpu, a_cpu, s_cpu = match_cpu(cost, dp, dt, n, m, return_stats=True)
    t_gpu, a_gpu, s_gpu = match_cuda_host(cost, dp, dt, n, m, return_stats=True)
    np.testing.assert_array_equal(a_cpu, a_gpu)
    np.testing.assert_array_equal(s_cpu["steps"], s_gpu["steps"])
    np.testing.assert_allclose(t_cpu, t_gpu, rtol=1e-12)
    assert (s_gpu["violation"] <= 1e-11 * s_gpu["scale"]).all()


def test_empty_sides_and_empty_batch():
    cost = np.zeros((3, 4, 5))
    dp = np.arange(12.0).reshape(3, 4)
    dt = np.arange(15.0).reshape(3, 5)
    n, m = np.array([0, 4, 0]), np.array([5, 0, 0])
    for solver in ("emd", "cpu", "cuda"):
        res = match_batch(cost, dp, dt, n, m, solver=solver)
        np.testing.assert_allclose(res.total, [dt[0].sum(), dp[1].sum(), 0.0])
        assert (res.assignment == -1).all()
    empty = match_batch(np.zeros((0, 2, 2)), np.zeros((0, 2)), np.zeros((0, 2)), [], [],
                        solver="cpu")
    assert empty.total.shape == (0,) and empty.assignment.shape == (0, 2)


def test_cpu_solver_larger_problems():
    rng = np.random.default_rng(4)
    for big_n, big_m, kind in [(300, 40, "float"), (40, 300, "float"), (200, 60, "int")]:
        solve_and_check("cpu", rng, 4, big_n, big_m, kind)


def test_cpu_solver_certificate_holds():
    from satloss_gpu.matching._cpu import CERTIFICATE_RTOL, match_cpu

    rng = np.random.default_rng(5)
    cost, dp, dt, n, m = random_batch(rng, 5, 120, 30, "float", garbage=False)
    _, _, stats = match_cpu(cost, dp, dt, n, m, return_stats=True)
    assert (stats["violation"] <= CERTIFICATE_RTOL * stats["scale"]).all()


def test_hand_example_and_tie():
    # Two targets, three predictions: 0-0 and 1-1 matched, prediction 2 to the diagonal.
    cost = np.array([[[0.25, 5.0], [5.0, 0.5], [5.0, 5.0]]])
    dp = np.array([[1.0, 1.0, 0.25]])
    dt = np.array([[1.0, 1.0]])
    for solver in ("emd", "cpu", "cuda"):
        res = match_batch(cost, dp, dt, [3], [2], solver=solver)
        assert float(res.total[0]) == pytest.approx(1.0)
        assert res.assignment.tolist() == [[0, 1, -1]]
    # All options cost the same: any valid matching, total 2.
    res = match_batch(np.full((1, 2, 2), 2.0), np.ones((1, 2)), np.ones((1, 2)), [2], [2],
                      solver="cpu")
    assert float(res.total[0]) == pytest.approx(4.0)


def test_torch_cpu_input_and_gradient():
    rng = np.random.default_rng(6)
    cost, dp, dt, n, m = random_batch(rng, 4, 9, 5, "float", garbage=False)
    tc = torch.tensor(cost, dtype=torch.float32, requires_grad=True)
    tdp, tdt = torch.tensor(dp, dtype=torch.float32), torch.tensor(dt, dtype=torch.float32)
    for solver in ("emd", "cpu", "auto"):
        res = match_batch(tc, tdp, tdt, torch.as_tensor(n), torch.as_tensor(m), solver=solver)
        assert res.total.dtype == torch.float32 and res.assignment.dtype == torch.int64
        np.testing.assert_allclose(res.total.numpy(), emd2_reference(cost, dp, dt, n, m),
                                   rtol=RTOL)
    value = assignment_cost(tc, tdp, tdt, n, m, res.assignment)
    np.testing.assert_allclose(value.detach().numpy(), res.total.numpy(), rtol=RTOL)
    value.sum().backward()
    plan = np.zeros_like(cost)
    for b in range(4):
        for i in range(n[b]):
            j = int(res.assignment[b, i])
            if j >= 0:
                plan[b, i, j] = 1.0
    np.testing.assert_array_equal(tc.grad.numpy(), plan)


# ----------------------------------------------------------------------------- validation


def _args():
    return np.zeros((2, 3, 4)), np.zeros((2, 3)), np.zeros((2, 4)), [3, 3], [4, 4]


@pytest.mark.parametrize(
    "position, value, error, match",
    [
        (0, np.zeros((3, 4)), ValueError, r"`cost` must have shape \(B, N, M\)"),
        (1, np.zeros((2, 4)), ValueError, r"`diag_pred` must have shape"),
        (2, np.zeros((2, 3)), ValueError, r"`diag_target` must have shape"),
        (3, [4, 3], ValueError, r"`n` must be at most 3"),
        (4, [-1, 3], ValueError, r"`m` must be non-negative"),
        (3, [3], ValueError, r"`n` must have shape \(2,\)"),
        (3, [1.5, 2.0], TypeError, r"`n` must hold integers"),
        (0, np.zeros((2, 3, 4), dtype=complex), TypeError, r"`cost` must hold real numbers"),
    ],
)
def test_validation_errors(position, value, error, match):
    args = list(_args())
    args[position] = value
    with pytest.raises(error, match=match):
        match_batch(*args)


def test_validation_non_finite_and_solver():
    cost, dp, dt, n, m = _args()
    cost[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"`cost` must be finite .* 1 NaN"):
        match_batch(cost, dp, dt, n, m)
    cost[1, 2, 0] = 0.0
    dt[0, 1] = np.inf
    with pytest.raises(ValueError, match=r"`diag_target` must be finite .* 1 inf"):
        match_batch(cost, dp, dt, n, m)
    dt[0, 1] = 0.0
    with pytest.raises(ValueError, match=r"`solver` must be one of"):
        match_batch(cost, dp, dt, n, m, solver="sinkhorn")
    with pytest.raises(TypeError, match=r"one array library"):
        match_batch(torch.zeros(2, 3, 4), dp, dt, n, m)


# ----------------------------------------------------------------------------- PTX


PTX_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    from numba import cuda, types
    from satloss_gpu.kernels.cuda import matching_sap as kernel

    def stub_toolkit():
        # No GPU and no NVRTC here: give Numba a device and the libdevice it needs.
        import glob
        import numba.cuda.cudadrv.libs as libs
        import numba.cuda.cudadrv.nvrtc as nvrtc
        import numba.cuda.cudadrv.nvvm as nvvm
        import numba.cuda.dispatcher as dispatcher

        class Device:
            compute_capability = (9, 0)

        dispatcher.get_current_device = lambda: Device()
        nvrtc.get_supported_ccs = lambda: ((9, 0),)
        found = glob.glob("/usr/local/cuda*/nvvm/libdevice/libdevice*.bc")
        if found:
            libs.get_libdevice = nvvm.get_libdevice = lambda: found[0]

    f64, i64 = types.float64, types.int64
    def signature(ft):
        return (ft[:, :, ::1], ft[:, ::1], ft[:, ::1], i64[::1], i64[::1], f64[:, ::1],
                f64[:, ::1], f64[:, ::1], i64[:, ::1], i64[:, ::1], i64[:, ::1],
                types.uint8[:, ::1], i64[:, ::1], i64[:, ::1], f64[::1], f64[::1], f64[::1],
                i64[::1], i64)
    for attempt in range(2):
        try:
            for ft in (types.float32, types.float64):
                ptx, _ = cuda.compile_ptx(kernel.sap_kernel.py_func, signature(ft), cc=(9, 0),
                                          **kernel.KERNEL_OPTIONS)
                assert ".target sm_90" in ptx and "sap_kernel" in ptx
                # The argmin and the certificate reduce by warp shuffles; the state may
                # live in dynamic shared memory.
                assert "shfl.sync.bfly" in ptx and "shfl.sync.idx" in ptx
                assert ".extern .shared" in ptx and ".maxntid 1024" in ptx
            break
        except Exception:
            if attempt:
                raise
            stub_toolkit()
    print("PTX OK")
    """
)


def test_kernel_compiles_to_ptx_for_cc90():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0 and "PTX OK" in out.stdout, out.stderr[-3000:]


# ----------------------------------------------------------------------------- real GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_many_problems_repeated(dtype):
    """Thousands of problems, several launches: same totals and matchings as the CPU solver."""
    rng = np.random.default_rng(7)
    cost, dp, dt, n, m = random_batch(rng, 2000, 60, 25, "float", garbage=True)
    int_cost, int_dp, int_dt, n2, m2 = random_batch(rng, 2000, 25, 60, "int", garbage=True)
    for c, p, t, nn, mm in [(cost, dp, dt, n, m), (int_cost, int_dp, int_dt, n2, m2)]:
        expected = match_batch(c, p, t, nn, mm, solver="cpu")
        args = [torch.as_tensor(a, dtype=dtype, device="cuda") for a in (c, p, t)]
        for _ in range(5):
            res = match_batch(*args, torch.as_tensor(nn, device="cuda"),
                              torch.as_tensor(mm, device="cuda"), solver="auto")
            assert res.total.is_cuda and res.assignment.is_cuda and res.total.dtype == dtype
            np.testing.assert_allclose(res.total.cpu().numpy(), expected.total,
                                       rtol=1e-6 if dtype == torch.float32 else 1e-9)
            if dtype == torch.float64:
                np.testing.assert_array_equal(res.assignment.cpu().numpy(), expected.assignment)


@pytest.mark.gpu
def test_gpu_large_problems_against_emd():
    rng = np.random.default_rng(8)
    cost, dp, dt, n, m = random_batch(rng, 16, 1500, 150, "float", garbage=True)
    args = [torch.as_tensor(a, device="cuda") for a in (cost, dp, dt)]
    res = match_batch(*args, n, m, solver="cuda")
    host = MatchResult(total=res.total.cpu().numpy(), assignment=res.assignment.cpu().numpy())
    check_result(host, cost, dp, dt, n, m, emd2_reference(cost, dp, dt, n, m))


# ----------------------------------------------------------------------------- sparse CPU solver


def diagram_like_batch(rng, batch, big_n, big_m):
    """SATLoss-like problems: clamped spatial factor, many near-diagonal prediction points."""
    target_pos = rng.random((batch, big_m, 2))
    pred_pos = rng.random((batch, big_n, 2))
    birth = 0.8 * rng.random((batch, big_n))
    death = birth + rng.exponential(0.02, (batch, big_n))
    close = min(big_n, big_m) // 2
    pred_pos[:, :close] = target_pos[:, :close] + rng.normal(0, 0.01, (batch, close, 2))
    death[:, :close] = 1 - 0.2 * rng.random((batch, close))
    birth[:, :close] = 0.2 * rng.random((batch, close))
    spatial = np.clip(np.linalg.norm(pred_pos[:, :, None] - target_pos[:, None], axis=-1),
                      0.05, 1.0)
    cost = spatial * np.hypot(birth, 1 - death)[:, :, None]
    return cost, (death - birth) / np.sqrt(2), np.full((batch, big_m), 1 / np.sqrt(2))


@pytest.mark.parametrize("k_start", [1, 2, 8, 1000])
def test_sparse_solver_every_list_length_matches_emd2(k_start):
    """Short lists force the lengthening rounds; every start length gives the optimum."""
    from satloss_gpu.matching._cpu import CERTIFICATE_RTOL, match_cpu

    rng = np.random.default_rng([9, k_start])
    for kind in ("float", "int", "to_diagonal"):
        cost, dp, dt, n, m = random_batch(rng, 5, 30, 12, kind)
        total, assignment, stats = match_cpu(cost, dp, dt, n, m, return_stats=True,
                                             k_start=k_start)
        check_result(MatchResult(total=total, assignment=assignment), cost, dp, dt, n, m,
                     emd2_reference(cost, dp, dt, n, m))
        assert (stats["violation"] <= CERTIFICATE_RTOL * stats["scale"]).all()


def test_sparse_solver_lengthens_lists_when_needed():
    """On diagram-like problems a list of 1 is too short: more rounds, same optimum."""
    from satloss_gpu.matching._cpu import match_cpu

    rng = np.random.default_rng(10)
    cost, dp, dt = diagram_like_batch(rng, 4, 120, 25)
    n, m = np.full(4, 120), np.full(4, 25)
    expected = emd2_reference(cost, dp, dt, n, m)
    short = match_cpu(cost, dp, dt, n, m, return_stats=True, k_start=1)
    dense = match_cpu(cost, dp, dt, n, m, return_stats=True)
    assert short[2]["rounds"].max() > 1
    for total, assignment, _ in (short, dense):
        check_result(MatchResult(total=total, assignment=assignment), cost, dp, dt, n, m,
                     expected)


def test_cpu_solver_on_diagram_like_problems_matches_emd():
    rng = np.random.default_rng(11)
    cost, dp, dt = diagram_like_batch(rng, 3, 200, 30)
    n, m = np.array([200, 150, 17]), np.array([30, 30, 4])
    res = match_batch(cost, dp, dt, n, m, solver="cpu")
    reference = match_batch(cost, dp, dt, n, m, solver="emd")
    check_result(res, cost, dp, dt, n, m, np.asarray(reference.total))


def test_candidate_lists_hold_the_cheapest_useful_columns():
    """build_row_list against a sort: the k cheapest (cost, column) with cost < row_diag, in order."""
    from satloss_gpu.kernels.cpu.matching_sap import build_row_list

    rng = np.random.default_rng(12)
    A = rng.integers(0, 5, (1, 3, 40)).astype(np.float64)
    row_diag = np.array([[2.5, 0.5, 10.0]])
    col_diag = rng.integers(0, 3, (1, 40)).astype(np.float64)
    for k_max in (1, 4, 40):
        cand = np.full((1, 3, k_max), -1, dtype=np.int64)
        cand_cost = np.zeros((1, 3, k_max))
        for r in range(3):
            length = build_row_list(A, row_diag, col_diag, 0, r, 40, k_max, cand, cand_cost, 0)
            values = A[0, r] - col_diag[0]
            useful = [c for c in np.lexsort((np.arange(40), values)) if values[c] < row_diag[0, r]]
            assert length == min(k_max, len(useful))
            assert cand[0, r, :length].tolist() == [int(c) for c in useful[:length]]
            np.testing.assert_array_equal(cand_cost[0, r, :length], values[useful[:length]])


def test_dense_and_sparse_cpu_solvers_agree():
    """``match_cpu`` defaults to the dense solver (the kernel's twin); lists give the same total."""
    from satloss_gpu.matching._cpu import match_cpu

    rng = np.random.default_rng(13)
    cost, dp, dt, n, m = random_batch(rng, 4, 8, 6, "float", garbage=False)
    dense = match_cpu(cost, dp, dt, n, m, return_stats=True)
    sparse = match_cpu(cost, dp, dt, n, m, return_stats=True, k_start=2)
    np.testing.assert_allclose(dense[0], sparse[0], rtol=1e-12)
    assert (dense[2]["rounds"] == 1).all()
