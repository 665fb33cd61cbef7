"""The CUDA matching path survives an aborted search (a row left at ``col4row == -1``).

The kernel stops a Dijkstra search when no open column is left (only NaN distances get there)
and leaves that row unassigned. The drivers must send such rows to the diagonal, never index
with -1 (on a GPU, ``scatter_`` with index -1 kills the CUDA context), and have POT solve the
problem again.
"""
import numpy as np
import pytest
import torch

from satloss_gpu.matching import match_batch
from satloss_gpu.matching._cuda import _torch_assignment

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")


def _problems(transposed: bool):
    rng = np.random.default_rng(7)
    n_pad, m_pad = (6, 4) if transposed else (4, 6)
    cost = rng.random((3, n_pad, m_pad))
    diag_pred = 0.4 * rng.random((3, n_pad))
    diag_target = 0.4 * rng.random((3, m_pad))
    n = np.array([n_pad, n_pad - 1, 2])
    m = np.array([m_pad, m_pad - 2, m_pad])
    return cost, diag_pred, diag_target, n, m


@pytest.fixture
def aborting_kernel(monkeypatch, cuda_mode):
    """Make every search of the simulated kernel find no open column (the abort path)."""
    if cuda_mode != "sim":
        pytest.skip("forcing the abort patches the simulated kernel")
    from satloss_gpu.kernels.cuda import matching_sap

    monkeypatch.setattr(matching_sap, "_is_better", lambda *args: False)


@pytest.mark.parametrize("transposed", [False, True])
def test_aborted_search_is_solved_again_by_pot(aborting_kernel, transposed):
    cost, diag_pred, diag_target, n, m = _problems(transposed)
    expected = match_batch(cost, diag_pred, diag_target, n, m, solver="emd")
    with pytest.warns(RuntimeWarning, match="re-solved with ot.emd"):
        got = match_batch(cost, diag_pred, diag_target, n, m, solver="cuda")
    np.testing.assert_allclose(got.total, expected.total, rtol=1e-12)
    np.testing.assert_array_equal(got.assignment, expected.assignment)


@pytest.mark.parametrize("transposed", [False, True])
def test_torch_assignment_masks_unassigned_rows(transposed):
    # Problem 0: row 1 aborted; problem 1: complete; problem 2: row 0 aborted, row 2 padding.
    col4row = torch.tensor([[2, -1, 5], [1, 0, 2], [-1, 3, -1]])
    nr = torch.tensor([3, 3, 2])
    nk = torch.tensor([3, 3, 3])
    assignment, aborted = _torch_assignment(col4row, nr, nk, transposed, big_n=4)
    assert aborted.tolist() == [True, False, True]
    assert assignment.shape == ((3, 4) if transposed else (3, 3))
    if transposed:
        # rows are target points: prediction point col4row[b, r] is matched with target r
        assert assignment.tolist() == [[-1, -1, 0, -1], [1, 0, 2, -1], [-1, -1, -1, -1]]
    else:
        assert assignment.tolist() == [[2, -1, -1], [1, 0, 2], [-1, -1, -1]]
