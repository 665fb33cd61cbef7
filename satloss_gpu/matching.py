"""Exact batched matching of persistence diagrams (partial rectangular assignment).

One problem per image and homology dimension: ``n`` prediction points, ``m`` target points,
``cost[i, j]`` for matching prediction point ``i`` with target point ``j``, ``diag_pred[i]`` and
``diag_target[j]`` for sending a point to the diagonal. The optimal total is the value of the
``(n + 1) x (m + 1)`` optimal-transport problem whose extra row and column are the diagonal
(masses ``m`` and ``n``, every other mass 1, diagonal-to-diagonal cost 0), equivalently

    sum(diag_pred) + sum(diag_target) + min over partial matchings of
    sum over matched (i, j) of (cost[i, j] - diag_pred[i] - diag_target[j]).

Solvers
-------
``"emd"``
    POT's network simplex (``ot.emd``) on the augmented problem, one call per problem. The
    reference. POT 0.9.7 holds the GIL while it solves (measured: two threads take twice as
    long as one), so the problems run one after another unless ``SATLOSS_EMD_THREADS`` asks
    for a thread pool.
``"cpu"``
    Shortest augmenting paths (a rectangular Jonker-Volgenant / Hungarian method) compiled
    with Numba, parallel over the problems of the batch, over sparse per-row candidate lists
    (the cheapest columns of each row, lengthened until a bound test and the dual certificate
    on the full problem pass). Exact.
``"cuda"``
    The same algorithm as a Numba-CUDA kernel, one thread block per problem, the whole batch
    in one launch. Exact. CUDA torch tensors are used in place; host inputs are copied to the
    device (under ``NUMBA_ENABLE_CUDASIM=1`` the kernel runs in the simulator).
``"auto"``
    ``"cuda"`` for CUDA tensors, ``"emd"`` otherwise: measured with ``bench/matching.py``
    (``--kind diagrams`` and ``--kind real``), ``ot.emd`` stays faster than ``"cpu"`` on
    diagram-like problems.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._arraylib import array_library, is_cuda_array, like, to_numpy
from ._validation import check_choice

__all__ = ["MatchResult", "match_batch", "assignment_cost", "SOLVERS"]

SOLVERS = ("auto", "emd", "cpu", "cuda")


@dataclass(frozen=True)
class MatchResult:
    """Optimal matchings of a batch of persistence-diagram matching problems.

    Attributes
    ----------
    total : array, shape (B,), dtype of ``cost``
        Optimal cost of every problem, in the library and on the device of ``cost``.
        Plain data (no gradient): use :func:`assignment_cost` to differentiate.
    assignment : array, shape (B, N), int64
        ``assignment[b, i]`` is the target point matched with prediction point ``i`` of problem
        ``b``, or ``-1`` when it goes to the diagonal (also for padding entries ``i >= n[b]``).
        Target points that appear nowhere go to the diagonal.
    """

    total: Any
    assignment: Any


# ----------------------------------------------------------------------------- validation


def _kind(array: Any) -> str:
    """NumPy dtype kind letter of a NumPy array or torch tensor."""
    if array_library(array) == "torch":
        if array.dtype.is_complex:
            return "c"
        if array.dtype.is_floating_point:
            return "f"
        return "b" if str(array.dtype) == "torch.bool" else "i"
    return np.dtype(array.dtype).kind


def _as_float_array(array: Any, name: str) -> Any:
    """Return ``array`` as a float32/float64 NumPy array or torch tensor (TypeError otherwise)."""
    library = array_library(array)
    if library == "cupy":
        raise TypeError(f"`{name}` must be a torch tensor or a NumPy array; got a CuPy array")
    if library == "numpy":
        array = np.asarray(array)
    kind = _kind(array)
    if kind not in "biuf":
        raise TypeError(f"`{name}` must hold real numbers; got dtype {array.dtype}")
    if library == "torch":
        import torch

        if array.dtype not in (torch.float32, torch.float64):
            array = array.to(torch.float64 if kind != "f" else torch.float32)
        return array.detach()
    if kind != "f":
        return array.astype(np.float64)
    if array.dtype.itemsize < 4:
        return array.astype(np.float32)
    return array


def _as_sizes(sizes: Any, name: str, batch: int, limit: int) -> np.ndarray:
    """Validate the true sizes ``sizes`` (B,) and return them as an int64 NumPy array."""
    if array_library(sizes) == "numpy":
        sizes = np.asarray(sizes)
        if sizes.size == 0:
            sizes = sizes.astype(np.int64)
    if _kind(sizes) not in "iu":
        raise TypeError(f"`{name}` must hold integers; got dtype {sizes.dtype}")
    host = to_numpy(sizes).astype(np.int64)
    if host.shape != (batch,):
        raise ValueError(f"`{name}` must have shape ({batch},); got {tuple(host.shape)}")
    if batch and host.min() < 0:
        raise ValueError(f"`{name}` must be non-negative; got minimum {int(host.min())}")
    if batch and host.max() > limit:
        raise ValueError(
            f"`{name}` must be at most {limit} (the padded size); got maximum {int(host.max())}"
        )
    return host


def _check_finite_valid(array: Any, name: str, sizes: tuple[np.ndarray, ...]) -> None:
    """Raise ValueError if ``array`` holds NaN/inf inside the valid (unpadded) region."""
    library = array_library(array)
    if library == "torch":
        import torch

        xp, device = torch, array.device
        mask = torch.ones(array.shape, dtype=torch.bool, device=device)
        for axis, size in enumerate(sizes, start=1):
            idx = torch.arange(array.shape[axis], device=device)
            lim = torch.as_tensor(size, device=device)
            shape = [1] * array.ndim
            shape[0], shape[axis] = -1, array.shape[axis]
            mask &= (idx[None, :] < lim[:, None]).reshape(shape)
        bad = mask & ~torch.isfinite(array)
        nbad = int(bad.sum())
    else:
        xp = np
        mask = np.ones(array.shape, dtype=bool)
        for axis, size in enumerate(sizes, start=1):
            shape = [1] * array.ndim
            shape[0], shape[axis] = -1, array.shape[axis]
            mask &= (np.arange(array.shape[axis])[None, :] < size[:, None]).reshape(shape)
        with np.errstate(invalid="ignore"):
            bad = mask & ~np.isfinite(array)
        nbad = int(bad.sum())
    if nbad:
        n_nan = int((bad & xp.isnan(array)).sum())
        raise ValueError(
            f"`{name}` must be finite inside its valid region; found {n_nan} NaN and "
            f"{nbad - n_nan} inf values"
        )


def _validate(cost, diag_pred, diag_target, n, m):
    """Check the arguments of :func:`match_batch`; return them normalised."""
    cost = _as_float_array(cost, "cost")
    diag_pred = _as_float_array(diag_pred, "diag_pred")
    diag_target = _as_float_array(diag_target, "diag_target")
    libs = {array_library(a) for a in (cost, diag_pred, diag_target)}
    if len(libs) > 1:
        raise TypeError(
            "`cost`, `diag_pred` and `diag_target` must come from one array library; got "
            + ", ".join(sorted(libs))
        )
    if libs == {"torch"}:
        devices = {str(a.device) for a in (cost, diag_pred, diag_target)}
        if len(devices) > 1:
            raise ValueError(
                "`cost`, `diag_pred` and `diag_target` must be on one device; got "
                + ", ".join(sorted(devices))
            )
    if cost.ndim != 3:
        raise ValueError(f"`cost` must have shape (B, N, M); got shape {tuple(cost.shape)}")
    batch, big_n, big_m = (int(s) for s in cost.shape)
    if tuple(diag_pred.shape) != (batch, big_n):
        raise ValueError(
            f"`diag_pred` must have shape (B, N) = ({batch}, {big_n}); got {tuple(diag_pred.shape)}"
        )
    if tuple(diag_target.shape) != (batch, big_m):
        raise ValueError(
            f"`diag_target` must have shape (B, M) = ({batch}, {big_m}); got "
            f"{tuple(diag_target.shape)}"
        )
    n_host = _as_sizes(n, "n", batch, big_n)
    m_host = _as_sizes(m, "m", batch, big_m)
    _check_finite_valid(cost, "cost", (n_host, m_host))
    _check_finite_valid(diag_pred, "diag_pred", (n_host,))
    _check_finite_valid(diag_target, "diag_target", (m_host,))
    return cost, diag_pred, diag_target, n_host, m_host


# ----------------------------------------------------------------------------- public API


def match_batch(
    cost: Any,
    diag_pred: Any,
    diag_target: Any,
    n: Any,
    m: Any,
    solver: str = "auto",
) -> MatchResult:
    """Solve a batch of persistence-diagram matching problems exactly.

    Parameters
    ----------
    cost : torch.Tensor or numpy.ndarray, shape (B, N, M), float
        ``cost[b, i, j]``: cost of matching prediction point ``i`` with target point ``j``.
        Entries with ``i >= n[b]`` or ``j >= m[b]`` are padding and are ignored (any value).
    diag_pred : torch.Tensor or numpy.ndarray, shape (B, N), float
        Cost of sending each prediction point to the diagonal.
    diag_target : torch.Tensor or numpy.ndarray, shape (B, M), float
        Cost of sending each target point to the diagonal.
    n, m : array_like, shape (B,), int
        True numbers of prediction and target points of every problem.
    solver : {"auto", "emd", "cpu", "cuda"}
        See the module docstring. Every solver is exact; they differ in speed and may pick
        different optimal matchings when several exist.

    Returns
    -------
    MatchResult
        ``total`` (B,) in the dtype, library and device of ``cost`` and ``assignment`` (B, N)
        int64 on the same device. Integer inputs give float64 totals.

    Raises
    ------
    TypeError
        Non-numeric arrays, non-integer sizes, arrays from different libraries.
    ValueError
        Wrong ranks or shapes, sizes negative or above the padded sizes, NaN or infinite
        values in the valid region, unknown ``solver``.

    Notes
    -----
    All solvers compute in float64. ``"emd"`` and ``"cpu"`` copy CUDA inputs to the host
    and the results back; ``"cuda"`` reads CUDA tensors in place and synchronises once.

    Examples
    --------
    >>> import numpy as np
    >>> cost = np.array([[[0.25, 5.0], [5.0, 0.5], [5.0, 5.0]]])
    >>> res = match_batch(cost, np.array([[1.0, 1.0, 0.25]]), np.array([[1.0, 1.0]]), [3], [2])
    >>> float(res.total[0]), res.assignment.tolist()
    (1.0, [[0, 1, -1]])
    """
    solver = check_choice("solver", solver, SOLVERS)
    cost, diag_pred, diag_target, n_host, m_host = _validate(cost, diag_pred, diag_target, n, m)
    if solver == "auto":
        # By measurement (bench/matching.py): the CUDA kernel for CUDA tensors; on the CPU,
        # POT's network simplex still beats the sparse augmenting-path solver on diagram-like
        # and real SATLoss problems (2-3x), so it is the CPU default.
        solver = "cuda" if is_cuda_array(cost) else "emd"
    if solver == "cuda" and array_library(cost) == "torch" and cost.is_cuda:
        total, assignment = _match_cuda_torch(cost, diag_pred, diag_target, n_host, m_host)
        return MatchResult(total=total, assignment=assignment)
    c64 = to_numpy(cost).astype(np.float64, copy=False)
    dp64 = to_numpy(diag_pred).astype(np.float64, copy=False)
    dt64 = to_numpy(diag_target).astype(np.float64, copy=False)
    if solver == "emd":
        total, assignment = _match_emd(c64, dp64, dt64, n_host, m_host)
    elif solver == "cuda":
        total, assignment = _match_cuda_host(c64, dp64, dt64, n_host, m_host)
    else:
        from ._matching_cpu import K_START, match_cpu

        total, assignment = match_cpu(c64, dp64, dt64, n_host, m_host, k_start=K_START)
    return MatchResult(
        total=like(total.astype(_numpy_dtype(cost)), cost), assignment=like(assignment, cost)
    )


def _numpy_dtype(array: Any) -> np.dtype:
    """NumPy equivalent of the float dtype of ``array``."""
    if array_library(array) == "torch":
        return np.dtype(str(array.dtype).replace("torch.", ""))
    return array.dtype


def assignment_cost(
    cost: Any, diag_pred: Any, diag_target: Any, n: Any, m: Any, assignment: Any
) -> Any:
    """Total cost of given matchings, differentiable with respect to the costs.

    Parameters
    ----------
    cost : torch.Tensor or numpy.ndarray, shape (B, N, M), float
    diag_pred : torch.Tensor or numpy.ndarray, shape (B, N), float
    diag_target : torch.Tensor or numpy.ndarray, shape (B, M), float
    n, m : array_like, shape (B,), int
        As in :func:`match_batch`.
    assignment : array, shape (B, N), int
        ``MatchResult.assignment`` (or any partial matching in the same form).

    Returns
    -------
    array, shape (B,)
        ``sum`` of matched costs plus the diagonal costs of the unmatched points, in the
        library, dtype and device of ``cost``. With torch inputs this is built from
        differentiable gathers: the gradient with respect to the costs is the optimal plan
        when ``assignment`` is optimal (the matching itself is held fixed).
    """
    library = array_library(cost)
    if library == "torch":
        import torch

        xp = torch
        device = cost.device
        assignment = torch.as_tensor(assignment, device=device).long()
        n_t = torch.as_tensor(np.asarray(to_numpy(n)), device=device).long()
        m_t = torch.as_tensor(np.asarray(to_numpy(m)), device=device).long()
        rows = torch.arange(cost.shape[1], device=device)[None, :] < n_t[:, None]
        cols = torch.arange(cost.shape[2], device=device)[None, :] < m_t[:, None]
    else:
        xp = np
        cost, diag_pred, diag_target = (np.asarray(a) for a in (cost, diag_pred, diag_target))
        assignment = np.asarray(assignment).astype(np.int64)
        rows = np.arange(cost.shape[1])[None, :] < np.asarray(n)[:, None]
        cols = np.arange(cost.shape[2])[None, :] < np.asarray(m)[:, None]
    matched = (assignment >= 0) & rows
    safe = xp.where(matched, assignment, xp.zeros_like(assignment))
    if library == "torch":
        picked = torch.gather(cost, 2, safe[:, :, None])[:, :, 0]
        spill = torch.where(matched, assignment, torch.full_like(assignment, cost.shape[2]))
        used = torch.zeros((cols.shape[0], cols.shape[1] + 1), dtype=torch.bool, device=device)
        used.scatter_(1, spill, torch.ones_like(matched))
        used = used[:, :-1]
        zero = torch.zeros((), dtype=cost.dtype, device=device)
    else:
        picked = np.take_along_axis(cost, safe[:, :, None], axis=2)[:, :, 0]
        used = np.zeros(cols.shape, dtype=bool)
        b_idx = np.nonzero(matched)
        used[b_idx[0], safe[b_idx]] = True
        zero = np.zeros((), dtype=cost.dtype)
    pred_part = xp.where(matched, picked, xp.where(rows, diag_pred, zero)).sum(1)
    target_part = xp.where(cols & ~used, diag_target, zero).sum(1)
    return pred_part + target_part


# ----------------------------------------------------------------------------- POT reference


def _emd_one(
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


def _match_emd(
    cost: np.ndarray,
    diag_pred: np.ndarray,
    diag_target: np.ndarray,
    n: np.ndarray,
    m: np.ndarray,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`_emd_one` on every problem of the batch, concurrently in threads."""
    batch, big_n = cost.shape[:2]
    total = np.zeros(batch, dtype=np.float64)
    assignment = np.full((batch, big_n), -1, dtype=np.int64)

    def solve(b: int) -> None:
        nb, mb = int(n[b]), int(m[b])
        total[b], assignment[b, :nb] = _emd_one(
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


# ----------------------------------------------------------------------------- CUDA drivers


def _cuda_work_shapes(batch: int, big_r: int, big_k: int) -> list[tuple[tuple[int, ...], str]]:
    """Shapes and dtypes of the kernel's work arrays, in ``launch`` order."""
    wide = (batch, big_r + big_k)
    return [((batch, big_r), "float64"), (wide, "float64"), (wide, "float64"), (wide, "int64"),
            (wide, "int64"), ((batch, big_r), "int64"), (wide, "uint8"), ((batch, big_r), "int64"),
            (wide, "int64")]


def _match_cuda_host(cost, diag_pred, diag_target, n, m, return_stats: bool = False):
    """Run the CUDA kernel on NumPy inputs (the simulator, or copies to the current GPU)."""
    from numba import config, cuda

    from satloss_gpu.kernels import matching_sap as kernel

    from ._matching_cpu import oriented_arrays, redo_uncertified, rows_to_assignment

    A, dr, dk, nr, nk, transposed = oriented_arrays(cost, diag_pred, diag_target, n, m)
    batch, big_r, big_k = A.shape
    nr = np.ascontiguousarray(nr, dtype=np.int64)
    nk = np.ascontiguousarray(nk, dtype=np.int64)
    work = [np.zeros(shape, dtype=dtype) for shape, dtype in _cuda_work_shapes(batch, big_r, big_k)]
    results = [np.zeros(batch, dtype=np.float64) for _ in range(3)] + [np.zeros(batch, np.int64)]
    if config.ENABLE_CUDASIM:
        kernel.launch(A, dr, dk, nr, nk, work, results)
    else:
        dev = [cuda.to_device(x) for x in (A, dr, dk, nr, nk)]
        dwork = [cuda.to_device(x) for x in work]
        dres = [cuda.to_device(x) for x in results]
        kernel.launch(*dev, dwork, dres)
        work = [x.copy_to_host() for x in dwork]
        results = [x.copy_to_host() for x in dres]
    total, violation, scale, steps = results
    col4row = work[5]
    # An aborted search (no open column) leaves col4row == -1: send the row to its private
    # (diagonal) column and fail the certificate, so that POT solves the problem again.
    aborted = ((np.arange(big_r)[None, :] < nr[:, None]) & (col4row < 0)).any(axis=1)
    violation[aborted] = np.nan
    col4row = np.where(col4row < 0, nk[:, None] + np.arange(big_r)[None, :], col4row)
    assignment = rows_to_assignment(col4row, nr, nk, transposed, cost.shape[1])
    redo_uncertified(total, assignment, violation, scale, cost, diag_pred, diag_target, n, m)
    if return_stats:
        return total, assignment, {"steps": steps, "violation": violation, "scale": scale}
    return total, assignment


def _match_cuda_torch(cost, diag_pred, diag_target, n, m, return_stats: bool = False):
    """Run the CUDA kernel on torch CUDA tensors in place; results stay on the device."""
    import torch
    from numba import cuda

    from satloss_gpu.kernels import matching_sap as kernel

    from ._matching_cpu import CERTIFICATE_RTOL, orient, redo_uncertified

    device = cost.device
    batch, big_n, big_m = cost.shape
    transposed = orient(big_n, big_m)
    if transposed:
        A, dr, dk, nr, nk = cost.transpose(1, 2), diag_target, diag_pred, m, n
    else:
        A, dr, dk, nr, nk = cost, diag_pred, diag_target, n, m
    A, dr, dk = (x.contiguous() for x in (A, dr, dk))
    nr_d = torch.as_tensor(nr, dtype=torch.int64, device=device)
    nk_d = torch.as_tensor(nk, dtype=torch.int64, device=device)
    big_r, big_k = A.shape[1], A.shape[2]
    work = [torch.empty(shape, dtype=getattr(torch, dtype), device=device)
            for shape, dtype in _cuda_work_shapes(batch, big_r, big_k)]
    results = [torch.empty(batch, dtype=torch.float64, device=device) for _ in range(3)]
    results.append(torch.empty(batch, dtype=torch.int64, device=device))
    with cuda.gpus[device.index if device.index is not None else torch.cuda.current_device()]:
        handle = torch.cuda.current_stream(device).cuda_stream
        stream = cuda.external_stream(handle) if handle else cuda.legacy_default_stream()

        def as_dev(x):
            # The kernel runs on torch's stream: no host synchronisation per argument.
            return cuda.as_cuda_array(x, sync=False)

        kernel.launch(*(as_dev(x) for x in (A, dr, dk, nr_d, nk_d)),
                      [as_dev(x) for x in work], [as_dev(x) for x in results], stream=stream)
    total, violation, scale, steps = results
    assignment, aborted = _torch_assignment(work[5], nr_d, nk_d, transposed, big_n)
    bad = ~(violation <= CERTIFICATE_RTOL * scale) | aborted  # NaN fails too
    if bool(bad.any()):
        total_h, assign_h = total.cpu().numpy(), assignment.cpu().numpy()
        redo_uncertified(total_h, assign_h, violation.cpu().numpy(), scale.cpu().numpy(),
                         to_numpy(cost), to_numpy(diag_pred), to_numpy(diag_target), n, m)
        total = torch.as_tensor(total_h, device=device)
        assignment = torch.as_tensor(assign_h, device=device)
    total = total.to(cost.dtype)
    if return_stats:
        return total, assignment, {"steps": steps, "violation": violation, "scale": scale}
    return total, assignment


def _torch_assignment(col4row, nr_d, nk_d, transposed: bool, big_n: int):
    """``MatchResult.assignment`` (B, N) from the kernel's ``col4row`` (B, R), on its device.

    Also returns the (B,) bool mask of problems with an aborted search: a valid row left at
    ``col4row == -1``. Such rows go to the diagonal here (never to ``scatter_`` with index
    -1, which kills the CUDA context) and their problems are solved again by the caller.
    """
    import torch

    batch, big_r = col4row.shape
    device = col4row.device
    rows_valid = torch.arange(big_r, device=device)[None, :] < nr_d[:, None]
    aborted = (rows_valid & (col4row < 0)).any(dim=1)
    real = rows_valid & (col4row >= 0) & (col4row < nk_d[:, None])
    if not transposed:
        return torch.where(real, col4row, torch.full_like(col4row, -1)), aborted
    assignment = torch.full((batch, big_n + 1), -1, dtype=torch.int64, device=device)
    index = torch.where(real, col4row, torch.full_like(col4row, big_n))
    source = torch.arange(big_r, device=device).expand(batch, big_r).contiguous()
    assignment.scatter_(1, index, source)
    return assignment[:, :big_n].contiguous(), aborted
