"""Problems with a padded dimension of size 0 (issue 20, defect 8).

Every target diagram empty (M = 0), every prediction diagram empty (N = 0), both, no problem
at all (B = 0), and batches mixing empty and non-empty sides: every solver, NumPy and torch
inputs, the dense path of ``match_batch`` and the point and device paths of the reduction.
The optimum is then the sum of the diagonal costs and nothing is matched.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from satloss_gpu.matching import MATCHING_SOLVERS, assignment_cost, match_batch
from satloss_gpu.matching._reduced import (reduced_match_dense, reduced_match_points,
                                           reduced_match_torch)

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")

#: (B, N, M, n, m): padded shape and true sizes.
SHAPES = {
    "no targets": (1, 3, 0, [3], [0]),
    "no predictions": (1, 0, 3, [0], [3]),
    "nothing": (1, 0, 0, [0], [0]),
    "no problems": (0, 3, 2, [], []),
    "mixed sizes": (3, 3, 2, [3, 0, 2], [0, 2, 0]),
}


def _problem(batch, big_n, big_m, n, m, library):
    rng = np.random.default_rng([batch, big_n, big_m])
    cost = rng.random((batch, big_n, big_m))
    dp = rng.random((batch, big_n))
    dt = rng.random((batch, big_m))
    n, m = np.array(n, dtype=np.int64), np.array(m, dtype=np.int64)
    expected = np.array([dp[b, :n[b]].sum() + dt[b, :m[b]].sum() for b in range(batch)])
    if library == "torch":
        cost, dp, dt = (torch.as_tensor(a) for a in (cost, dp, dt))
    return cost, dp, dt, n, m, expected


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("solver", MATCHING_SOLVERS)
@pytest.mark.parametrize("case", list(SHAPES))
def test_match_batch_with_an_empty_padded_dimension(case, solver, library):
    batch, big_n, big_m, n, m = SHAPES[case]
    cost, dp, dt, n, m, expected = _problem(batch, big_n, big_m, n, m, library)
    result = match_batch(cost, dp, dt, n, m, solver=solver)
    assert tuple(result.assignment.shape) == (batch, big_n)
    assert (np.asarray(result.assignment) == -1).all()
    np.testing.assert_allclose(np.asarray(result.total), expected, rtol=1e-12)
    again = assignment_cost(cost, dp, dt, n, m, result.assignment)
    np.testing.assert_allclose(np.asarray(again), expected, rtol=1e-12)


@pytest.mark.parametrize("case", list(SHAPES))
def test_reduced_paths_with_an_empty_padded_dimension(case):
    batch, big_n, big_m, n, m = SHAPES[case]
    cost, dp, dt, n, m, expected = _problem(batch, big_n, big_m, n, m, "numpy")
    dense = reduced_match_dense(cost, dp, dt, n, m)
    np.testing.assert_allclose(dense.total, expected, rtol=1e-12)
    assert dense.pred_of_target.shape == (batch, big_m)
    assert (dense.pred_of_target == -1).all()
    tensors = [torch.as_tensor(a) for a in (cost, dp, dt, n, m)]

    def pair_cost(index):
        return torch.gather(tensors[0], 1, index[:, :, None].expand(-1, -1, big_m))

    for solver in ("emd", "cuda"):
        device = reduced_match_torch(pair_cost, *tensors[1:], solver=solver)
        np.testing.assert_allclose(device.total.numpy(), expected, rtol=1e-12)
        assert tuple(device.assignment(big_n).shape) == (batch, big_n)
    # From points: every point at (0, 1), so every diagonal cost is 1/sqrt(2).
    points = reduced_match_points(
        np.zeros((batch, big_n)), np.ones((batch, big_n)), np.zeros((batch, big_n, 2), np.int64),
        np.zeros((batch, big_m)), np.ones((batch, big_m)), np.zeros((batch, big_m, 2), np.int64),
        n, m, (8, 8))
    np.testing.assert_allclose(points.total, (n + m) / np.sqrt(2.0), rtol=1e-12)
    assert points.pred_of_target.shape == (batch, big_m)
