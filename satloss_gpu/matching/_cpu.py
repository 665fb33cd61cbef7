"""Driver of the compiled CPU matching solver: orient the problem (rows on the smaller side),
call the Numba kernels of :mod:`satloss_gpu.kernels.cpu.matching_sap`, turn rows back into
assignments and re-solve with POT whatever fails the optimality certificate."""
from __future__ import annotations

import warnings

import numpy as np

from ..kernels.common.matching import CERTIFICATE_RTOL
from ..kernels.cpu.matching_sap import solve_batch, solve_batch_dense
from ._pot import emd_one

__all__ = ["match_cpu", "orient", "oriented_arrays", "rows_to_assignment", "redo_uncertified",
           "CERTIFICATE_RTOL", "K_START"]

#: Length of the first candidate lists (per row); multiplied by 4 for a failed certificate.
K_START = 8


def orient(big_n: int, big_m: int) -> bool:
    """Whether the rows are the target points (``True``) or the prediction points.

    The rows are the smaller padded side: the search cost grows with the number of rows.
    """
    return big_m < big_n


def rows_to_assignment(
    col4row: np.ndarray, row_counts: np.ndarray, col_counts: np.ndarray, transposed: bool,
    big_n: int,
) -> np.ndarray:
    """Turn the row assignment of the oriented problem into ``MatchResult.assignment``.

    Parameters
    ----------
    col4row : int64, shape (B, R)
        Column of every row (entries past ``row_counts[b]`` ignored).
    row_counts, col_counts : int64, shape (B,)
    transposed : bool
        Whether the rows are the target points.
    big_n : int
        Padded number of prediction points N.

    Returns
    -------
    numpy.ndarray, int64, shape (B, N)
    """
    batch, big_r = col4row.shape
    rows_valid = np.arange(big_r)[None, :] < row_counts[:, None]
    real = rows_valid & (col4row < col_counts[:, None])
    if not transposed:
        return np.where(real, col4row, -1).astype(np.int64)
    assignment = np.full((batch, big_n), -1, dtype=np.int64)
    b_idx, r_idx = np.nonzero(real)
    assignment[b_idx, col4row[b_idx, r_idx]] = r_idx
    return assignment


def oriented_arrays(cost, diag_pred, diag_target, n, m):
    """(A, row_diag, col_diag, n_rows, n_cols, transposed) for NumPy inputs; ``A`` C-contiguous."""
    transposed = orient(cost.shape[1], cost.shape[2])
    if transposed:
        return (np.ascontiguousarray(cost.transpose(0, 2, 1)), np.ascontiguousarray(diag_target),
                np.ascontiguousarray(diag_pred), m, n, True)
    return (np.ascontiguousarray(cost), np.ascontiguousarray(diag_pred),
            np.ascontiguousarray(diag_target), n, m, False)


def match_cpu(
    cost: np.ndarray,
    diag_pred: np.ndarray,
    diag_target: np.ndarray,
    n: np.ndarray,
    m: np.ndarray,
    return_stats: bool = False,
    k_start: int | None = None,
):
    """Solve a validated NumPy batch; return (total (B,), assignment (B, N)) in float64/int64.

    With ``return_stats`` also a dict with the per-problem ``steps``, ``rounds`` (list lengths
    tried), ``violation`` and ``scale`` of the certificate. ``k_start`` is the first
    candidate-list length of the sparse solver; ``None`` runs the dense solver, the CUDA
    kernel's step-for-step twin. Problems failing the last certificate are re-solved with POT.
    """
    A, row_diag, col_diag, row_counts, col_counts, transposed = oriented_arrays(cost, diag_pred,
                                                                                diag_target, n, m)
    batch = A.shape[0]
    col4row = np.full((batch, A.shape[1]), -1, dtype=np.int64)
    total = np.zeros(batch, dtype=np.float64)
    violation = np.zeros(batch, dtype=np.float64)
    scale = np.zeros(batch, dtype=np.float64)
    steps = np.zeros(batch, dtype=np.int64)
    rounds = np.zeros(batch, dtype=np.int64)
    row_counts = np.ascontiguousarray(row_counts, dtype=np.int64)
    col_counts = np.ascontiguousarray(col_counts, dtype=np.int64)
    if k_start is None:
        solve_batch_dense(A, row_diag, col_diag, row_counts, col_counts, col4row, total,
                          violation, scale, steps)
        rounds[:] = 1
    else:
        solve_batch(A, row_diag, col_diag, row_counts, col_counts, int(k_start), col4row, total,
                    violation, scale, steps,
                    rounds)
    assignment = rows_to_assignment(col4row, row_counts, col_counts, transposed, cost.shape[1])
    redo_uncertified(total, assignment, violation, scale, cost, diag_pred, diag_target, n, m)
    if return_stats:
        return total, assignment, {"steps": steps, "rounds": rounds, "violation": violation,
                                   "scale": scale}
    return total, assignment


def redo_uncertified(total, assignment, violation, scale, cost, diag_pred, diag_target, n, m):
    """Re-solve with POT (in place) every problem whose certificate fails; warn if any."""
    bad = np.nonzero(~(violation <= CERTIFICATE_RTOL * scale))[0]  # NaN fails too
    if bad.size == 0:
        return
    warnings.warn(
        f"{bad.size} matching problem(s) failed the optimality certificate (rounding); "
        "re-solved with ot.emd",
        RuntimeWarning,
        stacklevel=3,
    )
    for b in bad:
        nb, mb = int(n[b]), int(m[b])
        total[b], row = emd_one(np.asarray(cost[b, :nb, :mb], dtype=np.float64),
                                 np.asarray(diag_pred[b, :nb], dtype=np.float64),
                                 np.asarray(diag_target[b, :mb], dtype=np.float64))
        assignment[b, :] = -1
        assignment[b, :nb] = row
