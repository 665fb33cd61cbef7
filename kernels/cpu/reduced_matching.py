"""Numba kernels of the exact reduced diagram matching (candidate lists, then a small solve).

Two compiled passes over a batch of ``Q`` problems (``n[q]`` prediction points, ``m[q]`` target
points; reduced cost ``r(i, j) = cost(i, j) - diag_pred(i) - diag_target(j)``):

1. *Lists.* For every target point ``j``, the ``min(m, n)`` prediction points of least
   ``r(i, j)`` among those with ``r(i, j) < 0``, kept as a heap while they are built and sorted
   by (``r``, prediction index) at the end. The costs are computed on the fly from the points
   (:func:`lists_from_points`, which visits the prediction points by a lower bound of their
   keys and stops once no later point can enter a list) or read from a dense matrix
   (:func:`lists_from_dense`); nothing of size ``n x m`` is stored. Work items are blocks of
   target points, so one large problem still uses every thread.
2. *Solve.* :func:`solve_lists` solves every problem restricted to the list edges exactly, by
   shortest augmenting paths (the scalar steps of the CPU matching solver, rows = target points,
   a private diagonal column per row; each search stops scanning a sorted list once it cannot
   shorten the path), on list prefixes lengthened until a bound test shows they suffice, and
   checks a dual certificate on the list edges.

Both are serial loops over a range of work items that release the GIL: the driver hands
ranges to a pool of Python threads, which wait on a lock and never spin.

Why the restriction is exact (the argument of the package's matching documentation): take an
optimal matching that uses the fewest pairs outside the lists. A matched pair ``(i, j)`` with
``r(i, j) >= 0`` can be dropped (both points to the diagonal) at no extra cost. If ``j`` is
matched with ``i`` outside its list while ``r(i, j) < 0``, the list of ``j`` is full (``m``
points), and the other ``m - 1`` target points are matched with at most ``m - 1`` of them, so
some ``i'`` of the list goes to the diagonal; matching ``j`` with ``i'`` instead and sending
``i`` to the diagonal changes the cost by ``r(i', j) - r(i, j) <= 0`` and uses one pair outside
the lists fewer, a contradiction. So some optimal matching uses list edges only, and the
restricted problem (on the union of the lists, at most ``m^2`` prediction points; every other
prediction point goes to the diagonal) has the same optimum. Ties may be broken in any way.

Everything here assumes valid, contiguous input: the driver checks and converts.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..common.matching import relaxed_distance, slack
from .matching_sap import _greedy, _heap_push, _pop_closest, _update_duals_and_augment

__all__ = ["lists_from_points", "lists_from_dense", "solve_lists", "list_blocks",
           "TARGET_BLOCK"]

#: Target points per work item of the list pass.
TARGET_BLOCK = 16


def list_blocks(m: np.ndarray, block: int = TARGET_BLOCK) -> np.ndarray:
    """(problem, first target, end target) of every work item of the list pass, int64 (W, 3)."""
    items = [(q, start, min(start + block, int(size)))
             for q, size in enumerate(m) for start in range(0, int(size), block)]
    return np.array(items, dtype=np.int64).reshape(-1, 3)


# ----------------------------------------------------------------------------- list pass


@numba.njit(cache=True, inline="always")
def point_cost(pb, pd, pr, pc, tb, td, tr, tc, height, width, spatial, low, high):
    """Matching cost of a prediction point and a target point (SATLoss, float64)."""
    distance = math.sqrt((pb - tb) ** 2 + (pd - td) ** 2)
    if not spatial:
        return distance
    row = (pr - tr) / height
    col = (pc - tc) / width
    factor = math.sqrt(row * row + col * col)
    return min(max(factor, low), high) * distance


@numba.njit(cache=True, inline="always")
def _swap(cand_pred, cand_key, cand_cost, q, j, a, b):
    cand_pred[q, j, a], cand_pred[q, j, b] = cand_pred[q, j, b], cand_pred[q, j, a]
    cand_key[q, j, a], cand_key[q, j, b] = cand_key[q, j, b], cand_key[q, j, a]
    cand_cost[q, j, a], cand_cost[q, j, b] = cand_cost[q, j, b], cand_cost[q, j, a]


@numba.njit(cache=True)
def _insert(cand_pred, cand_key, cand_cost, cand_len, q, j, cap, i, key, cost):
    """Offer prediction point ``i`` to the list of target ``j`` of problem ``q``.

    While a block is built, a list is a max-heap on the key (its root, entry 0, is the worst
    kept key): a full list replaces its root when ``key`` is smaller. :func:`_sort_lists`
    sorts the lists at the end of the block.
    """
    length = cand_len[q, j]
    if length == cap:
        if not key < cand_key[q, j, 0]:
            return
        pos = 0
        cand_pred[q, j, 0] = i
        cand_key[q, j, 0] = key
        cand_cost[q, j, 0] = cost
        while True:  # sift down
            left = 2 * pos + 1
            if left >= length:
                break
            child = left
            if left + 1 < length and cand_key[q, j, left + 1] > cand_key[q, j, left]:
                child = left + 1
            if not cand_key[q, j, child] > cand_key[q, j, pos]:
                break
            _swap(cand_pred, cand_key, cand_cost, q, j, pos, child)
            pos = child
        return
    pos = length
    cand_len[q, j] = length + 1
    cand_pred[q, j, pos] = i
    cand_key[q, j, pos] = key
    cand_cost[q, j, pos] = cost
    while pos > 0:  # sift up
        parent = (pos - 1) // 2
        if not cand_key[q, j, pos] > cand_key[q, j, parent]:
            break
        _swap(cand_pred, cand_key, cand_cost, q, j, pos, parent)
        pos = parent


@numba.njit(cache=True, inline="always")
def _worst_key(cand_key, cand_len, q, j, cap):
    """The key a new entry must beat: the heap root when full, else ``inf``."""
    return cand_key[q, j, 0] if cand_len[q, j] == cap else math.inf


@numba.njit(cache=True)
def _sort_lists(cand_pred, cand_key, cand_cost, cand_len, q, j0, j1):
    """Sort the lists of targets ``j0:j1`` by (key, prediction index)."""
    for j in range(j0, j1):
        length = cand_len[q, j]
        by_index = np.argsort(cand_pred[q, j, :length])
        keys = cand_key[q, j, :length][by_index]
        order = by_index[np.argsort(keys, kind="mergesort")]
        pred = cand_pred[q, j, :length][order]
        key = cand_key[q, j, :length][order]
        cost = cand_cost[q, j, :length][order]
        cand_pred[q, j, :length] = pred
        cand_key[q, j, :length] = key
        cand_cost[q, j, :length] = cost


@numba.njit(cache=True, nogil=True)
def lists_from_points(pred_birth, pred_death, pred_pixel, target_birth, target_death,
                      target_pixel, n, m, blocks, height, width, spatial, low, high,
                      visit, lower, cand_pred, cand_key, cand_cost, cand_len, first, stop):
    """Candidate lists of every target point, costs computed from the points.

    Parameters
    ----------
    pred_birth, pred_death : float32 or float64, shape (Q, N)
    pred_pixel : int64, shape (Q, N, 2)
        (row, col) of the birth pixels.
    target_birth, target_death : float, shape (Q, M); target_pixel : int64, shape (Q, M, 2)
    n, m : int64, shape (Q,)
    blocks : int64, shape (W, 3)
        Work items from :func:`list_blocks`.
    first, stop : int
        The work items ``first:stop`` are done by this call (disjoint ranges may run in
        concurrent threads: the function releases the GIL).
    height, width : float
        Image size the pixel offsets are divided by.
    spatial : bool; low, high : float
        Spatial factor on/off and its clamp.
    visit : int64, shape (Q, N)
        Order in which the prediction points of each problem are visited: by ``lower``.
    lower : float64, shape (Q, N)
        ``lower[q, k]`` is a lower bound of ``cost - diag_pred`` of the point ``visit[q, k]``
        with every target point of problem ``q``, non-decreasing in ``k``: a block stops
        once it reaches every list's current limit (all later points would be rejected).
    cand_pred : int64, shape (Q, M, K), written
        Prediction indices of each list (``K >= min(m[q], n[q])``).
    cand_key : float64, shape (Q, M, K), written
        ``cost - diag_pred`` of each entry (the reduced cost plus ``diag_target(j)``).
    cand_cost : float64, shape (Q, M, K), written
        The cost of each entry.
    cand_len : int64, shape (Q, M), written
        List lengths.
    """
    sqrt2 = math.sqrt(2.0)
    low2, high2 = low * low, high * high
    for w in range(first, stop):
        q, j0, j1 = blocks[w, 0], blocks[w, 1], blocks[w, 2]
        cap = min(m[q], n[q])
        for j in range(j0, j1):
            cand_len[q, j] = 0
        block_limit = math.inf
        changed = True
        for k in range(n[q]):
            if changed:  # the limits only move when a list changes
                block_limit = -math.inf
                for j in range(j0, j1):
                    length = cand_len[q, j]
                    if length == cap:
                        block_limit = max(block_limit, cand_key[q, j, 0])
                    else:
                        block_limit = max(block_limit, abs(np.float64(target_death[q, j])
                                                           - np.float64(target_birth[q, j]))
                                          / sqrt2)
                changed = False
            if lower[q, k] >= block_limit:
                break
            i = visit[q, k]
            pb = np.float64(pred_birth[q, i])
            pd = np.float64(pred_death[q, i])
            pr = np.float64(pred_pixel[q, i, 0])
            pc = np.float64(pred_pixel[q, i, 1])
            diag_pred = abs(pd - pb) / sqrt2
            for j in range(j0, j1):
                tb = np.float64(target_birth[q, j])
                td = np.float64(target_death[q, j])
                limit = min(_worst_key(cand_key, cand_len, q, j, cap), abs(td - tb) / sqrt2)
                # Cheap rejection without square roots: key < limit needs cost < reach.
                reach = limit + diag_pred
                if reach <= 0.0:
                    continue
                squared = (pb - tb) ** 2 + (pd - td) ** 2
                tr = np.float64(target_pixel[q, j, 0])
                tc = np.float64(target_pixel[q, j, 1])
                if spatial:
                    row = (pr - tr) / height
                    col = (pc - tc) / width
                    squared *= min(max(row * row + col * col, low2), high2)
                if squared > reach * reach * (1.0 + 1e-9):
                    continue
                cost = point_cost(pb, pd, pr, pc, tb, td, tr, tc, height, width, spatial, low,
                                  high)
                key = cost - diag_pred
                if key < limit:
                    _insert(cand_pred, cand_key, cand_cost, cand_len, q, j, cap, i, key, cost)
                    changed = True
        _sort_lists(cand_pred, cand_key, cand_cost, cand_len, q, j0, j1)


@numba.njit(cache=True, nogil=True)
def lists_from_dense(cost, diag_pred, diag_target, n, m, blocks, cand_pred, cand_key,
                     cand_cost, cand_len, first, stop):
    """Candidate lists of every target point from dense costs (Q, N, M); see
    :func:`lists_from_points` for the other arguments and the outputs."""
    for w in range(first, stop):
        q, j0, j1 = blocks[w, 0], blocks[w, 1], blocks[w, 2]
        cap = min(m[q], n[q])
        for j in range(j0, j1):
            cand_len[q, j] = 0
        for i in range(n[q]):
            dp = np.float64(diag_pred[q, i])
            for j in range(j0, j1):
                value = np.float64(cost[q, i, j])
                key = value - dp
                if key < np.float64(diag_target[q, j]) and key < _worst_key(cand_key, cand_len,
                                                                           q, j, cap):
                    _insert(cand_pred, cand_key, cand_cost, cand_len, q, j, cap, i, key, value)
        _sort_lists(cand_pred, cand_key, cand_cost, cand_len, q, j0, j1)


# ----------------------------------------------------------------------------- solve pass


@numba.njit(cache=True)
def _certify_lists(diag_target, q, rows, n_cols, cols_pred, diag_pred_cols, cand, key, length,
                   u, v, row4col, col4row):
    """(violation, scale) of the dual certificate of the list-restricted problem ``q``."""
    violation = 0.0
    scale = 0.0
    for c in range(n_cols):
        scale = max(scale, abs(diag_pred_cols[c]))
        if row4col[c] == -1:
            violation = max(violation, abs(v[c]))
        else:
            violation = max(violation, v[c])
    for r in range(rows):
        u_r = u[r]
        matched = col4row[r]
        for e in range(length[0, r]):
            c = cand[0, r, e]
            scale = max(scale, abs(key[0, r, e]))
            gap = slack(key[0, r, e], u_r, v[c])
            violation = max(violation, -gap)
            if c == matched:
                violation = max(violation, abs(gap))
        private = np.float64(diag_target[q, r])
        scale = max(scale, abs(private))
        gap = slack(private, u_r, v[n_cols + r])
        violation = max(violation, -gap)
        if matched == n_cols + r:
            violation = max(violation, abs(gap))
        elif row4col[n_cols + r] == -1:
            violation = max(violation, abs(v[n_cols + r]))
    return violation, scale


@numba.njit(cache=True)
def _augment_row_pruned(row_diag, b, cur, n_cols, cand, key, length, u, v, row4col, col4row,
                        path_cost, path, done, scanned, visited, touched, heap_value, heap_key):
    """One Dijkstra search from the unassigned row ``cur`` over sorted lists, pruned.

    The search of the CPU matching solver, with one addition: ``bound`` is the least distance
    to a free column found so far, an upper bound of the shortest augmenting path. Lists are
    sorted by cost and column duals are never positive, so once ``min_value + cost - u[i]``
    reaches ``bound`` no later entry of row ``i`` (nor its private column, dearer than every
    entry) can shorten the path: the scan of the row stops there. On nearly identical lists
    (every target point wanting the same strong prediction points) this cuts the searches from
    whole lists to short prefixes. Returns the number of columns popped.
    """
    n_all = path_cost.shape[0]
    min_value = 0.0
    i = cur
    n_scanned = 0
    n_visited = 0
    n_touched = 0
    size = 0
    sink = -1
    bound = math.inf
    while sink == -1:
        scanned[n_scanned] = i
        n_scanned += 1
        u_i = u[i]
        row_length = length[0, i]
        for e in range(row_length + 1):
            if e < row_length:
                col = cand[0, i, e]
                cost = key[0, i, e]
            else:
                col = n_cols + i
                cost = np.float64(row_diag[b, i])
            if (min_value + cost) - u_i >= bound:
                break
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
                if taken == 0 and dist < bound:
                    bound = dist
                size = _heap_push(heap_value, heap_key, size, dist, taken * n_all + col)
        best_value, best_col, size = _pop_closest(heap_value, heap_key, size, done, path_cost,
                                                  n_all)
        min_value = best_value
        done[best_col] = True
        visited[n_visited] = best_col
        n_visited += 1
        if row4col[best_col] == -1:
            sink = best_col
        else:
            i = row4col[best_col]
    _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited, path_cost,
                              path, u, v, row4col, col4row)
    for k in range(n_touched):
        path_cost[touched[k]] = math.inf
        done[touched[k]] = False
    return n_visited


@numba.njit(cache=True)
def _solve_prefix(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target, q, rows,
                  base, k_max, pred_of_target, total_out, violation_out, scale_out):
    """Solve problem ``q`` on the first ``k_max`` entries of every list; write its outputs.

    Returns whether the prefixes sufficed: every row's dual ``u`` is at most the key of its
    first left-out entry. Then every left-out list edge has a non-negative slack (the column
    duals are never positive), so the duals certify the solution on the full lists too.
    """
    width = min(k_max, max(1, cand_pred.shape[2]))
    total = 0
    for j in range(rows):
        total += min(cand_len[q, j], width)
    flat = np.empty(total, dtype=np.int64)
    k = 0
    for j in range(rows):
        for e in range(min(cand_len[q, j], width)):
            flat[k] = cand_pred[q, j, e]
            k += 1
    cols = np.unique(flat)
    n_cols = cols.shape[0]
    cand = np.empty((1, rows, width), dtype=np.int64)
    key = np.empty((1, rows, width), dtype=np.float64)
    length = np.empty((1, rows), dtype=np.int64)
    bound = np.empty(rows, dtype=np.float64)
    for j in range(rows):
        length[0, j] = min(cand_len[q, j], width)
        bound[j] = cand_key[q, j, width] if cand_len[q, j] > width else math.inf
        for e in range(length[0, j]):
            cand[0, j, e] = np.searchsorted(cols, cand_pred[q, j, e])
            key[0, j, e] = cand_key[q, j, e]
    nc = n_cols + rows
    u = np.zeros(rows, dtype=np.float64)
    v = np.zeros(nc, dtype=np.float64)
    row4col = np.full(nc, -1, dtype=np.int64)
    col4row = np.full(rows, -1, dtype=np.int64)
    path_cost = np.full(nc, math.inf, dtype=np.float64)
    path = np.full(nc, -1, dtype=np.int64)
    done = np.zeros(nc, dtype=np.bool_)
    scanned = np.empty(rows, dtype=np.int64)
    visited = np.empty(nc, dtype=np.int64)
    touched = np.empty(nc, dtype=np.int64)
    heap_cap = rows * (width + 1) + 1
    hv = np.empty(heap_cap, dtype=np.float64)
    hk = np.empty(heap_cap, dtype=np.int64)
    _greedy(diag_target, q, rows, n_cols, cand, key, length, u, row4col, col4row)
    for cur in range(rows):
        if col4row[cur] == -1:
            _augment_row_pruned(diag_target, q, cur, n_cols, cand, key, length, u, v, row4col,
                                col4row, path_cost, path, done, scanned, visited, touched, hv, hk)
    for j in range(rows):
        if u[j] > bound[j]:
            return False
    diag_cols = np.empty(n_cols, dtype=np.float64)
    for c in range(n_cols):
        diag_cols[c] = np.float64(diag_pred[q, cols[c]])
    violation, scale = _certify_lists(diag_target, q, rows, n_cols, cols, diag_cols, cand, key,
                                      length, u, v, row4col, col4row)
    value = base
    for j in range(rows):
        c = col4row[j]
        pred_of_target[q, j] = -1
        if c < n_cols:
            for e in range(length[0, j]):
                if cand[0, j, e] == c:
                    value += cand_cost[q, j, e] - diag_cols[c]
                    break
            pred_of_target[q, j] = cols[c]
        else:
            value += np.float64(diag_target[q, j])
    total_out[q] = value
    violation_out[q] = violation
    scale_out[q] = scale
    return True


@numba.njit(cache=True)
def _solve_one(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target, q, rows,
               n_pred, k_start, pred_of_target, total_out, violation_out, scale_out):
    """Solve problem ``q`` on its lists: prefixes of ``k_start`` entries, four times longer
    until they suffice (the full lists always do); write its outputs."""
    base = 0.0
    for i in range(n_pred):
        base += np.float64(diag_pred[q, i])
    for j in range(rows):
        pred_of_target[q, j] = -1
    total_out[q] = base
    violation_out[q] = 0.0
    scale_out[q] = 0.0
    if rows == 0:
        return
    longest = 0
    for j in range(rows):
        longest = max(longest, cand_len[q, j])
    k_max = max(1, min(k_start, longest))
    while not _solve_prefix(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target,
                            q, rows, base, k_max, pred_of_target, total_out, violation_out,
                            scale_out):
        k_max = min(4 * k_max, longest)


@numba.njit(cache=True, nogil=True)
def solve_lists(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target, n, m, order,
                k_start, pred_of_target, total_out, violation_out, scale_out, first, stop):
    """Solve problems ``order[first:stop]`` restricted to their candidate lists.

    Releases the GIL: disjoint ranges may run in concurrent threads.

    Parameters
    ----------
    cand_pred, cand_key, cand_cost : shape (Q, M, K); cand_len : int64, shape (Q, M)
        The lists of :func:`lists_from_points` / :func:`lists_from_dense`.
    diag_pred : float, shape (Q, N); diag_target : float, shape (Q, M)
        Diagonal costs.
    n, m : int64, shape (Q,)
    order : int64, shape (Q,)
        Problems in the order they are handed to the threads (largest first balances them).
    k_start : int
        First prefix length of the lists (lengthened four times until it suffices).
    first, stop : int
        The range of ``order`` solved by this call.
    pred_of_target : int64, shape (Q, M), written
        Prediction point matched with each target point, or -1 (the diagonal).
    total_out, violation_out, scale_out : float64, shape (Q,), written
        Optimal total and the certificate: the problem is certified when
        ``violation <= rtol * scale``.
    """
    for k in range(first, stop):
        q = order[k]
        _solve_one(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target, q, m[q],
                   n[q], k_start, pred_of_target, total_out, violation_out, scale_out)
