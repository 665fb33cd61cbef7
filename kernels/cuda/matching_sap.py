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
  picks the next column by an argmin on (distance, taken, column): a butterfly of warp
  shuffles inside every warp, one barrier, then every warp reduces the per-warp winners
  (double-buffered, so the next step needs no second barrier) and takes lane 0's result.
  Every thread then knows the step's column and the row to scan next; the thread that owns
  the column (the one whose partial minimum it was) marks it done, so a step costs one
  barrier;
* dual update and augmentation, then a parallel certificate: total cost, largest violation of
  dual feasibility / complementary slackness, and the cost scale.

The key (distance, taken, column) is a total order on finite distances, so every reduction
order picks the same column: the kernel takes the same steps as the dense CPU twin
(``kernels.cpu.matching_sap.solve_batch_dense``) and returns the same matching. A search
whose best open column has an infinite or NaN distance (only possible when sums of the
inputs overflow; :func:`satloss_gpu.matching.match_batch` rejects such inputs) stops: the
row stays unassigned, the certificate fails and the host solves the problem again.

Launch rule (:func:`launch`): one block per problem, ``threads_for(R + K)`` threads (a
multiple of 32, one thread per column of the padded width up to :data:`MAX_THREADS`), and the
per-problem row/column state (duals, distances, predecessors, owners, visited lists) in dynamic
shared memory when :func:`shared_bytes` fits in :data:`SHARED_LIMIT`; otherwise in the global
work arrays. Every problem of the batch goes into one launch; the GPU is full when the batch
has at least (SMs x blocks resident per SM) problems, the latter ``min(2048 // threads, 32,
smem_per_sm // shared_bytes)`` (for example 132 x 16 = 2112 problems of width <= 128 on an
H100).

Why shortest augmenting paths and not an auction: an auction with epsilon-scaling needs an
epsilon below the smallest cost gap over the problem size to be exact, which float inputs do
not bound; the augmenting-path method needs no epsilon, is exact by construction and is checked
by the certificate.

Under ``NUMBA_ENABLE_CUDASIM=1`` the kernel runs in the simulator, calling the pure-Python
versions of the scalar functions; the simulator has no warp shuffles, so ``_shfl_xor`` and
``_shfl_lane0`` exchange values through shared memory there (same butterfly, same results).
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, cuda, types

from ..common import matching as _scalar
from ._launch import quiet

__all__ = ["sap_kernel", "KERNEL_OPTIONS", "MAX_THREADS", "SHARED_LIMIT", "threads_for",
           "shared_bytes", "launch"]

#: Most threads per block. The simulator runs one Python thread per CUDA thread: it defaults
#: to one warp (tests ask for more).
MAX_THREADS = 32 if config.ENABLE_CUDASIM else 1024
#: Dynamic shared memory one block may use without an opt-in (bytes, below the 48 KiB default
#: so that the static arrays fit beside it).
SHARED_LIMIT = 46 * 1024
_WARP = 32
_FULL_MASK = 0xFFFFFFFF
_BIG_COL = 1 << 62
_UNCLAIMED = 1 << 62
#: Size of the simulator's shuffle scratch arrays (unused, and tiny, on a GPU).
_SCRATCH = 1024 if config.ENABLE_CUDASIM else 1

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


def threads_for(width: int, max_threads: int | None = None) -> int:
    """Threads per block for problems of padded width ``width`` (rows + real columns).

    One thread per column, rounded up to a multiple of 32, between 32 and ``max_threads``
    (default :data:`MAX_THREADS`).
    """
    limit = MAX_THREADS if max_threads is None else int(max_threads)
    return int(min(max(_WARP, -(-int(width) // _WARP) * _WARP), limit))


def shared_bytes(big_r: int, big_k: int) -> int:
    """Bytes of dynamic shared memory the per-problem state takes (R rows, K real columns).

    float64 ``u`` (R), ``v`` and ``path_cost`` (W = R + K); int64 ``path``, ``row4col``,
    ``visited`` (W), ``col4row`` and ``scanned`` (R); uint8 ``done`` (W).
    """
    width = big_r + big_k
    return 8 * (3 * big_r + 5 * width) + width


# ----------------------------------------------------------------------------- warp exchange

if config.ENABLE_CUDASIM:
    @cuda.jit(device=True)
    def _shfl_xor(value, lane_mask, tid, scratch):
        """Value of lane ``lane ^ lane_mask`` (simulator: through shared memory)."""
        scratch[tid] = value
        cuda.syncthreads()
        other = scratch[tid ^ lane_mask]
        cuda.syncthreads()
        return other

    @cuda.jit(device=True)
    def _shfl_lane0(value, tid, scratch):
        """Value of lane 0 of the calling warp (simulator: through shared memory)."""
        scratch[tid] = value
        cuda.syncthreads()
        other = scratch[tid - tid % _WARP]
        cuda.syncthreads()
        return other
else:
    @cuda.jit(device=True)
    def _shfl_xor(value, lane_mask, tid, scratch):
        """Value of lane ``lane ^ lane_mask`` (one warp shuffle)."""
        return cuda.shfl_xor_sync(_FULL_MASK, value, lane_mask)

    @cuda.jit(device=True)
    def _shfl_lane0(value, tid, scratch):
        """Value of lane 0 of the calling warp (one warp shuffle)."""
        return cuda.shfl_sync(_FULL_MASK, value, 0)


@cuda.jit(device=True)
def _warp_argmin(value, taken, col, tid, scratch_f, scratch_i):
    """Least (value, taken, col) of the warp by a butterfly; lane 0's result on every lane."""
    lane_mask = _WARP // 2
    while lane_mask > 0:
        o_value = _shfl_xor(value, lane_mask, tid, scratch_f)
        o_taken = _shfl_xor(taken, lane_mask, tid, scratch_i)
        o_col = _shfl_xor(col, lane_mask, tid, scratch_i)
        if _is_better(o_value, o_taken, o_col, value, taken, col):
            value = o_value
            taken = o_taken
            col = o_col
        lane_mask //= 2
    # NaN breaks the total order and lanes may disagree: lane 0 decides.
    value = _shfl_lane0(value, tid, scratch_f)
    taken = _shfl_lane0(taken, tid, scratch_i)
    col = _shfl_lane0(col, tid, scratch_i)
    return value, taken, col


@cuda.jit(device=True)
def _block_argmin(value, taken, col, tid, n_warps, parity, part_f, part_i, scratch_f, scratch_i):
    """Least (value, taken, col) of the block, returned to every thread (one barrier)."""
    lane = tid % _WARP
    value, taken, col = _warp_argmin(value, taken, col, tid, scratch_f, scratch_i)
    if lane == 0:
        warp = tid // _WARP
        part_f[parity, warp] = value
        part_i[parity, 0, warp] = taken
        part_i[parity, 1, warp] = col
    cuda.syncthreads()
    if lane < n_warps:
        value = part_f[parity, lane]
        taken = part_i[parity, 0, lane]
        col = part_i[parity, 1, lane]
    else:
        value = math.inf
        taken = 2
        col = _BIG_COL
    return _warp_argmin(value, taken, col, tid, scratch_f, scratch_i)


@cuda.jit(device=True)
def _warp_sum_max_max(total, violation, scale, tid, scratch_f):
    """Butterfly (sum, max, max) over the warp; every lane gets the result."""
    lane_mask = _WARP // 2
    while lane_mask > 0:
        total += _shfl_xor(total, lane_mask, tid, scratch_f)
        violation = max(violation, _shfl_xor(violation, lane_mask, tid, scratch_f))
        scale = max(scale, _shfl_xor(scale, lane_mask, tid, scratch_f))
        lane_mask //= 2
    return total, violation, scale


@cuda.jit(device=True)
def _block_sum_max_max(total, violation, scale, tid, n_warps, part_f, scratch_f):
    """(sum of ``total``, max of ``violation``, max of ``scale``) over the block, every thread."""
    total, violation, scale = _warp_sum_max_max(total, violation, scale, tid, scratch_f)
    cuda.syncthreads()  # every warp is done with the argmin partials
    lane = tid % _WARP
    if lane == 0:
        warp = tid // _WARP
        part_f[0, warp] = total
        part_f[1, warp] = violation
        part_f[2, warp] = scale
    cuda.syncthreads()
    if lane < n_warps:
        total = part_f[0, lane]
        violation = part_f[1, lane]
        scale = part_f[2, lane]
    else:
        total = 0.0
        violation = 0.0
        scale = 0.0
    return _warp_sum_max_max(total, violation, scale, tid, scratch_f)


# ----------------------------------------------------------------------------- one problem
# Every function below takes the per-problem state as 1D arrays (shared memory, or the
# problem's rows of the global work arrays): u, col4row, scanned of length R; v, path_cost,
# path, row4col, done, visited of length R + K.


@cuda.jit(device=True)
def _greedy(A, row_diag, col_diag, b, n_rows, n_cols, u, row4col, col4row, tid, threads):
    """Parallel version of the CPU solver's dense greedy start (same result)."""
    for c in range(tid, n_cols + n_rows, threads):
        row4col[c] = _UNCLAIMED
    cuda.syncthreads()
    for r in range(tid, n_rows, threads):
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
        u[r] = best_value
        col4row[r] = best_col
        cuda.atomic.min(row4col, best_col, r)
    cuda.syncthreads()
    for r in range(tid, n_rows, threads):
        if row4col[col4row[r]] != r:
            col4row[r] = -1
    cuda.syncthreads()
    for c in range(tid, n_cols + n_rows, threads):
        if row4col[c] == _UNCLAIMED:
            row4col[c] = -1
    cuda.syncthreads()


@cuda.jit(device=True)
def _relax(A, row_diag, col_diag, b, n_cols, i, n_scanned, min_value, u_i, v, path_cost, path,
           row4col, done, scanned, tid, threads):
    """Relax this thread's open columns through row ``i``; return its least (value, taken, col).

    Thread ``tid`` owns the real columns ``t = tid (mod threads)`` and the private column of
    ``scanned[t - n_cols]`` for ``t >= n_cols``.
    """
    best_value = math.inf
    best_taken = 2
    best_col = _BIG_COL
    for t in range(tid, n_cols + n_scanned, threads):
        col = t if t < n_cols else n_cols + scanned[t - n_cols]
        if done[col] == 0:
            cost = _edge_cost(A, row_diag, col_diag, b, i, col, n_cols)
            if cost < math.inf:
                dist = _relaxed_distance(min_value, cost, u_i, v[col])
                if dist < path_cost[col]:
                    path_cost[col] = dist
                    path[col] = i
            taken = 1 if row4col[col] != -1 else 0
            if _is_better(path_cost[col], taken, col, best_value, best_taken, best_col):
                best_value = path_cost[col]
                best_taken = taken
                best_col = col
    return best_value, best_taken, best_col


@cuda.jit(device=True)
def _search(A, row_diag, col_diag, b, cur, n_cols, u, v, path_cost, path, row4col, done,
            scanned, visited, part_f, part_i, scratch_f, scratch_i, tid, threads, n_warps):
    """Dijkstra search from row ``cur``; returns (sink, min_value, n_scanned, n_visited).

    ``sink`` is -2 when the search stopped on a non-finite distance (no augmentation). Every
    thread runs the same loop on the same broadcast values; one barrier per step.
    """
    if tid == 0:
        scanned[0] = cur
    i = cur
    n_scanned = 1
    n_visited = 0
    min_value = 0.0
    sink = -1
    parity = 0
    cuda.syncthreads()
    while sink == -1:
        my_value, my_taken, my_col = _relax(A, row_diag, col_diag, b, n_cols, i, n_scanned,
                                            min_value, u[i], v, path_cost, path, row4col, done,
                                            scanned, tid, threads)
        value, taken, col = _block_argmin(my_value, my_taken, my_col, tid, n_warps, parity,
                                          part_f, part_i, scratch_f, scratch_i)
        parity = 1 - parity
        if col >= _BIG_COL or not value < math.inf:
            sink = -2  # overflow or NaN: stop, the certificate fails
            break
        min_value = value
        if my_col == col:  # this thread owns the column
            done[col] = 1
            visited[n_visited] = col
        n_visited += 1
        owner = row4col[col]
        if owner == -1:
            sink = col
        else:
            i = owner
            if tid == (n_cols + n_scanned) % threads:  # the owner of the new private slot
                scanned[n_scanned] = owner
            n_scanned += 1
    return sink, min_value, n_scanned, n_visited


@cuda.jit(device=True)
def _augment_row(A, row_diag, col_diag, b, cur, n_rows, n_cols, u, v, path_cost, path, row4col,
                 col4row, done, scanned, visited, part_f, part_i, scratch_f, scratch_i, tid,
                 threads, n_warps):
    """Parallel version of the CPU solver's dense ``_augment_row``; returns the step count."""
    sink, min_value, n_scanned, n_visited = _search(
        A, row_diag, col_diag, b, cur, n_cols, u, v, path_cost, path, row4col, done, scanned,
        visited, part_f, part_i, scratch_f, scratch_i, tid, threads, n_warps)
    cuda.syncthreads()
    if sink >= 0:
        for k in range(tid, n_scanned, threads):
            i = scanned[k]
            if i == cur:
                u[i] += min_value
            else:
                u[i] += min_value - path_cost[col4row[i]]
        for k in range(tid, n_visited, threads):
            col = visited[k]
            v[col] -= min_value - path_cost[col]
    cuda.syncthreads()
    if tid == 0 and sink >= 0:
        col = sink
        for _ in range(n_rows):  # a path has at most n_rows rows
            i = path[col]
            row4col[col] = i
            previous = col4row[i]
            col4row[i] = col
            if i == cur:
                break
            col = previous
    for c in range(tid, n_cols, threads):
        path_cost[c] = math.inf
        done[c] = 0
    for k in range(tid, n_scanned, threads):
        c = n_cols + scanned[k]
        path_cost[c] = math.inf
        done[c] = 0
    cuda.syncthreads()
    return n_visited


@cuda.jit(device=True)
def _certify(A, row_diag, col_diag, b, n_rows, n_cols, u, v, row4col, col4row, tid, threads,
             n_warps, part_f, scratch_f):
    """Parallel version of the CPU solver's ``_certify``: (total, violation, scale)."""
    total = 0.0
    violation = 0.0
    scale = 0.0
    for c in range(tid, n_cols, threads):
        dkc = np.float64(col_diag[b, c])
        scale = max(scale, abs(dkc))
        if row4col[c] == -1:
            total += dkc
            violation = max(violation, abs(v[c]))
        else:
            violation = max(violation, v[c])
    for r in range(n_rows):
        u_r = u[r]
        for c in range(tid, n_cols, threads):
            cost = _edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
            scale = max(scale, abs(cost))
            violation = max(violation, -_slack(cost, u_r, v[c]))
    for r in range(tid, n_rows, threads):
        u_r = u[r]
        cost = np.float64(row_diag[b, r])
        scale = max(scale, abs(cost))
        violation = max(violation, -_slack(cost, u_r, v[n_cols + r]))
        c = col4row[r]
        if c < 0:  # aborted search: the host sees col4row == -1 and solves again
            violation = math.inf
            continue
        matched = _edge_cost(A, row_diag, col_diag, b, r, c, n_cols)
        violation = max(violation, abs(_slack(matched, u_r, v[c])))
        total += np.float64(A[b, r, c]) if c < n_cols else cost
        if row4col[n_cols + r] == -1:
            violation = max(violation, abs(v[n_cols + r]))
    return _block_sum_max_max(total, violation, scale, tid, n_warps, part_f, scratch_f)


@cuda.jit(device=True)
def _solve(A, row_diag, col_diag, b, n_rows, n_cols, u, v, path_cost, path, row4col, col4row,
           done, scanned, visited, part_f, part_i, scratch_f, scratch_i, tid, threads, n_warps):
    """Solve problem ``b`` on the given state arrays; return (total, violation, scale, steps)."""
    for c in range(tid, n_cols + n_rows, threads):
        v[c] = 0.0
        path_cost[c] = math.inf
        path[c] = -1
        done[c] = 0
    _greedy(A, row_diag, col_diag, b, n_rows, n_cols, u, row4col, col4row, tid, threads)
    n_steps = 0
    for cur in range(n_rows):
        if col4row[cur] == -1:
            n_steps += _augment_row(A, row_diag, col_diag, b, cur, n_rows, n_cols, u, v,
                                    path_cost, path, row4col, col4row, done, scanned, visited,
                                    part_f, part_i, scratch_f, scratch_i, tid, threads, n_warps)
    total, violation, scale = _certify(A, row_diag, col_diag, b, n_rows, n_cols, u, v, row4col,
                                       col4row, tid, threads, n_warps, part_f, scratch_f)
    return total, violation, scale, n_steps


#: Compiler options of the kernel: at most ``MAX_THREADS`` threads per block, so that the
#: register budget allows a full block (64 registers per thread at 1024 threads).
KERNEL_OPTIONS = {} if config.ENABLE_CUDASIM else {"launch_bounds": (MAX_THREADS,)}


@cuda.jit(**KERNEL_OPTIONS)
def sap_kernel(A, row_diag, col_diag, row_counts, col_counts, u, v, path_cost, path, row4col,
               col4row, done, scanned, visited,
               total, violation, scale, steps, use_shared):
    """Solve problem ``blockIdx.x`` of an oriented batch (launch with :func:`launch`).

    Parameters
    ----------
    A : float32 or float64, (B, R, K); row_diag : (B, R); col_diag : (B, K);
    row_counts, col_counts : int64 (B,)
        The oriented problems (see ``_matching_cpu.oriented_arrays``).
    u : float64 (B, R); v, path_cost : float64 (B, R + K); path, row4col : int64 (B, R + K);
    col4row : int64 (B, R); done : uint8 (B, R + K); scanned : int64 (B, R);
    visited : int64 (B, R + K)
        Work arrays (any content); ``col4row`` holds the result: the column of every row
        (-1 for a row whose search stopped). With ``use_shared`` only ``col4row`` is written:
        the state lives in ``shared_bytes(R, K)`` bytes of dynamic shared memory.
    total, violation, scale : float64 (B,); steps : int64 (B,)
        Results: optimal cost and certificate of every problem, Dijkstra steps.
    use_shared : int64
        1: per-problem state in dynamic shared memory; 0: in the work arrays above.
    """
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    threads = cuda.blockDim.x
    n_warps = (threads + _WARP - 1) // _WARP
    if b >= A.shape[0]:
        return
    part_f = cuda.shared.array((3, _WARP), dtype=np.float64)
    part_i = cuda.shared.array((2, 2, _WARP), dtype=np.int64)
    scratch_f = cuda.shared.array(_SCRATCH, dtype=np.float64)
    scratch_i = cuda.shared.array(_SCRATCH, dtype=np.int64)
    n_rows = row_counts[b]
    n_cols = col_counts[b]
    if use_shared:
        big_r = u.shape[1]
        width = v.shape[1]
        dyn_f = cuda.shared.array(0, dtype=types.float64)
        dyn_i = cuda.shared.array(0, dtype=types.int64)
        dyn_u8 = cuda.shared.array(0, dtype=types.uint8)
        s_u = dyn_f[0:big_r]
        s_v = dyn_f[big_r:big_r + width]
        s_path_cost = dyn_f[big_r + width:big_r + 2 * width]
        base = big_r + 2 * width
        s_path = dyn_i[base:base + width]
        s_row4col = dyn_i[base + width:base + 2 * width]
        s_visited = dyn_i[base + 2 * width:base + 3 * width]
        s_col4row = dyn_i[base + 3 * width:base + 3 * width + big_r]
        s_scanned = dyn_i[base + 3 * width + big_r:base + 3 * width + 2 * big_r]
        byte = 8 * (base + 3 * width + 2 * big_r)
        s_done = dyn_u8[byte:byte + width]
        result = _solve(A, row_diag, col_diag, b, n_rows, n_cols, s_u, s_v, s_path_cost, s_path,
                        s_row4col, s_col4row, s_done, s_scanned, s_visited, part_f, part_i,
                        scratch_f, scratch_i, tid, threads, n_warps)
        for r in range(tid, n_rows, threads):
            col4row[b, r] = s_col4row[r]
    else:
        result = _solve(A, row_diag, col_diag, b, n_rows, n_cols, u[b], v[b], path_cost[b],
                        path[b], row4col[b], col4row[b], done[b], scanned[b], visited[b], part_f,
                        part_i, scratch_f, scratch_i, tid, threads, n_warps)
    if tid == 0:
        total[b] = result[0]
        scale[b] = result[2]
        steps[b] = result[3]
        finite = abs(result[0]) < math.inf and abs(result[1]) < math.inf
        # An overflowing sum or a stopped search fails the certificate (NaN fails every test).
        violation[b] = result[1] if finite and abs(result[2]) < math.inf else math.nan


def launch(A, row_diag, col_diag, row_counts, col_counts, work, results, stream=0,
           threads: int | None = None, use_shared: bool | None = None):
    """Launch :data:`sap_kernel` over the batch (one block per problem).

    ``work`` is the tuple (u, v, path_cost, path, row4col, col4row, done, scanned, visited) and
    ``results`` the tuple (total, violation, scale, steps), all device arrays (or anything
    with ``__cuda_array_interface__``; NumPy arrays under the simulator). ``threads`` (a
    multiple of 32) defaults to :func:`threads_for` of the padded width; ``use_shared``
    defaults to whether :func:`shared_bytes` fits in :data:`SHARED_LIMIT`.
    """
    batch, big_r, big_k = A.shape
    if batch == 0:
        return
    if threads is None:
        threads = threads_for(big_r + big_k)
    if threads % _WARP or not 0 < threads <= 1024:
        raise ValueError(f"`threads` must be a multiple of 32 in [32, 1024]; got {threads}")
    need = shared_bytes(big_r, big_k)
    if use_shared is None:
        use_shared = need <= SHARED_LIMIT
    dynamic = need if use_shared else 0
    quiet(sap_kernel[batch, threads, stream, dynamic])(A, row_diag, col_diag, row_counts,
                                                       col_counts, *work, *results,
                                                       1 if use_shared else 0)
