"""Exact diagram matching by sparse shortest augmenting paths, compiled with Numba for the CPU.

The problem of :mod:`satloss_gpu.matching` is written as a rectangular assignment problem.
One side of the diagrams (the smaller padded side) gives the *rows*, the other side the *real
columns*; every row ``r`` also owns a *private diagonal column* ``nk + r`` that only it can use:

* row ``r`` to real column ``k`` costs ``A[r, k] - dk[k]`` (the diagonal cost of column ``k``
  is paid up front, in ``sum(dk)``, and refunded when ``k`` is matched);
* row ``r`` to its private column costs ``dr[r]``; every other private column is forbidden.

Every row is assigned, every column at most once, and the optimum of the diagram matching is
``sum(dk) + `` the optimum of this assignment. It is solved exactly by the rectangular
shortest-augmenting-path method (Jonker-Volgenant / Hungarian, in the form of Crouse,
"On implementing 2D rectangular assignment algorithms", IEEE TAES 2016): a greedy start, then
one Dijkstra search in reduced costs per unassigned row, duals ``u`` (rows) and ``v <= 0``
(columns) kept feasible throughout.

Sparsity
--------
The searches run over *candidate lists*, not over all columns: row ``r`` keeps the ``K``
cheapest real columns (by the key (cost, column)) among those with ``A[r, k] - dk[k] < dr[r]``
(a pair with a non-negative reduced cost ``cost - dp - dt`` is never needed: sending both
points to the diagonal is no worse), plus its private column. The restriction is verified, not
assumed: a certificate on the *full* problem (every row, every real column) checks dual
feasibility, complementary slackness and the sign conditions of the duals at the end. Two
facts make it pass in practice: a row on its private column can never be moved again (no
other row reaches that column), so private duals stay 0 and ``u[r] <= dr[r]``; and ``v <= 0``,
so a left-out edge has slack at least ``cost - u[r]``, non-negative unless ``K`` was too small
for that row. Each row keeps the cost of its first left-out column as a bound; a problem where
some row ends with ``u[r]`` above its bound, or whose certificate fails, is solved again with
``4 K`` (``K`` capped at
the number of columns, where only the ``cost < dr`` cut is left), and with POT if it still
fails (rounding).

Each Dijkstra step relaxes the candidate list of one row and pops the open column of least
key (distance, column taken, column index) from a binary heap with lazy deletion.

The dense solver (``solve_batch_dense``: every step scans every column) is kept as the
sequential twin of the CUDA kernel of :mod:`satloss_gpu.kernels.matching_sap`: same greedy
start, same searches, same tie rule, so both return the same matching in the same number of
steps (a test checks it).

The scalar functions below are plain ``numba.njit`` functions: the CUDA kernel calls them too.
"""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["match_cpu", "orient", "rows_to_assignment", "CERTIFICATE_RTOL", "K_START",
           "k_schedule"]

#: Problems whose certificate violation exceeds ``CERTIFICATE_RTOL * scale`` are re-solved.
CERTIFICATE_RTOL = 1e-11
#: Length of the first candidate lists (per row); multiplied by 4 for a failed certificate.
K_START = 8
_INF = np.inf


def k_schedule(n_cols: int, k_start: int = K_START) -> list[int]:
    """Candidate-list lengths tried for a problem with ``n_cols`` real columns, in order."""
    sizes = [min(max(1, k_start), max(1, n_cols))]
    while sizes[-1] < n_cols:
        sizes.append(min(4 * sizes[-1], n_cols))
    return sizes


# ----------------------------------------------------------------------------- scalar logic


@numba.njit(cache=True, inline="always")
def edge_cost(A, dr, dk, b, r, c, nk):
    """Cost of assigning row ``r`` to column ``c`` (real if ``c < nk``, else private), float64."""
    if c < nk:
        return np.float64(A[b, r, c]) - np.float64(dk[b, c])
    if c == nk + r:
        return np.float64(dr[b, r])
    return math.inf


@numba.njit(cache=True, inline="always")
def is_better(value, taken, col, best_value, best_taken, best_col):
    """Lexicographic order on (distance, column taken, column index): True if strictly smaller."""
    if value != best_value:
        return value < best_value
    if taken != best_taken:
        return taken < best_taken
    return col < best_col


@numba.njit(cache=True, inline="always")
def relaxed_distance(min_value, cost, u_row, v_col):
    """Distance to a column through the row being scanned, in reduced costs (one fixed order)."""
    return ((min_value + cost) - u_row) - v_col


@numba.njit(cache=True, inline="always")
def slack(cost, u_row, v_col):
    """Reduced cost of an edge, ``cost - u - v`` (non-negative for feasible duals)."""
    return (cost - u_row) - v_col


@numba.njit(cache=True)
def build_row_list(A, dr, dk, b, r, nk, k_max, cand, cand_cost, s):
    """Write the candidate list of row ``r`` of problem ``b`` to ``cand[s, r]``; return its length.

    The ``k_max`` (the capacity) smallest (cost, column) among the real columns with cost ``< dr[b, r]``,
    sorted by that key; ``cand_cost`` holds their costs.
    """
    limit = np.float64(dr[b, r])
    length = 0
    for c in range(nk):
        value = edge_cost(A, dr, dk, b, r, c, nk)
        if not value < limit:
            continue
        if length == k_max:
            if not is_better(value, 0, c, cand_cost[s, r, length - 1], 0, cand[s, r, length - 1]):
                continue
            pos = length - 1
        else:
            pos = length
            length += 1
        while pos > 0 and is_better(value, 0, c, cand_cost[s, r, pos - 1], 0, cand[s, r, pos - 1]):
            cand[s, r, pos] = cand[s, r, pos - 1]
            cand_cost[s, r, pos] = cand_cost[s, r, pos - 1]
            pos -= 1
        cand[s, r, pos] = c
        cand_cost[s, r, pos] = value
    return length


@numba.njit(cache=True, inline="always")
def list_edge(dr, b, i, e, length, nk, cand, cand_cost, s):
    """(column, cost) of entry ``e`` of row ``i``'s list; entry ``length`` is the private column."""
    if e < length:
        return cand[s, i, e], cand_cost[s, i, e]
    return nk + i, np.float64(dr[b, i])


# ----------------------------------------------------------------------------- binary heap


@numba.njit(cache=True, inline="always")
def _heap_less(hv, hk, a, b):
    return hv[a] < hv[b] or (hv[a] == hv[b] and hk[a] < hk[b])


@numba.njit(cache=True)
def _heap_push(hv, hk, size, value, key):
    """Push (value, key) on the min-heap of ``size`` entries; return the new size."""
    pos = size
    hv[pos] = value
    hk[pos] = key
    while pos > 0:
        parent = (pos - 1) // 2
        if not _heap_less(hv, hk, pos, parent):
            break
        hv[pos], hv[parent] = hv[parent], hv[pos]
        hk[pos], hk[parent] = hk[parent], hk[pos]
        pos = parent
    return size + 1


@numba.njit(cache=True)
def _heap_pop(hv, hk, size):
    """Remove the smallest entry (returned by the caller from index 0); return the new size."""
    size -= 1
    hv[0] = hv[size]
    hk[0] = hk[size]
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and _heap_less(hv, hk, left + 1, left):
            child = left + 1
        if not _heap_less(hv, hk, child, pos):
            break
        hv[pos], hv[child] = hv[child], hv[pos]
        hk[pos], hk[child] = hk[child], hk[pos]
        pos = child
    return size


# ----------------------------------------------------------------------------- one problem


@numba.njit(cache=True)
def _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited, spc,
                              path, u, v, row4col, col4row):
    """End of a shortest-path search: update the duals of the scanned rows and visited
    columns (before ``col4row`` changes), then flip the alternating path from ``sink``."""
    for k in range(n_scanned):
        i = scanned[k]
        if i == cur:
            u[i] += min_value
        else:
            u[i] += min_value - spc[col4row[i]]
    for k in range(n_visited):
        col = visited[k]
        v[col] -= min_value - spc[col]
    col = sink
    while True:
        i = path[col]
        row4col[col] = i
        previous = col4row[i]
        col4row[i] = col
        if i == cur:
            break
        col = previous


@numba.njit(cache=True)
def _greedy(dr, b, nr, nk, cand, cand_cost, cand_len, u, row4col, col4row):
    """Give every row its cheapest column (list head, else private) when still free, in order."""
    for r in range(nr):
        if cand_len[0, r] > 0:
            best_col = cand[0, r, 0]
            best_value = cand_cost[0, r, 0]
        else:
            best_col = nk + r
            best_value = np.float64(dr[b, r])
        u[r] = best_value
        if row4col[best_col] == -1:
            row4col[best_col] = r
            col4row[r] = best_col


@numba.njit(cache=True)
def _augment_row(dr, b, cur, nk, cand, cand_cost, cand_len, u, v, row4col, col4row, spc,
                 path, done, scanned, visited, touched, hv, hk):
    """One Dijkstra search from the unassigned row ``cur``; augment and update the duals.

    Returns the number of columns popped (the search's step count).
    """
    nc = spc.shape[0]
    min_value = 0.0
    i = cur
    n_scanned = 0
    n_visited = 0
    n_touched = 0
    size = 0
    sink = -1
    while sink == -1:
        scanned[n_scanned] = i
        n_scanned += 1
        u_i = u[i]
        length = cand_len[0, i]
        for e in range(length + 1):
            col, cost = list_edge(dr, b, i, e, length, nk, cand, cand_cost, 0)
            if done[col]:
                continue
            dist = relaxed_distance(min_value, cost, u_i, v[col])
            if dist < spc[col]:
                if spc[col] == math.inf:
                    touched[n_touched] = col
                    n_touched += 1
                spc[col] = dist
                path[col] = i
                taken = 1 if row4col[col] != -1 else 0
                size = _heap_push(hv, hk, size, dist, taken * nc + col)
        while True:
            best_value = hv[0]
            best_col = hk[0] % nc
            size = _heap_pop(hv, hk, size)
            if not done[best_col] and best_value == spc[best_col]:
                break
        min_value = best_value
        done[best_col] = True
        visited[n_visited] = best_col
        n_visited += 1
        if row4col[best_col] == -1:
            sink = best_col
        else:
            i = row4col[best_col]
    _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited, spc,
                              path, u, v, row4col, col4row)
    # Reset the search state of every touched column.
    for k in range(n_touched):
        spc[touched[k]] = math.inf
        done[touched[k]] = False
    return n_visited


@numba.njit(cache=True)
def _certify(A, dr, dk, b, nr, nk, u, v, row4col, col4row):
    """Return (total, violation, scale) of a solved problem, checked on the full problem."""
    violation = 0.0
    scale = 0.0
    total = 0.0
    for c in range(nk):
        scale = max(scale, abs(np.float64(dk[b, c])))
        if row4col[c] == -1:
            total += np.float64(dk[b, c])
            violation = max(violation, abs(v[c]))
        else:
            violation = max(violation, v[c])
    for r in range(nr):
        u_r = u[r]
        for c in range(nk):
            cost = edge_cost(A, dr, dk, b, r, c, nk)
            scale = max(scale, abs(cost))
            violation = max(violation, -slack(cost, u_r, v[c]))
        cost = np.float64(dr[b, r])
        scale = max(scale, abs(cost))
        violation = max(violation, -slack(cost, u_r, v[nk + r]))
        c = col4row[r]
        violation = max(violation, abs(slack(edge_cost(A, dr, dk, b, r, c, nk), u_r, v[c])))
        total += np.float64(A[b, r, c]) if c < nk else cost
        if row4col[nk + r] == -1:
            violation = max(violation, abs(v[nk + r]))
    return total, violation, scale


@numba.njit(cache=True)
def row_bound(dr, b, r, k_max, cand, cand_cost, cand_len, s):
    """Trim row ``r``'s list (built with capacity ``k_max + 1``) to ``k_max``; return its bound.

    The bound is the cost of the first left-out column (``inf`` when none was left out): the
    restriction loses nothing for row ``r`` when ``u[r] <= bound``.
    """
    if cand_len[s, r] > k_max:
        cand_len[s, r] = k_max
        return cand_cost[s, r, k_max]
    return math.inf


@numba.njit(cache=True)
def _solve_once(A, dr, dk, b, n_rows, n_cols, k_max, col4row_out):
    """Solve problem ``b`` with candidate lists of length ``k_max``.

    Returns (total, violation, scale, steps, lists_sufficed) and writes the rows' columns to
    ``col4row_out[b]``; the certificate (total, violation, scale) is computed only when every
    row passed its bound test (``lists_sufficed``), else it is (0, inf, 0).
    """
    nc = n_cols + n_rows
    cap = k_max + 1
    cand = np.empty((1, n_rows, cap), dtype=np.int64)
    cand_cost = np.empty((1, n_rows, cap), dtype=np.float64)
    cand_len = np.empty((1, n_rows), dtype=np.int64)
    bound = np.empty(n_rows, dtype=np.float64)
    for r in range(n_rows):
        cand_len[0, r] = build_row_list(A, dr, dk, b, r, n_cols, cap, cand, cand_cost, 0)
        bound[r] = row_bound(dr, b, r, k_max, cand, cand_cost, cand_len, 0)
    u = np.zeros(n_rows, dtype=np.float64)
    v = np.zeros(nc, dtype=np.float64)
    row4col = np.full(nc, -1, dtype=np.int64)
    col4row = np.full(n_rows, -1, dtype=np.int64)
    spc = np.full(nc, math.inf, dtype=np.float64)
    path = np.full(nc, -1, dtype=np.int64)
    done = np.zeros(nc, dtype=np.bool_)
    scanned = np.empty(n_rows, dtype=np.int64)
    visited = np.empty(nc, dtype=np.int64)
    touched = np.empty(nc, dtype=np.int64)
    heap_cap = n_rows * cap + 1
    hv = np.empty(heap_cap, dtype=np.float64)
    hk = np.empty(heap_cap, dtype=np.int64)
    _greedy(dr, b, n_rows, n_cols, cand, cand_cost, cand_len, u, row4col, col4row)
    steps = 0
    for cur in range(n_rows):
        if col4row[cur] == -1:
            steps += _augment_row(dr, b, cur, n_cols, cand, cand_cost, cand_len, u, v, row4col,
                                  col4row, spc, path, done, scanned, visited, touched, hv, hk)
    for r in range(n_rows):
        col4row_out[b, r] = col4row[r]
    sufficed = True
    for r in range(n_rows):
        if u[r] > bound[r]:
            sufficed = False
    if not sufficed and k_max < n_cols:
        return 0.0, math.inf, 0.0, steps, False
    total, violation, scale = _certify(A, dr, dk, b, n_rows, n_cols, u, v, row4col, col4row)
    return total, violation, scale, steps, sufficed


@numba.njit(cache=True, parallel=True)
def solve_batch(A, dr, dk, nr, nk, k_start, col4row_out, total_out, violation_out, scale_out,
                steps_out, rounds_out):
    """Solve every problem of the oriented batch (see :func:`orient`), in parallel.

    Parameters
    ----------
    A : float32 or float64, shape (B, R, K)
    dr : shape (B, R); dk : shape (B, K)
    nr, nk : int64, shape (B,)
    k_start : int
        First candidate-list length (see :func:`k_schedule`).
    col4row_out : int64, shape (B, R), written: the column of every row (``>= nk[b]``: private).
    total_out, violation_out, scale_out : float64, shape (B,), written.
    steps_out, rounds_out : int64, shape (B,), written: Dijkstra steps taken (all rounds) and
        the number of list lengths tried (for benchmarks).
    """
    for b in numba.prange(A.shape[0]):
        n_rows = nr[b]
        n_cols = nk[b]
        k_max = min(max(1, k_start), max(1, n_cols))
        steps = 0
        rounds = 0
        while True:
            total, violation, scale, taken, sufficed = _solve_once(
                A, dr, dk, b, n_rows, n_cols, k_max, col4row_out)
            steps += taken
            rounds += 1
            if k_max >= n_cols or (sufficed and violation <= CERTIFICATE_RTOL * scale):
                break
            k_max = min(4 * k_max, n_cols)
        total_out[b] = total
        violation_out[b] = violation
        scale_out[b] = scale
        steps_out[b] = steps
        rounds_out[b] = rounds


# ----------------------------------------------------------------------------- dense twin


@numba.njit(cache=True)
def _greedy_dense(A, dr, dk, b, nr, nk, u, row4col, col4row):
    """Give every row its cheapest column (all columns scanned) when still free, in order."""
    for r in range(nr):
        best_value = math.inf
        best_col = -1
        for c in range(nk):
            value = edge_cost(A, dr, dk, b, r, c, nk)
            if value < best_value:
                best_value = value
                best_col = c
        value = edge_cost(A, dr, dk, b, r, nk + r, nk)
        if value < best_value:
            best_value = value
            best_col = nk + r
        u[r] = best_value
        if row4col[best_col] == -1:
            row4col[best_col] = r
            col4row[r] = best_col


@numba.njit(cache=True)
def _augment_row_dense(A, dr, dk, b, cur, nr, nk, u, v, row4col, col4row, spc, path, done,
                       scanned, visited):
    """Dense Dijkstra search from row ``cur`` (every column scanned at every step).

    The sequential twin of the CUDA kernel's search; returns the number of rows scanned.
    """
    min_value = 0.0
    i = cur
    n_scanned = 0
    n_visited = 0
    sink = -1
    while sink == -1:
        scanned[n_scanned] = i
        n_scanned += 1
        u_i = u[i]
        best_value = math.inf
        best_taken = 2
        best_col = 1 << 62
        for t in range(nk + n_scanned):
            col = t if t < nk else nk + scanned[t - nk]
            if done[col]:
                continue
            cost = edge_cost(A, dr, dk, b, i, col, nk)
            if cost < math.inf:
                dist = relaxed_distance(min_value, cost, u_i, v[col])
                if dist < spc[col]:
                    spc[col] = dist
                    path[col] = i
            taken = 1 if row4col[col] != -1 else 0
            if is_better(spc[col], taken, col, best_value, best_taken, best_col):
                best_value = spc[col]
                best_taken = taken
                best_col = col
        min_value = best_value
        done[best_col] = True
        visited[n_visited] = best_col
        n_visited += 1
        if row4col[best_col] == -1:
            sink = best_col
        else:
            i = row4col[best_col]
    _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited, spc,
                              path, u, v, row4col, col4row)
    for c in range(nk):
        spc[c] = math.inf
        done[c] = False
    for k in range(n_scanned):
        c = nk + scanned[k]
        spc[c] = math.inf
        done[c] = False
    return n_scanned


@numba.njit(cache=True, parallel=True)
def solve_batch_dense(A, dr, dk, nr, nk, col4row_out, total_out, violation_out, scale_out,
                      steps_out):
    """Dense version of :func:`solve_batch` (no candidate lists): the CUDA kernel's twin."""
    for b in numba.prange(A.shape[0]):
        n_rows = nr[b]
        n_cols = nk[b]
        nc = n_cols + n_rows
        u = np.zeros(n_rows, dtype=np.float64)
        v = np.zeros(nc, dtype=np.float64)
        row4col = np.full(nc, -1, dtype=np.int64)
        col4row = np.full(n_rows, -1, dtype=np.int64)
        spc = np.full(nc, math.inf, dtype=np.float64)
        path = np.full(nc, -1, dtype=np.int64)
        done = np.zeros(nc, dtype=np.bool_)
        scanned = np.empty(n_rows, dtype=np.int64)
        visited = np.empty(nc, dtype=np.int64)
        _greedy_dense(A, dr, dk, b, n_rows, n_cols, u, row4col, col4row)
        steps = 0
        for cur in range(n_rows):
            if col4row[cur] == -1:
                steps += _augment_row_dense(A, dr, dk, b, cur, n_rows, n_cols, u, v, row4col,
                                            col4row, spc, path, done, scanned, visited)
        total, violation, scale = _certify(A, dr, dk, b, n_rows, n_cols, u, v, row4col, col4row)
        for r in range(n_rows):
            col4row_out[b, r] = col4row[r]
        total_out[b] = total
        violation_out[b] = violation
        scale_out[b] = scale
        steps_out[b] = steps


# ----------------------------------------------------------------------------- drivers


def orient(big_n: int, big_m: int) -> bool:
    """Whether the rows are the target points (``True``) or the prediction points.

    The rows are the smaller padded side: the search cost grows with the number of rows.
    """
    return big_m < big_n


def rows_to_assignment(
    col4row: np.ndarray, nr: np.ndarray, nk: np.ndarray, transposed: bool, big_n: int
) -> np.ndarray:
    """Turn the row assignment of the oriented problem into ``MatchResult.assignment``.

    Parameters
    ----------
    col4row : int64, shape (B, R)
        Column of every row (entries past ``nr[b]`` ignored).
    nr, nk : int64, shape (B,)
    transposed : bool
        Whether the rows are the target points.
    big_n : int
        Padded number of prediction points N.

    Returns
    -------
    numpy.ndarray, int64, shape (B, N)
    """
    batch, big_r = col4row.shape
    rows_valid = np.arange(big_r)[None, :] < nr[:, None]
    real = rows_valid & (col4row < nk[:, None])
    if not transposed:
        return np.where(real, col4row, -1).astype(np.int64)
    assignment = np.full((batch, big_n), -1, dtype=np.int64)
    b_idx, r_idx = np.nonzero(real)
    assignment[b_idx, col4row[b_idx, r_idx]] = r_idx
    return assignment


def oriented_arrays(cost, diag_pred, diag_target, n, m):
    """(A, dr, dk, nr, nk, transposed) for NumPy inputs; ``A`` C-contiguous."""
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
    A, dr, dk, nr, nk, transposed = oriented_arrays(cost, diag_pred, diag_target, n, m)
    batch = A.shape[0]
    col4row = np.full((batch, A.shape[1]), -1, dtype=np.int64)
    total = np.zeros(batch, dtype=np.float64)
    violation = np.zeros(batch, dtype=np.float64)
    scale = np.zeros(batch, dtype=np.float64)
    steps = np.zeros(batch, dtype=np.int64)
    rounds = np.zeros(batch, dtype=np.int64)
    nr = np.ascontiguousarray(nr, dtype=np.int64)
    nk = np.ascontiguousarray(nk, dtype=np.int64)
    if k_start is None:
        solve_batch_dense(A, dr, dk, nr, nk, col4row, total, violation, scale, steps)
        rounds[:] = 1
    else:
        solve_batch(A, dr, dk, nr, nk, int(k_start), col4row, total, violation, scale, steps,
                    rounds)
    assignment = rows_to_assignment(col4row, nr, nk, transposed, cost.shape[1])
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
    import warnings

    from .matching import _emd_one

    warnings.warn(
        f"{bad.size} matching problem(s) failed the optimality certificate (rounding); "
        "re-solved with ot.emd",
        RuntimeWarning,
        stacklevel=3,
    )
    for b in bad:
        nb, mb = int(n[b]), int(m[b])
        total[b], row = _emd_one(np.asarray(cost[b, :nb, :mb], dtype=np.float64),
                                 np.asarray(diag_pred[b, :nb], dtype=np.float64),
                                 np.asarray(diag_target[b, :mb], dtype=np.float64))
        assignment[b, :] = -1
        assignment[b, :nb] = row
