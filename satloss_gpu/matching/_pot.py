"""The reference solver of diagram matching: POT's network simplex (``ot.emd``) on the augmented
problem whose extra row and column are the diagonal, one call per problem."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["emd_one", "match_emd"]


def emd_one(
    cost: np.ndarray, diag_pred: np.ndarray, diag_target: np.ndarray
) -> tuple[float, np.ndarray]:
    """Solve one problem with ``ot.emd`` on the augmented (n+1) x (m+1) problem."""
    import ot

    n, m = cost.shape
    assignment = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0:
        return float(diag_pred.sum() + diag_target.sum()), assignment
    big = np.zeros((n + 1, m + 1), dtype=np.float64)
    big[:n, :m] = cost
    big[:n, m] = diag_pred
    big[n, :m] = diag_target
    a = np.ones(n + 1, dtype=np.float64)
    a[n] = m
    b = np.ones(m + 1, dtype=np.float64)
    b[m] = n
    plan = ot.emd(a, b, big, numItermax=max(100_000, 100 * (n + m + 2) ** 2))
    core = plan[:n, :m]
    best = core.argmax(axis=1)
    hit = core[np.arange(n), best] > 0.5
    assignment[hit] = best[hit]
    return float((plan * big).sum()), assignment


def _emd_threads() -> int:
    """Worker threads for the ``"emd"`` solver (``SATLOSS_EMD_THREADS``, default 1).

    ``ot.emd`` does not release the GIL in POT 0.9.7, so threads do not help there; the pool
    is kept for POT versions that do.
    """
    value = os.environ.get("SATLOSS_EMD_THREADS")
    return max(1, int(value)) if value else 1


def match_emd(
    cost: np.ndarray,
    diag_pred: np.ndarray,
    diag_target: np.ndarray,
    n: np.ndarray,
    m: np.ndarray,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`emd_one` on every problem of the batch, concurrently in threads."""
    batch, big_n = cost.shape[:2]
    total = np.zeros(batch, dtype=np.float64)
    assignment = np.full((batch, big_n), -1, dtype=np.int64)

    def solve(b: int) -> None:
        nb, mb = int(n[b]), int(m[b])
        total[b], assignment[b, :nb] = emd_one(
            cost[b, :nb, :mb], diag_pred[b, :nb], diag_target[b, :mb]
        )

    threads = _emd_threads() if threads is None else threads
    if threads == 1 or batch <= 1:
        for b in range(batch):
            solve(b)
    else:
        with ThreadPoolExecutor(max_workers=min(threads, batch)) as pool:
            list(pool.map(solve, range(batch)))
    return total, assignment
