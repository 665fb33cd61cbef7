"""``assignment_cost`` checks its arguments (issue 20, defect 15).

Before, an index out of range raised a raw IndexError from deep inside NumPy (or was read as
a column from the end: -2), and a matching that used a target point twice was summed silently.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from satloss_gpu.matching import assignment_cost, match_batch


def _problem():
    rng = np.random.default_rng(0)
    cost = rng.random((2, 4, 3))
    dp = rng.random((2, 4))
    dt = rng.random((2, 3))
    return cost, dp, dt, np.array([4, 2]), np.array([3, 2])


@pytest.mark.parametrize(
    "assignment, error, match",
    [
        ([[0, 1, 2, -1], [1, 0, -1, -1]], None, None),
        ([[0, 1, 3, -1], [1, 0, -1, -1]], ValueError,
         r"target index in \[0, m\[b\]\).* got 3 at \[0, 2\] \(m\[0\] = 3\)"),
        ([[0, 1, 2, -1], [2, 0, -1, -1]], ValueError, r"got 2 at \[1, 0\] \(m\[1\] = 2\)"),
        ([[0, -2, 2, -1], [1, 0, -1, -1]], ValueError, r"got -2 at \[0, 1\]"),
        ([[0, 1, 2, -1], [1, 0, 1, -1]], ValueError,
         r"-1 at the padding entries i >= n\[b\]; got 1 at \[1, 2\] \(n\[1\] = 2\)"),
        ([[0, 1, 0, -1], [1, 0, -1, -1]], ValueError,
         r"matches target point 0 of problem 0 with prediction points 0 and 2"),
        ([[0, 1, 2], [1, 0, -1]], ValueError, r"`assignment` must have shape \(B, N\) = \(2, 4\)"),
        ([[0.0, 1, 2, -1], [1, 0, -1, -1]], TypeError, r"`assignment` must hold integers"),
    ],
)
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_assignment_is_checked(assignment, error, match, library):
    cost, dp, dt, n, m = _problem()
    if library == "torch":
        cost, dp, dt = (torch.as_tensor(a) for a in (cost, dp, dt))
        assignment = torch.as_tensor(assignment)
    if error is None:
        value = assignment_cost(cost, dp, dt, n, m, assignment)
        expected = [cost[0, 0, 0] + cost[0, 1, 1] + cost[0, 2, 2] + dp[0, 3],
                    cost[1, 0, 1] + cost[1, 1, 0]]
        np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-12)
        return
    with pytest.raises(error, match=match):
        assignment_cost(cost, dp, dt, n, m, assignment)


def test_problem_arguments_are_checked_as_in_match_batch():
    cost, dp, dt, n, m = _problem()
    assignment = -np.ones((2, 4), dtype=np.int64)
    with pytest.raises(ValueError, match=r"`diag_pred` must have shape"):
        assignment_cost(cost, dp[:, :3], dt, n, m, assignment)
    with pytest.raises(ValueError, match=r"`m` must be at most 3"):
        assignment_cost(cost, dp, dt, n, [4, 2], assignment)
    cost[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"`cost` must be finite"):
        assignment_cost(cost, dp, dt, n, m, assignment)


def test_gradient_is_the_plan_and_float32_is_kept():
    cost, dp, dt, n, m = _problem()
    tc = torch.tensor(cost, dtype=torch.float32, requires_grad=True)
    tdp = torch.tensor(dp, dtype=torch.float32, requires_grad=True)
    tdt = torch.tensor(dt, dtype=torch.float32)
    result = match_batch(tc, tdp, tdt, n, m)
    value = assignment_cost(tc, tdp, tdt, n, m, result.assignment)
    assert value.dtype == torch.float32
    np.testing.assert_allclose(value.detach().numpy(), result.total.numpy(), rtol=1e-6)
    value.sum().backward()
    plan = np.zeros(cost.shape, dtype=np.float32)
    for b, i in zip(*np.nonzero(result.assignment.numpy() >= 0)):
        plan[b, i, result.assignment[b, i]] = 1.0
    np.testing.assert_array_equal(tc.grad.numpy(), plan)
    rows = np.arange(4)[None, :] < n[:, None]
    np.testing.assert_array_equal(tdp.grad.numpy(), rows & (result.assignment.numpy() < 0))
