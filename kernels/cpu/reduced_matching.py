"""Numba kernels of the exact reduced diagram matching: short candidate lists, a dual certificate.

A batch of ``Q`` problems (``n[q]`` prediction points, ``m[q]`` target points; reduced cost
``r(i, j) = cost(i, j) - diag_pred(i) - diag_target(j)``) is solved as an assignment problem
whose rows are the target points (each with a private diagonal column) and whose columns are
the prediction points (see :mod:`satloss_gpu.kernels.cpu.matching_sap`), restricted to short
candidate lists that grow until a dual certificate on *all* pairs holds. Three compiled passes,
called in rounds by :mod:`satloss_gpu.matching._reduced`:

1. *Pricing* (:func:`price_points`, :func:`price_dense`). Given row duals ``u`` (Q, M) and
   column duals ``v <= 0`` (Q, N) (``v = 0`` for prediction points outside the lists), every
   pair with ``cost - diag_pred - v_i - u_j < -tol`` violates dual feasibility; each row keeps
   the ``K`` most violating ones (a max-heap on that reduced cost). The costs are computed on
   the fly from the points (prediction points visited by a lower bound of their keys, stopping
   once no later point can violate anything) or read from a dense matrix; nothing of size
   ``n x m`` is stored. The first round uses ``u = diag_target``, ``v = 0``, ``tol = 0``: the
   ``K`` cheapest pairs of negative reduced cost of every target point (a pair with
   ``r >= 0`` is never needed: sending both points to the diagonal is no worse). Work items
   are blocks of target points, so one large problem still uses every thread.
2. *Merge* (:func:`merge_lists`): the new pairs join the lists, which stay sorted by
   (``cost - diag_pred``, prediction index).
3. *Solve* (:func:`solve_lists`): every problem restricted to its lists, exactly, by shortest
   augmenting paths (the scalar steps of the CPU matching solver; each search stops scanning a
   sorted list once it cannot shorten the path), with a dual certificate on the list edges;
   it returns the duals that the next pricing checks, the row duals raised as far as the
   matching allows (:func:`_raise_row_duals`: on tied targets this is what lets pricing
   pass after a round or two instead of freeing every row for about 20 rounds).

The first lists also hold each target point's *partner* when it has one
(:func:`add_partners`): for SATLoss, the prediction point born at the target point's birth
pixel, the natural match of a component that the prediction reproduces.

When a pricing round finds no violating pair, the duals are feasible for the full problem and
complementary slackness holds on the lists (the certificate), so the matching is optimal for
the full problem: exact and certified, in ``O(n + m K r)`` memory after ``r`` rounds.

Every pass is a serial loop over a range of work items that releases the GIL: the driver hands
ranges to a pool of Python threads, which wait on a lock and never spin, and returns to Python
between slices of work so that a ``KeyboardInterrupt`` is honoured quickly.

Everything here assumes valid, contiguous input: the driver checks and converts.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..common.matching import relaxed_distance, slack
from .matching_sap import (_greedy, _heap_pop, _heap_push, _pop_closest,
                          _update_duals_and_augment)

__all__ = ["price_points", "price_dense", "merge_lists", "add_partners", "solve_lists",
           "list_blocks", "TARGET_BLOCK"]

#: Target points per work item of the list pass.
TARGET_BLOCK = 16


def list_blocks(m: np.ndarray, block: int = TARGET_BLOCK) -> np.ndarray:
    """(problem, first target, end target) of every work item of the list pass, int64 (W, 3)."""
    items = [(q, start, min(start + block, int(size)))
             for q, size in enumerate(m) for start in range(0, int(size), block)]
    return np.array(items, dtype=np.int64).reshape(-1, 3)


# ----------------------------------------------------------------------------- pricing


@numba.njit(cache=True, inline="always")
def pixel_of(pixels, q, i):
    """(z, row, col) of point ``i`` of problem ``q`` as float64; ``pixels`` is (Q, N, 2)
    (images: z = 0) or (Q, N, 3) (volumes)."""
    if pixels.shape[2] == 3:
        return (np.float64(pixels[q, i, 0]), np.float64(pixels[q, i, 1]),
                np.float64(pixels[q, i, 2]))
    return 0.0, np.float64(pixels[q, i, 0]), np.float64(pixels[q, i, 1])


@numba.njit(cache=True, inline="always")
def spatial_squared(pz, pr, pc, tz, tr, tc, depth, height, width):
    """Squared spatial distance of two birth pixels, each axis divided by the image size
    (``depth`` 1 and z 0 for images: the 2D distance, bit for bit)."""
    z = (pz - tz) / depth
    row = (pr - tr) / height
    col = (pc - tc) / width
    return z * z + row * row + col * col


@numba.njit(cache=True, inline="always")
def point_cost(pb, pd, pz, pr, pc, tb, td, tz, tr, tc, depth, height, width, spatial, low,
               high):
    """Matching cost of a prediction point and a target point (SATLoss, float64)."""
    distance = math.sqrt((pb - tb) ** 2 + (pd - td) ** 2)
    if not spatial:
        return distance
    factor = math.sqrt(spatial_squared(pz, pr, pc, tz, tr, tc, depth, height, width))
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
    kept key): a full list replaces its root when ``key`` is smaller.
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
def _key_limit(new_rc, new_len, q, j, cap, u_j, tol):
    """A pair's ``cost - diag_pred - v_i`` must stay below this to enter row ``j``'s heap:
    ``u_j`` plus the reduced cost to beat (``-tol``, or the heap's worst when it is full)."""
    worst = new_rc[q, j, 0] if new_len[q, j] == cap else math.inf
    return u_j + min(-tol, worst)


@numba.njit(cache=True)
def _sort_row(cand_pred, cand_key, cand_cost, q, j, start, length):
    """Insert entries ``start:length`` of row ``j`` into its sorted prefix ``0:start``, by
    (key, prediction index): an insertion sort, short and cheap to compile (lists are short
    and mostly sorted already)."""
    for e in range(start, length):
        i = cand_pred[q, j, e]
        key = cand_key[q, j, e]
        cost = cand_cost[q, j, e]
        pos = e
        while pos > 0 and (cand_key[q, j, pos - 1] > key
                           or (cand_key[q, j, pos - 1] == key and cand_pred[q, j, pos - 1] > i)):
            cand_pred[q, j, pos] = cand_pred[q, j, pos - 1]
            cand_key[q, j, pos] = cand_key[q, j, pos - 1]
            cand_cost[q, j, pos] = cand_cost[q, j, pos - 1]
            pos -= 1
        cand_pred[q, j, pos] = i
        cand_key[q, j, pos] = key
        cand_cost[q, j, pos] = cost


@numba.njit(cache=True, nogil=True)
def price_points(pred_birth, pred_death, pred_pixel, target_birth, target_death,
                 target_pixel, n, m, blocks, depth, height, width, spatial, low, high,
                 visit, lower, u, v, tol, new_pred, new_rc, new_cost, new_len, first, stop):
    """The most violating pairs of every target point, costs computed from the points.

    Parameters
    ----------
    pred_birth, pred_death : float32 or float64, shape (Q, N)
    pred_pixel : int64, shape (Q, N, 2) or (Q, N, 3)
        (row, col) of the birth pixels; (z, row, col) of the birth voxels of volumes.
    target_birth, target_death : float, shape (Q, M); target_pixel : int64, shape (Q, M, 2)
        or (Q, M, 3)
    n, m : int64, shape (Q,)
    blocks : int64, shape (W, 3)
        Work items (problem, first target, end target), from :func:`list_blocks`.
    depth, height, width : float
        Image size the pixel offsets are divided by (``depth`` 1 for images).
    spatial : bool; low, high : float
        Spatial factor on/off and its clamp.
    visit : int64, shape (Q, N)
        Order in which the prediction points of each problem are visited: by ``lower``.
    lower : float64, shape (Q, N)
        ``lower[q, k]`` is a lower bound of ``cost - diag_pred`` of the point ``visit[q, k]``
        with every target point of problem ``q``, non-decreasing in ``k``: a block stops
        once it reaches every row's limit (``v <= 0``, so no later point can violate).
    u : float64, shape (Q, M); v : float64, shape (Q, N); tol : float64, shape (Q,)
        Row and column duals and the tolerance of each problem.
    new_pred, new_rc, new_cost : shape (Q, M, K), written
        Prediction index, reduced cost ``cost - diag_pred - v - u`` and cost of the (at most
        K) most violating pairs of every row of the blocks, in heap order.
    new_len : int64, shape (Q, M), written
    first, stop : int
        The work items ``first:stop`` are done by this call (disjoint ranges may run in
        concurrent threads: the function releases the GIL).
    """
    sqrt2 = math.sqrt(2.0)
    low2, high2 = low * low, high * high
    cap = new_pred.shape[2]
    for w in range(first, stop):
        q, j0, j1 = blocks[w, 0], blocks[w, 1], blocks[w, 2]
        for j in range(j0, j1):
            new_len[q, j] = 0
        block_limit = math.inf
        changed = True
        for k in range(n[q]):
            if changed:  # the limits only move when a heap changes
                block_limit = -math.inf
                for j in range(j0, j1):
                    block_limit = max(block_limit,
                                      _key_limit(new_rc, new_len, q, j, cap, u[q, j], tol[q]))
                changed = False
            if lower[q, k] >= block_limit:
                break
            i = visit[q, k]
            pb = np.float64(pred_birth[q, i])
            pd = np.float64(pred_death[q, i])
            pz, pr, pc = pixel_of(pred_pixel, q, i)
            diag_pred = abs(pd - pb) / sqrt2
            v_i = v[q, i]
            for j in range(j0, j1):
                limit = _key_limit(new_rc, new_len, q, j, cap, u[q, j], tol[q]) + v_i
                # Cheap rejection without square roots: key < limit needs cost < reach.
                reach = limit + diag_pred
                if reach <= 0.0:
                    continue
                tb = np.float64(target_birth[q, j])
                td = np.float64(target_death[q, j])
                squared = (pb - tb) ** 2 + (pd - td) ** 2
                tz, tr, tc = pixel_of(target_pixel, q, j)
                if spatial:
                    squared *= min(max(spatial_squared(pz, pr, pc, tz, tr, tc, depth, height,
                                                       width), low2), high2)
                if squared > reach * reach * (1.0 + 1e-9):
                    continue
                cost = point_cost(pb, pd, pz, pr, pc, tb, td, tz, tr, tc, depth, height,
                                  width, spatial, low, high)
                key = cost - diag_pred
                if key < limit:
                    _insert(new_pred, new_rc, new_cost, new_len, q, j, cap, i,
                            (key - v_i) - u[q, j], cost)
                    changed = True


@numba.njit(cache=True, nogil=True)
def price_dense(cost, diag_pred, diag_target, n, m, blocks, u, v, tol, new_pred, new_rc,
                new_cost, new_len, first, stop):
    """The most violating pairs of every target point from dense costs (Q, N, M); see
    :func:`price_points` for the other arguments and the outputs."""
    cap = new_pred.shape[2]
    for w in range(first, stop):
        q, j0, j1 = blocks[w, 0], blocks[w, 1], blocks[w, 2]
        for j in range(j0, j1):
            new_len[q, j] = 0
        for i in range(n[q]):
            dp = np.float64(diag_pred[q, i])
            v_i = v[q, i]
            for j in range(j0, j1):
                value = np.float64(cost[q, i, j])
                key = value - dp
                if key < _key_limit(new_rc, new_len, q, j, cap, u[q, j], tol[q]) + v_i:
                    _insert(new_pred, new_rc, new_cost, new_len, q, j, cap, i,
                            (key - v_i) - u[q, j], value)


@numba.njit(cache=True, nogil=True)
def merge_lists(cand_pred, cand_key, cand_cost, cand_len, new_pred, new_cost, new_len,
                diag_pred, m, problems, added, first, stop):
    """Add the priced pairs of problems ``problems[first:stop]`` to their lists.

    Pairs already listed are skipped (a rounding-level violation of a list edge); the lists
    are sorted again by (``cost - diag_pred``, prediction index), the key computed as in the
    pricing. ``added[q]`` (int64, (Q,)) receives the number of pairs added to problem ``q``.
    The lists (Q, M, L) must have room for ``cand_len + new_len`` entries.
    """
    for t in range(first, stop):
        q = problems[t]
        count = 0
        for j in range(m[q]):
            length = cand_len[q, j]
            for e in range(new_len[q, j]):
                i = new_pred[q, j, e]
                listed = False
                for f in range(cand_len[q, j]):
                    if cand_pred[q, j, f] == i:
                        listed = True
                        break
                if listed:
                    continue
                cand_pred[q, j, length] = i
                cand_cost[q, j, length] = new_cost[q, j, e]
                cand_key[q, j, length] = new_cost[q, j, e] - np.float64(diag_pred[q, i])
                length += 1
            if length > cand_len[q, j]:
                count += length - cand_len[q, j]
                _sort_row(cand_pred, cand_key, cand_cost, q, j, cand_len[q, j], length)
                cand_len[q, j] = length
        added[q] = count


@numba.njit(cache=True, nogil=True)
def add_partners(pred_birth, pred_death, pred_pixel, target_birth, target_death, target_pixel,
                 m, depth, height, width, spatial, low, high, partner, diag_pred,
                 diag_target, cand_pred, cand_key, cand_cost, cand_len):
    """Add to every target point's list its partner (a prediction point), unless listed.

    ``partner[q, j]`` (int64, (Q, M)) is a prediction point of problem ``q`` or -1 (none);
    the pair joins the list when its reduced cost ``cost - diag_pred - diag_target`` is
    negative, and the list stays sorted as in :func:`merge_lists`. The lists (Q, M, L) must
    have room for one more entry per row; see :func:`price_points` for the other arguments.
    """
    for q in range(partner.shape[0]):
        for j in range(m[q]):
            i = partner[q, j]
            if i < 0:
                continue
            length = cand_len[q, j]
            listed = False
            for e in range(length):
                if cand_pred[q, j, e] == i:
                    listed = True
                    break
            if listed:
                continue
            pb = np.float64(pred_birth[q, i])
            pd = np.float64(pred_death[q, i])
            pz, pr, pc = pixel_of(pred_pixel, q, i)
            tz, tr, tc = pixel_of(target_pixel, q, j)
            cost = point_cost(pb, pd, pz, pr, pc, np.float64(target_birth[q, j]),
                              np.float64(target_death[q, j]), tz, tr, tc, depth, height, width,
                              spatial, low, high)
            key = cost - np.float64(diag_pred[q, i])
            if not key < np.float64(diag_target[q, j]):
                continue
            cand_pred[q, j, length] = i
            cand_key[q, j, length] = key
            cand_cost[q, j, length] = cost
            _sort_row(cand_pred, cand_key, cand_cost, q, j, length, length + 1)
            cand_len[q, j] = length + 1


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
    _update_duals_and_augment(cur, sink, min_value, scanned, n_scanned, visited, n_visited,
                              path_cost,
                              path, u, v, row4col, col4row)
    for k in range(n_touched):
        path_cost[touched[k]] = math.inf
        done[touched[k]] = False
    return n_visited


@numba.njit(cache=True)
def _local_lists(cand_pred, cand_key, cand_len, q, rows, n_pred):
    """The lists of problem ``q`` on local column indices: (cols, local, cand, key, length).

    ``cols`` (U,) are the distinct listed prediction points, sorted; ``local`` (n_pred,) is
    the position in ``cols`` of every prediction point (-1 when unlisted); ``cand[0, j, e]``
    is the position in ``cols`` of entry ``e`` of row ``j``. A mark array, not a sort: no
    sorting routine to compile.
    """
    width = 1
    for j in range(rows):
        width = max(width, cand_len[q, j])
    local = np.full(n_pred, -1, dtype=np.int64)
    for j in range(rows):
        for e in range(cand_len[q, j]):
            local[cand_pred[q, j, e]] = 0
    n_cols = 0
    for i in range(n_pred):
        if local[i] == 0:
            n_cols += 1
    cols = np.empty(n_cols, dtype=np.int64)
    n_cols = 0
    for i in range(n_pred):
        if local[i] == 0:
            local[i] = n_cols
            cols[n_cols] = i
            n_cols += 1
    cand = np.empty((1, rows, width), dtype=np.int64)
    key = np.empty((1, rows, width), dtype=np.float64)
    length = np.empty((1, rows), dtype=np.int64)
    for j in range(rows):
        length[0, j] = cand_len[q, j]
        for e in range(length[0, j]):
            cand[0, j, e] = local[cand_pred[q, j, e]]
            key[0, j, e] = cand_key[q, j, e]
    return cols, local, cand, key, length


@numba.njit(cache=True)
def _load_state(u_out, v_out, pred_of_target, q, rows, n_cols, cols, local, u, v, row4col,
                col4row):
    """The previous round's duals and matching of problem ``q`` on the local columns.

    The lists only grow, so every column the previous round matched or gave a dual is
    listed; a newly listed column is free with ``v = 0``, as are the private columns.
    """
    for c in range(n_cols):
        v[c] = v_out[q, cols[c]]
    for j in range(rows):
        u[j] = u_out[q, j]
        p = pred_of_target[q, j]
        c = local[p] if p >= 0 else n_cols + j
        col4row[j] = c
        row4col[c] = j


@numba.njit(cache=True)
def _free_row(r, n_cols, v, row4col, col4row, queue, n_queue):
    """Unassign row ``r``; queue its column when it is real with ``v < 0`` (a free column
    must have ``v = 0``). Returns the new queue length."""
    c = col4row[r]
    if c == -1:
        return n_queue
    col4row[r] = -1
    row4col[c] = -1
    if c < n_cols and v[c] < 0.0:
        queue[n_queue] = c
        n_queue += 1
    return n_queue


@numba.njit(cache=True)
def _column_entries(n_cols, rows, cand, key, length):
    """The list entries by column (CSR): (start (U + 1,), row (E,), key (E,))."""
    start = np.zeros(n_cols + 1, dtype=np.int64)
    for j in range(rows):
        for e in range(length[0, j]):
            start[cand[0, j, e] + 1] += 1
    for c in range(n_cols):
        start[c + 1] += start[c]
    fill = start[:n_cols].copy()
    entry_row = np.empty(start[n_cols], dtype=np.int64)
    entry_key = np.empty(start[n_cols], dtype=np.float64)
    for j in range(rows):
        for e in range(length[0, j]):
            c = cand[0, j, e]
            entry_row[fill[c]] = j
            entry_key[fill[c]] = key[0, j, e]
            fill[c] += 1
    return start, entry_row, entry_key


@numba.njit(cache=True)
def _restore_feasibility(row_diag, b, rows, n_cols, cand, key, length, u, v, row4col,
                         col4row, tol):
    """Make the previous round's duals feasible on the grown lists; free the rows that lose
    their tight edge. Returns the number of freed rows.

    The LP: ``u`` free (rows), ``v <= 0`` (columns), ``key - u - v >= 0`` on every list edge
    and ``diag - u >= 0`` on the private ones; a matched edge is tight and a free column has
    ``v = 0``. A new edge of row ``j`` with a negative slack lowers ``u_j`` to make every
    edge of ``j`` feasible (its matched edge is then loose: ``j`` is freed). A real column
    freed with ``v < 0`` is raised to ``v = 0``; a row whose edge to it turns negative is
    lowered and freed the same way, and so on (each column at most once: nothing is
    matched here). Slacks above ``-tol`` (rounding) are left as they are. The augmenting
    paths of the freed rows then restore an optimal matching of the lists.
    """
    queue = np.empty(n_cols, dtype=np.int64)
    n_queue = 0
    freed = 0
    for j in range(rows):
        low = np.float64(row_diag[b, j]) - u[j]
        for e in range(length[0, j]):
            low = min(low, slack(key[0, j, e], u[j], v[cand[0, j, e]]))
        if low < -tol:
            u[j] += low
            n_queue = _free_row(j, n_cols, v, row4col, col4row, queue, n_queue)
            freed += 1
    if n_queue == 0:
        return freed
    start, entry_row, entry_key = _column_entries(n_cols, rows, cand, key, length)
    head = 0
    while head < n_queue:
        c = queue[head]
        head += 1
        v[c] = 0.0
        for k in range(start[c], start[c + 1]):
            r = entry_row[k]
            gap = entry_key[k] - u[r]
            if gap < -tol:
                u[r] += gap
                if col4row[r] != -1:
                    n_queue = _free_row(r, n_cols, v, row4col, col4row, queue, n_queue)
                    freed += 1
    return freed


@numba.njit(cache=True)
def _raise_row_duals(row_diag, b, rows, n_cols, cand, key, length, u, v, row4col, col4row):
    """Raise every row dual as far as the optimal matching of the lists allows.

    Any optimal duals of the lists certify them; pricing checks them against every pair.
    On tied targets (every target point seeing the same costs of the prediction points near
    it) the solve leaves each row's dual at its own column's cost, and pricing then frees
    rows round after round until the duals of neighbouring rows are equal; raised duals are
    equal along alternating paths from the start. Row ``j`` rises by ``d[j]``, the shortest
    distance (in slacks) from ``j`` along list edges and matched edges to a free column (a
    free real column, or ``j``'s own private column), capped by the largest ``row_diag - u``
    (0 for a row on its private column: no other row reaches it); its matched column's dual
    drops by ``d[j]``. Shortest distances keep every slack ``>= 0`` and the matched edges
    tight; ``v`` only drops, so it stays ``<= 0``; free columns keep ``v = 0``.
    """
    cap = 0.0
    for j in range(rows):
        cap = max(cap, np.float64(row_diag[b, j]) - u[j])
    dist = np.empty(rows, dtype=np.float64)
    done = np.zeros(rows, dtype=np.bool_)
    heap_value = np.empty(rows + 1 + length.sum(), dtype=np.float64)
    heap_key = np.empty(heap_value.shape[0], dtype=np.int64)
    size = 0
    for j in range(rows):
        best = cap
        if col4row[j] == n_cols + j:
            best = 0.0  # no other row reaches it; left as it is (the warm start's private v = 0)
        else:
            best = min(best, max(0.0, slack(np.float64(row_diag[b, j]), u[j], 0.0)))
        for e in range(length[0, j]):
            c = cand[0, j, e]
            if row4col[c] == -1:
                best = min(best, max(0.0, slack(key[0, j, e], u[j], v[c])))
        dist[j] = best
        size = _heap_push(heap_value, heap_key, size, best, j)
    start, entry_row, entry_key = _column_entries(n_cols, rows, cand, key, length)
    while size > 0:
        value = heap_value[0]
        j = heap_key[0]
        size = _heap_pop(heap_value, heap_key, size)
        if done[j] or value != dist[j]:
            continue
        done[j] = True
        c = col4row[j]
        if c < 0 or c >= n_cols:
            continue
        for k in range(start[c], start[c + 1]):
            r = entry_row[k]
            if done[r]:
                continue
            through = value + max(0.0, slack(entry_key[k], u[r], v[c]))
            if through < dist[r]:
                dist[r] = through
                size = _heap_push(heap_value, heap_key, size, through, r)
    for j in range(rows):
        u[j] += dist[j]
        if col4row[j] >= 0:
            v[col4row[j]] -= dist[j]


@numba.njit(cache=True)
def _solve_problem(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target, q, rows,
                   n_pred, warm, tol, pred_of_target, total_out, violation_out, scale_out,
                   u_out, v_out):
    """Solve problem ``q`` restricted to its lists; write its outputs and duals.

    ``warm``: start from the previous round's matching and duals (``pred_of_target``,
    ``u_out``, ``v_out``), made feasible on the grown lists by :func:`_restore_feasibility`,
    and augment only the freed rows; else from a greedy matching.
    """
    base = 0.0
    for i in range(n_pred):
        base += np.float64(diag_pred[q, i])
    cols, local, cand, key, length = _local_lists(cand_pred, cand_key, cand_len, q, rows,
                                                  n_pred)
    n_cols = cols.shape[0]
    width = cand.shape[2]
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
    if warm:
        _load_state(u_out, v_out, pred_of_target, q, rows, n_cols, cols, local, u, v, row4col,
                    col4row)
        _restore_feasibility(diag_target, q, rows, n_cols, cand, key, length, u, v, row4col,
                             col4row, tol)
    else:
        _greedy(diag_target, q, rows, n_cols, cand, key, length, u, row4col, col4row)
    for cur in range(rows):
        if col4row[cur] == -1:
            _augment_row_pruned(diag_target, q, cur, n_cols, cand, key, length, u, v, row4col,
                                col4row, path_cost, path, done, scanned, visited, touched, hv, hk)
    _raise_row_duals(diag_target, q, rows, n_cols, cand, key, length, u, v, row4col, col4row)
    diag_cols = np.empty(n_cols, dtype=np.float64)
    for c in range(n_cols):
        diag_cols[c] = np.float64(diag_pred[q, cols[c]])
        v_out[q, cols[c]] = v[c]
    violation, scale = _certify_lists(diag_target, q, rows, n_cols, cols, diag_cols, cand, key,
                                      length, u, v, row4col, col4row)
    value = base
    for j in range(rows):
        u_out[q, j] = u[j]
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


@numba.njit(cache=True, nogil=True)
def solve_lists(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target, n, m,
                problems, warm, tol, pred_of_target, total_out, violation_out, scale_out, u_out,
                v_out, first, stop):
    """Solve problems ``problems[first:stop]`` restricted to their candidate lists.

    Releases the GIL: disjoint ranges may run in concurrent threads.

    Parameters
    ----------
    cand_pred, cand_key, cand_cost : shape (Q, M, L); cand_len : int64, shape (Q, M)
        The lists built by :func:`merge_lists`, sorted by key.
    diag_pred : float, shape (Q, N); diag_target : float, shape (Q, M)
        Diagonal costs.
    n, m : int64, shape (Q,)
    problems : int64, shape (P,)
        Problems in the order they are handed to the threads (largest first balances them).
    warm : bool
        Start from the matching and duals of the previous call on the same problems (read
        from ``pred_of_target``, ``u_out`` and ``v_out``; the lists may only have grown since)
        instead of from scratch.
    tol : float64, shape (Q,)
        Negative slacks down to ``-tol`` (rounding) are not repaired by a warm start.
    first, stop : int
        The range of ``problems`` solved by this call.
    pred_of_target : int64, shape (Q, M), read when ``warm`` and written
        Prediction point matched with each target point, or -1 (the diagonal).
    total_out, violation_out, scale_out : float64, shape (Q,), written
        Optimal total on the lists and the certificate on the list edges: it holds when
        ``violation <= rtol * scale``.
    u_out : float64, shape (Q, M), read when ``warm`` and written
        Row duals (target points).
    v_out : float64, shape (Q, N), read when ``warm`` and written
        Column duals of the listed prediction points; the others are left as they are (0:
        the caller zeroes them once, and a listed point stays listed).
    """
    for k in range(first, stop):
        q = problems[k]
        _solve_problem(cand_pred, cand_key, cand_cost, cand_len, diag_pred, diag_target, q,
                       m[q], n[q], warm, tol[q], pred_of_target, total_out, violation_out,
                       scale_out, u_out, v_out)
