"""Numba-CUDA kernel: exact batched diagram matching by shortest augmenting paths.

One thread block per problem, the whole batch in one launch. The algorithm, the rectangular
formulation (rows, real columns, private diagonal columns) and the tie rule are those of
:mod:`satloss_gpu.kernels.cpu.matching_sap`, whose scalar functions (``edge_cost``, ``is_better``,
``relaxed_distance``, ``slack``) this kernel calls, so both take the same steps and return the
same matching. Inside a block:

* greedy start: one thread per row finds its cheapest column; the smallest row index claiming
  a column wins it (``atomic.min``), as in the sequential greedy of the CPU solver;
* one Dijkstra search per unassigned row, rows in increasing order; every step relaxes all
  columns through the newly scanned row in parallel (coalesced reads of one row of ``A``) and
  picks the next column with a shared-memory tree reduction on (distance, taken, column);
* dual update and augmentation, then a parallel certificate: total cost, largest violation of
  dual feasibility / complementary slackness, and the cost scale.

Why shortest augmenting paths and not an auction: an auction with epsilon-scaling needs an
epsilon below the smallest cost gap over the problem size to be exact, which float inputs do
not bound; the augmenting-path method needs no epsilon, is exact by construction and is checked
by the certificate. The kernel scans every column at every step (its sequential twin is
``kernels.cpu.matching_sap.solve_batch_dense``); the CPU's sparse candidate-list solver is not
used here.

Under ``NUMBA_ENABLE_CUDASIM=1`` the kernel runs in the simulator, calling the pure-Python
versions of the scalar functions.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, cuda

from ..common import matching as _scalar

__all__ = ["sap_kernel", "THREADS", "launch"]

#: Threads per block (a power of two; the shared reduction arrays have this size). The
#: simulator runs one Python thread per CUDA thread, so it uses one warp.
THREADS = 32 if config.ENABLE_CUDASIM else 256
_BIG_COL = 1 << 62
_UNCLAIMED = 1 << 62

if config.ENABLE_CUDASIM:
    _edge_cost = _scalar.edge_cost.py_func
    _is_better = _scalar.is_better.py_func
    _relaxed_distance = _scalar.relaxed_distance.py_func
    _slack = _scalar.slack.py_func
else:
    _edge_cost = _scalar.edge_cost
    _is_better = _scalar.is_better
    _relaxed_distance = _scalar.relaxed_distance
    _slack = _scalar.slack


@cuda.jit(device=True)
def _block_argmin(red_value, red_taken, red_col, tid):
    """Tree reduction of the (value, taken, col) triples in shared memory to index 0."""
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            other = tid + stride
            if _is_better(red_value[other], red_taken[other], red_col[other],
                          red_value[tid], red_taken[tid], red_col[tid]):
                red_value[tid] = red_value[other]
                red_taken[tid] = red_taken[other]
                red_col[tid] = red_col[other]
        cuda.syncthreads()
        stride //= 2


@cuda.jit(device=True)
def _block_reduce(red_value, tid, use_max):
    """Tree reduction (sum, or max when ``use_max``) of ``red_value`` to index 0."""
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            if use_max:
                red_value[tid] = max(red_value[tid], red_value[tid + stride])
            else:
                red_value[tid] = red_value[tid] + red_value[tid + stride]
        cuda.syncthreads()
        stride //= 2


@cuda.jit(device=True)
def _reduce_into(red_value, tid, value, use_max, out, index):
    """Reduce every thread's ``value`` (sum, or max) over the block into ``out[index]``."""
    red_value[tid] = value
    cuda.syncthreads()
    _block_reduce(red_value, tid, use_max)
    if tid == 0:
        out[index] = red_value[0]
    cuda.syncthreads()


@cuda.jit(device=True)
def _greedy(A, row_diag, col_diag, b, n_rows, n_cols, u, row4col, col4row, tid):
    """Parallel version of ``_matching_cpu._greedy`` (same result)."""
    for c in range(tid, n_cols + n_rows, THREADS):
        row4col[b, c] = _UNCLAIMED
    cuda.syncthreads()
    for r in range(tid, n_rows, THREADS):
        best_value = math.inf
        best_col = -1
        for c in range(n_cols):
            value = _edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
            if value < best_value:
                best_value = value
                best_col = c
        value = _edge_cost(A, row_diag, col_diag, b, r, n_cols + r, n_cols)
        if value < best_value:
            best_value = value
            best_col = n_cols + r
        u[b, r] = best_value
        col4row[b, r] = best_col
        cuda.atomic.min(row4col, (b, best_col), r)
    cuda.syncthreads()
    for r in range(tid, n_rows, THREADS):
        if row4col[b, col4row[b, r]] != r:
            col4row[b, r] = -1
    cuda.syncthreads()
    for c in range(tid, n_cols + n_rows, THREADS):
        if row4col[b, c] == _UNCLAIMED:
            row4col[b, c] = -1
    cuda.syncthreads()


@cuda.jit(device=True)
def _search_step(A, row_diag, col_diag, b, n_cols, i, n_scanned, min_value, u_i, v, path_cost,
                 path, row4col,
                 done, scanned, red_value, red_taken, red_col, tid):
    """Relax every open column through row ``i``; leave the best (value, taken, col) at 0."""
    best_value = math.inf
    best_taken = 2
    best_col = _BIG_COL
    for t in range(tid, n_cols + n_scanned, THREADS):
        col = t if t < n_cols else n_cols + scanned[b, t - n_cols]
        if done[b, col] == 0:
            cost = _edge_cost(A, row_diag, col_diag, b, i, col, n_cols)
            if cost < math.inf:
                dist = _relaxed_distance(min_value, cost, u_i, v[b, col])
                if dist < path_cost[b, col]:
                    path_cost[b, col] = dist
                    path[b, col] = i
            taken = 1 if row4col[b, col] != -1 else 0
            if _is_better(path_cost[b, col], taken, col, best_value, best_taken, best_col):
                best_value = path_cost[b, col]
                best_taken = taken
                best_col = col
    red_value[tid] = best_value
    red_taken[tid] = best_taken
    red_col[tid] = best_col
    cuda.syncthreads()
    _block_argmin(red_value, red_taken, red_col, tid)


@cuda.jit(device=True)
def _augment_row(A, row_diag, col_diag, b, cur, n_cols, u, v, path_cost, path, row4col, col4row,
                 done, scanned,
                 visited, red_value, red_taken, red_col, state, state_f, tid):
    """Parallel version of ``_matching_cpu._augment_row``; returns the step count (thread 0)."""
    if tid == 0:
        state[0] = cur  # row being scanned
        state[1] = -1  # sink column
        state[2] = 0  # rows scanned
        state[3] = 0  # columns visited
        state_f[0] = 0.0  # current distance
        scanned[b, 0] = cur
        state[2] = 1
    cuda.syncthreads()
    steps = 0
    while True:
        i = state[0]
        n_scanned = state[2]
        min_value = state_f[0]
        _search_step(A, row_diag, col_diag, b, n_cols, i, n_scanned, min_value, u[b, i], v,
                     path_cost, path,
                     row4col, done, scanned, red_value, red_taken, red_col, tid)
        if tid == 0:
            col = red_col[0]
            if col >= _BIG_COL:
                # No open column: only NaN distances get here. Stop; the certificate fails
                # and the host solves the problem again.
                state[1] = -2
            else:
                state_f[0] = red_value[0]
                done[b, col] = 1
                visited[b, state[3]] = col
                state[3] += 1
                steps += 1
                owner = row4col[b, col]
                if owner == -1:
                    state[1] = col
                else:
                    state[0] = owner
                    scanned[b, state[2]] = owner
                    state[2] += 1
        cuda.syncthreads()
        if state[1] != -1:
            break
    min_value = state_f[0]
    n_scanned = state[2]
    n_visited = state[3]
    for k in range(tid, n_scanned, THREADS):
        i = scanned[b, k]
        if i == cur:
            u[b, i] += min_value
        else:
            u[b, i] += min_value - path_cost[b, col4row[b, i]]
    for k in range(tid, n_visited, THREADS):
        col = visited[b, k]
        v[b, col] -= min_value - path_cost[b, col]
    cuda.syncthreads()
    if tid == 0 and state[1] >= 0:
        col = state[1]
        while True:
            i = path[b, col]
            row4col[b, col] = i
            previous = col4row[b, i]
            col4row[b, i] = col
            if i == cur:
                break
            col = previous
    for c in range(tid, n_cols, THREADS):
        path_cost[b, c] = math.inf
        done[b, c] = 0
    for k in range(tid, n_scanned, THREADS):
        c = n_cols + scanned[b, k]
        path_cost[b, c] = math.inf
        done[b, c] = 0
    cuda.syncthreads()
    return steps


@cuda.jit(device=True)
def _certify(A, row_diag, col_diag, b, n_rows, n_cols, u, v, row4col, col4row, red_value, tid, out):
    """Parallel version of ``_matching_cpu._certify``; thread 0 writes out[0:3]."""
    total = 0.0
    violation = 0.0
    scale = 0.0
    for c in range(tid, n_cols, THREADS):
        dkc = np.float64(col_diag[b, c])
        scale = max(scale, abs(dkc))
        if row4col[b, c] == -1:
            total += dkc
            violation = max(violation, abs(v[b, c]))
        else:
            violation = max(violation, v[b, c])
    for r in range(n_rows):
        u_r = u[b, r]
        for c in range(tid, n_cols, THREADS):
            cost = _edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
            scale = max(scale, abs(cost))
            violation = max(violation, -_slack(cost, u_r, v[b, c]))
    for r in range(tid, n_rows, THREADS):
        u_r = u[b, r]
        cost = np.float64(row_diag[b, r])
        scale = max(scale, abs(cost))
        violation = max(violation, -_slack(cost, u_r, v[b, n_cols + r]))
        c = col4row[b, r]
        matched = _edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
        violation = max(violation, abs(_slack(matched, u_r, v[b, c])))
        total += np.float64(A[b, r, c]) if c < n_cols else cost
        if row4col[b, n_cols + r] == -1:
            violation = max(violation, abs(v[b, n_cols + r]))
    _reduce_into(red_value, tid, total, False, out, 0)
    _reduce_into(red_value, tid, violation, True, out, 1)
    _reduce_into(red_value, tid, scale, True, out, 2)


@cuda.jit
def sap_kernel(A, row_diag, col_diag, row_counts, col_counts, u, v, path_cost, path, row4col,
               col4row, done, scanned, visited,
               total, violation, scale, steps):
    """Solve problem ``blockIdx.x`` of an oriented batch; launch with ``THREADS`` threads.

    Parameters
    ----------
    A : float32 or float64, (B, R, K); row_diag : (B, R); col_diag : (B, K);
    row_counts, col_counts : int64 (B,)
        The oriented problems (see ``_matching_cpu.oriented_arrays``).
    u : float64 (B, R); v, path_cost : float64 (B, R + K); path, row4col : int64 (B, R + K);
    col4row : int64 (B, R); done : uint8 (B, R + K); scanned : int64 (B, R);
    visited : int64 (B, R + K)
        Work arrays (any content); ``col4row`` holds the result: the column of every row.
    total, violation, scale : float64 (B,); steps : int64 (B,)
        Results: optimal cost and certificate of every problem, Dijkstra steps.
    """
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    if b >= A.shape[0]:
        return
    red_value = cuda.shared.array(THREADS, dtype=np.float64)
    red_taken = cuda.shared.array(THREADS, dtype=np.int32)
    red_col = cuda.shared.array(THREADS, dtype=np.int64)
    state = cuda.shared.array(4, dtype=np.int64)
    state_f = cuda.shared.array(1, dtype=np.float64)
    out = cuda.shared.array(3, dtype=np.float64)
    n_rows = row_counts[b]
    n_cols = col_counts[b]
    for c in range(tid, n_cols + n_rows, THREADS):
        v[b, c] = 0.0
        path_cost[b, c] = math.inf
        path[b, c] = -1
        done[b, c] = 0
    _greedy(A, row_diag, col_diag, b, n_rows, n_cols, u, row4col, col4row, tid)
    n_steps = 0
    for cur in range(n_rows):
        if col4row[b, cur] == -1:
            n_steps += _augment_row(A, row_diag, col_diag, b, cur, n_cols, u, v, path_cost, path,
                                    row4col, col4row,
                                    done, scanned, visited, red_value, red_taken, red_col, state,
                                    state_f, tid)
    _certify(A, row_diag, col_diag, b, n_rows, n_cols, u, v, row4col, col4row, red_value, tid, out)
    if tid == 0:
        total[b] = out[0]
        violation[b] = out[1]
        scale[b] = out[2]
        steps[b] = n_steps


def launch(A, row_diag, col_diag, row_counts, col_counts, work, results, stream=0):
    """Launch :data:`sap_kernel` over the batch (one block per problem).

    ``work`` is the tuple (u, v, path_cost, path, row4col, col4row, done, scanned, visited) and
    ``results`` the tuple (total, violation, scale, steps), all device arrays (or anything
    with ``__cuda_array_interface__``; NumPy arrays under the simulator).
    """
    batch = A.shape[0]
    if batch == 0:
        return
    sap_kernel[batch, THREADS, stream](A, row_diag, col_diag, row_counts, col_counts, *work,
                                       *results)
