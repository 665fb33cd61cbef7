"""Exact diagram matching by sparse shortest augmenting paths, compiled with Numba for the CPU.

The problem of :func:`satloss_gpu.matching.match_batch` is written as a rectangular assignment
problem.
One side of the diagrams (the smaller padded side) gives the *rows*, the other side the *real
columns*; every row ``r`` also owns a *private diagonal column* ``n_cols + r`` that only it can use:

* row ``r`` to real column ``k`` costs ``A[r, k] - col_diag[k]`` (the diagonal cost of column ``k``
  is paid up front, in ``sum(col_diag)``, and refunded when ``k`` is matched);
* row ``r`` to its private column costs ``row_diag[r]``; every other private column is forbidden.

Every row is assigned, every column at most once, and the optimum of the diagram matching is
``sum(col_diag) + `` the optimum of this assignment. It is solved exactly by the rectangular
shortest-augmenting-path method (Jonker-Volgenant / Hungarian, in the form of Crouse,
"On implementing 2D rectangular assignment algorithms", IEEE TAES 2016): a greedy start, then
one Dijkstra search in reduced costs per unassigned row, duals ``u`` (rows) and ``v <= 0``
(columns) kept feasible throughout.

Sparsity
--------
The searches run over *candidate lists*, not over all columns: row ``r`` keeps the ``K``
cheapest real columns (by the key (cost, column)) among those with ``A[r,
                       k] - col_diag[k] < row_diag[r]``
(a pair with a non-negative reduced cost ``cost - dp - dt`` is never needed: sending both
points to the diagonal is no worse), plus its private column. The restriction is verified, not
assumed: a certificate on the *full* problem (every row, every real column) checks dual
feasibility, complementary slackness and the sign conditions of the duals at the end. Two
facts make it pass in practice: a row on its private column can never be moved again (no
other row reaches that column), so private duals stay 0 and ``u[r] <= row_diag[r]``; and ``v <= 0``,
so a left-out edge has slack at least ``cost - u[r]``, non-negative unless ``K`` was too small
for that row. Each row keeps the cost of its first left-out column as a bound; a problem where
some row ends with ``u[r]`` above its bound, or whose certificate fails, is solved again with
``4 K`` (``K`` capped at
the number of columns, where only the ``cost < row_diag`` cut is left), and with POT if it still
fails (rounding).

Each Dijkstra step relaxes the candidate list of one row and pops the open column of least
key (distance, column taken, column index) from a binary heap with lazy deletion.

The dense solver (``solve_batch_dense``: every step scans every column) is kept as the
sequential twin of the CUDA kernel of :mod:`satloss_gpu.kernels.cuda.matching_sap`: same greedy
start, same searches, same tie rule, so both return the same matching in the same number of
steps (a test checks it).

The scalar functions (:mod:`satloss_gpu.kernels.common.matching`) are plain ``numba.njit``
functions: the CUDA kernel calls them too.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..common.matching import CERTIFICATE_RTOL, edge_cost, is_better, relaxed_distance, slack

__all__ = ["solve_batch", "solve_batch_dense", "build_row_list", "row_bound"]


@numba.njit(cache=True)
def build_row_list(A, row_diag, col_diag, b, r, n_cols, k_max, cand, cand_cost, s):
    """Write the candidate list of row ``r`` of problem ``b`` to ``cand[s, r]``; return its length.

    The ``k_max`` (the capacity) smallest (cost,
                   column) among the real columns with cost ``< row_diag[b, r]``,
    sorted by that key; ``cand_cost`` holds their costs.
    """
    limit = np.float64(row_diag[b, r])
    length = 0
    for c in range(n_cols):
        value = edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
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
def list_edge(row_diag, b, i, e, length, n_cols, cand, cand_cost, s):
    """(column, cost) of entry ``e`` of row ``i``'s list; entry ``length`` is the private column."""
    if e < length:
        return cand[s, i, e], cand_cost[s, i, e]
    return n_cols + i, np.float64(row_diag[b, i])


# ----------------------------------------------------------------------------- binary heap


@numba.njit(cache=True, inline="always")
def _heap_less(heap_value, heap_key, a, b):
    if heap_value[a] != heap_value[b]:
        return heap_value[a] < heap_value[b]
    return heap_key[a] < heap_key[b]


@numba.njit(cache=True)
def _heap_push(heap_value, heap_key, size, value, key):
    """Push (value, key) on the min-heap of ``size`` entries; return the new size."""
    pos = size
    heap_value[pos] = value
    heap_key[pos] = key
    while pos > 0:
        parent = (pos - 1) // 2
        if not _heap_less(heap_value, heap_key, pos, parent):
            break
        heap_value[pos], heap_value[parent] = heap_value[parent], heap_value[pos]
        heap_key[pos], heap_key[parent] = heap_key[parent], heap_key[pos]
        pos = parent
    return size + 1


@numba.njit(cache=True)
def _heap_pop(heap_value, heap_key, size):
    """Remove the smallest entry (returned by the caller from index 0); return the new size."""
    size -= 1
    heap_value[0] = heap_value[size]
    heap_key[0] = heap_key[size]
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and _heap_less(heap_value, heap_key, left + 1, left):
            child = left + 1
        if not _heap_less(heap_value, heap_key, child, pos):
            break
        heap_value[pos], heap_value[child] = heap_value[child], heap_value[pos]
        heap_key[pos], heap_key[child] = heap_key[child], heap_key[pos]
        pos = child
    return size


@numba.njit(cache=True)
def _pop_closest(heap_value, heap_key, size, done, path_cost, n_cols):
    """Pop heap entries until the closest column not yet done at its current path cost (stale
    entries are skipped); return ``(distance, column, new size)``."""
    while True:
        best_value = heap_value[0]
        best_col = heap_key[0] % n_cols
        size = _heap_pop(heap_value, heap_key, size)
        if not done[best_col] and best_value == path_cost[best_col]:
            return best_value, best_col, size


# ----------------------------------------------------------------------------- one problem


@numba.njit(cache=True)
def _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited,
                              path_cost,
                              path, u, v, row4col, col4row):
    """End of a shortest-path search: update the duals of the scanned rows and visited
    columns (before ``col4row`` changes), then flip the alternating path from ``sink``."""
    for k in range(n_scanned):
        i = scanned[k]
        if i == cur:
            u[i] += min_value
        else:
            u[i] += min_value - path_cost[col4row[i]]
    for k in range(n_visited):
        col = visited[k]
        v[col] -= min_value - path_cost[col]
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
def _greedy(row_diag, b, n_rows, n_cols, cand, cand_cost, cand_len, u, row4col, col4row):
    """Give every row its cheapest column (list head, else private) when still free, in order."""
    for r in range(n_rows):
        if cand_len[0, r] > 0:
            best_col = cand[0, r, 0]
            best_value = cand_cost[0, r, 0]
        else:
            best_col = n_cols + r
            best_value = np.float64(row_diag[b, r])
        u[r] = best_value
        if row4col[best_col] == -1:
            row4col[best_col] = r
            col4row[r] = best_col


@numba.njit(cache=True)
def _augment_row(row_diag, b, cur, n_cols, cand, cand_cost, cand_len, u, v, row4col, col4row,
                 path_cost,
                 path, done, scanned, visited, touched, heap_value, heap_key):
    """One Dijkstra search from the unassigned row ``cur``; augment and update the duals.

    Returns the number of columns popped (the search's step count).
    """
    nc = path_cost.shape[0]
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
            col, cost = list_edge(row_diag, b, i, e, length, n_cols, cand, cand_cost, 0)
            if done[col]:
                continue
            dist = relaxed_distance(min_value, cost, u_i, v[col])
            if dist < path_cost[col]:
                if path_cost[col] == math.inf:
                    touched[n_touched] = col
                    n_touched += 1
                path_cost[col] = dist
                path[col] = i
                taken = 1 if row4col[col] != -1 else 0
                size = _heap_push(heap_value, heap_key, size, dist, taken * nc + col)
        best_value, best_col, size = _pop_closest(heap_value, heap_key, size, done, path_cost, nc)
        min_value = best_value
        done[best_col] = True
        visited[n_visited] = best_col
        n_visited += 1
        if row4col[best_col] == -1:
            sink = best_col
        else:
            i = row4col[best_col]
    _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited,
                              path_cost,
                              path, u, v, row4col, col4row)
    # Reset the search state of every touched column.
    for k in range(n_touched):
        path_cost[touched[k]] = math.inf
        done[touched[k]] = False
    return n_visited


@numba.njit(cache=True)
def _certify(A, row_diag, col_diag, b, n_rows, n_cols, u, v, row4col, col4row):
    """Return (total, violation, scale) of a solved problem, checked on the full problem."""
    violation = 0.0
    scale = 0.0
    total = 0.0
    for c in range(n_cols):
        scale = max(scale, abs(np.float64(col_diag[b, c])))
        if row4col[c] == -1:
            total += np.float64(col_diag[b, c])
            violation = max(violation, abs(v[c]))
        else:
            violation = max(violation, v[c])
    for r in range(n_rows):
        u_r = u[r]
        for c in range(n_cols):
            cost = edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
            scale = max(scale, abs(cost))
            violation = max(violation, -slack(cost, u_r, v[c]))
        cost = np.float64(row_diag[b, r])
        scale = max(scale, abs(cost))
        violation = max(violation, -slack(cost, u_r, v[n_cols + r]))
        c = col4row[r]
        assigned_cost = edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
        violation = max(violation, abs(slack(assigned_cost, u_r, v[c])))
        total += np.float64(A[b, r, c]) if c < n_cols else cost
        if row4col[n_cols + r] == -1:
            violation = max(violation, abs(v[n_cols + r]))
    return total, violation, scale


@numba.njit(cache=True)
def row_bound(row_diag, b, r, k_max, cand, cand_cost, cand_len, s):
    """Trim row ``r``'s list (built with capacity ``k_max + 1``) to ``k_max``; return its bound.

    The bound is the cost of the first left-out column (``inf`` when none was left out): the
    restriction loses nothing for row ``r`` when ``u[r] <= bound``.
    """
    if cand_len[s, r] > k_max:
        cand_len[s, r] = k_max
        return cand_cost[s, r, k_max]
    return math.inf


@numba.njit(cache=True)
def _solve_once(A, row_diag, col_diag, b, n_rows, n_cols, k_max, col4row_out):
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
        cand_len[0, r] = build_row_list(A, row_diag, col_diag, b, r, n_cols, cap, cand, cand_cost,
                 0)
        bound[r] = row_bound(row_diag, b, r, k_max, cand, cand_cost, cand_len, 0)
    u = np.zeros(n_rows, dtype=np.float64)
    v = np.zeros(nc, dtype=np.float64)
    row4col = np.full(nc, -1, dtype=np.int64)
    col4row = np.full(n_rows, -1, dtype=np.int64)
    path_cost = np.full(nc, math.inf, dtype=np.float64)
    path = np.full(nc, -1, dtype=np.int64)
    done = np.zeros(nc, dtype=np.bool_)
    scanned = np.empty(n_rows, dtype=np.int64)
    visited = np.empty(nc, dtype=np.int64)
    touched = np.empty(nc, dtype=np.int64)
    heap_cap = n_rows * cap + 1
    heap_value = np.empty(heap_cap, dtype=np.float64)
    heap_key = np.empty(heap_cap, dtype=np.int64)
    _greedy(row_diag, b, n_rows, n_cols, cand, cand_cost, cand_len, u, row4col, col4row)
    steps = 0
    for cur in range(n_rows):
        if col4row[cur] == -1:
            steps += _augment_row(row_diag, b, cur, n_cols, cand, cand_cost, cand_len, u, v,
                                  row4col,
                                  col4row, path_cost, path, done, scanned, visited, touched,
                                  heap_value, heap_key)
    for r in range(n_rows):
        col4row_out[b, r] = col4row[r]
    sufficed = True
    for r in range(n_rows):
        if u[r] > bound[r]:
            sufficed = False
    if not sufficed and k_max < n_cols:
        return 0.0, math.inf, 0.0, steps, False
    total, violation, scale = _certify(A, row_diag, col_diag, b, n_rows, n_cols, u, v, row4col,
                                       col4row)
    return total, violation, scale, steps, sufficed


@numba.njit(cache=True, parallel=True)
def solve_batch(A, row_diag, col_diag, row_counts, col_counts, k_start, col4row_out, total_out,
                violation_out, scale_out,
                steps_out, rounds_out):
    """Solve every problem of the oriented batch (see :func:`orient`), in parallel.

    Parameters
    ----------
    A : float32 or float64, shape (B, R, K)
    row_diag : shape (B, R); col_diag : shape (B, K)
    row_counts, col_counts : int64, shape (B,)
    k_start : int
        First candidate-list length; a row whose list proved too short is solved again
        with a list 4 times longer, up to the number of columns.
    col4row_out : int64, shape (B, R), written: the column of every row (``>= col_counts[b]``:
        private).
    total_out, violation_out, scale_out : float64, shape (B,), written.
    steps_out, rounds_out : int64, shape (B,), written: Dijkstra steps taken (all rounds) and
        the number of list lengths tried (for benchmarks).
    """
    for b in numba.prange(A.shape[0]):
        n_rows = row_counts[b]
        n_cols = col_counts[b]
        k_max = min(max(1, k_start), max(1, n_cols))
        steps = 0
        rounds = 0
        while True:
            total, violation, scale, taken, sufficed = _solve_once(
                A, row_diag, col_diag, b, n_rows, n_cols, k_max, col4row_out)
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
def _greedy_dense(A, row_diag, col_diag, b, n_rows, n_cols, u, row4col, col4row):
    """Give every row its cheapest column (all columns scanned) when still free, in order."""
    for r in range(n_rows):
        best_value = math.inf
        best_col = -1
        for c in range(n_cols):
            value = edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
            if value < best_value:
                best_value = value
                best_col = c
        value = edge_cost(A, row_diag, col_diag, b, r, n_cols + r, n_cols)
        if value < best_value:
            best_value = value
            best_col = n_cols + r
        u[r] = best_value
        if row4col[best_col] == -1:
            row4col[best_col] = r
            col4row[r] = best_col


@numba.njit(cache=True)
def _augment_row_dense(A, row_diag, col_diag, b, cur, n_rows, n_cols, u, v, row4col, col4row,
                       path_cost, path, done,
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
        for t in range(n_cols + n_scanned):
            col = t if t < n_cols else n_cols + scanned[t - n_cols]
            if done[col]:
                continue
            cost = edge_cost(A, row_diag, col_diag, b, i, col, n_cols)
            if cost < math.inf:
                dist = relaxed_distance(min_value, cost, u_i, v[col])
                if dist < path_cost[col]:
                    path_cost[col] = dist
                    path[col] = i
            taken = 1 if row4col[col] != -1 else 0
            if is_better(path_cost[col], taken, col, best_value, best_taken, best_col):
                best_value = path_cost[col]
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
    _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited,
                              path_cost,
                              path, u, v, row4col, col4row)
    for c in range(n_cols):
        path_cost[c] = math.inf
        done[c] = False
    for k in range(n_scanned):
        c = n_cols + scanned[k]
        path_cost[c] = math.inf
        done[c] = False
    return n_scanned


@numba.njit(cache=True, parallel=True)
def solve_batch_dense(A, row_diag, col_diag, row_counts, col_counts, col4row_out, total_out,
                      violation_out, scale_out,
                      steps_out):
    """Dense version of :func:`solve_batch` (no candidate lists): the CUDA kernel's twin."""
    for b in numba.prange(A.shape[0]):
        n_rows = row_counts[b]
        n_cols = col_counts[b]
        nc = n_cols + n_rows
        u = np.zeros(n_rows, dtype=np.float64)
        v = np.zeros(nc, dtype=np.float64)
        row4col = np.full(nc, -1, dtype=np.int64)
        col4row = np.full(n_rows, -1, dtype=np.int64)
        path_cost = np.full(nc, math.inf, dtype=np.float64)
        path = np.full(nc, -1, dtype=np.int64)
        done = np.zeros(nc, dtype=np.bool_)
        scanned = np.empty(n_rows, dtype=np.int64)
        visited = np.empty(nc, dtype=np.int64)
        _greedy_dense(A, row_diag, col_diag, b, n_rows, n_cols, u, row4col, col4row)
        steps = 0
        for cur in range(n_rows):
            if col4row[cur] == -1:
                steps += _augment_row_dense(A, row_diag, col_diag, b, cur, n_rows, n_cols, u, v,
                                            row4col,
                                            col4row, path_cost, path, done, scanned, visited)
        total, violation, scale = _certify(A, row_diag, col_diag, b, n_rows, n_cols, u, v,
                                           row4col, col4row)
        for r in range(n_rows):
            col4row_out[b, r] = col4row[r]
        total_out[b] = total
        violation_out[b] = violation
        scale_out[b] = scale
        steps_out[b] = steps
