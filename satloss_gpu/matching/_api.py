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
    reference. ``ot.emd`` holds the GIL while it solves (``bench/RESULTS.md``), so the
    problems run one after another unless ``SATLOSS_EMD_THREADS`` asks for a thread pool.
``"cpu"``
    Shortest augmenting paths (a rectangular Jonker-Volgenant / Hungarian method) compiled
    with Numba, parallel over the problems of the batch, over sparse per-row candidate lists
    (the cheapest columns of each row, lengthened until a bound test and the dual certificate
    on the full problem pass). Exact.
``"cuda"``
    The same algorithm as a Numba-CUDA kernel, one thread block per problem (threads sized to
    the problem width, up to 1024; per-problem state in shared memory when it fits), the
    whole batch in one launch. Exact. CUDA torch tensors are used in place; host inputs are copied to the
    device (under ``NUMBA_ENABLE_CUDASIM=1`` the kernel runs in the simulator).
``"reduced"``
    The exact reduction of :mod:`satloss_gpu.matching._reduced`: every target point keeps its
    ``min(m, #negative reduced costs)`` cheapest prediction points, and the problem restricted
    to those pairs (at most ``m^2`` prediction points) is solved exactly: compiled candidate
    lists and augmenting paths on the CPU, a batched ``torch.topk`` and the CUDA kernel for
    CUDA tensors. Fastest when ``m`` is much smaller than ``n``, as in SATLoss problems.
``"auto"``
    ``"cuda"`` for CUDA tensors, ``"reduced"`` otherwise: by the measurements of
    ``bench/matching.py`` (``bench/RESULTS.md``) it is the fastest exact solver on the CPU for
    diagram-like and real SATLoss problems.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._arraylib import array_library, is_cuda_array, like, to_numpy
from .._validation import check_choice, check_matching_problem
from ._cpu import K_START, match_cpu
from ._cuda import match_cuda_host, match_cuda_torch
from ._pot import match_emd
from ._reduced import reduced_match_dense, reduced_match_torch

__all__ = ["MatchResult", "match_batch", "assignment_cost", "MATCHING_SOLVERS"]

MATCHING_SOLVERS = ("auto", "emd", "cpu", "cuda", "reduced")


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
    solver : {"auto", "emd", "cpu", "cuda", "reduced"}
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
        values in the valid region, values of magnitude above ``float64 max / (8 (N + M +
        2))`` there (their sums could overflow), unknown ``solver``.

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
    solver = check_choice("solver", solver, MATCHING_SOLVERS)
    cost, diag_pred, diag_target, n_host, m_host = check_matching_problem(
        cost, diag_pred, diag_target, n, m)
    if solver == "auto":
        # By measurement (bench/matching.py): the CUDA kernel for CUDA tensors; on the CPU the
        # exact reduction beats POT's network simplex and the plain augmenting paths on
        # diagram-like and real SATLoss problems.
        solver = "cuda" if is_cuda_array(cost) else "reduced"
    if solver == "cuda" and array_library(cost) == "torch" and cost.is_cuda:
        total, assignment = match_cuda_torch(cost, diag_pred, diag_target, n_host, m_host)
        return MatchResult(total=total, assignment=assignment)
    if solver == "reduced" and array_library(cost) == "torch" and cost.is_cuda:
        return _reduced_on_device(cost, diag_pred, diag_target, n_host, m_host)
    c64 = to_numpy(cost).astype(np.float64, copy=False)
    dp64 = to_numpy(diag_pred).astype(np.float64, copy=False)
    dt64 = to_numpy(diag_target).astype(np.float64, copy=False)
    if solver == "emd":
        total, assignment = match_emd(c64, dp64, dt64, n_host, m_host)
    elif solver == "cuda":
        total, assignment = match_cuda_host(c64, dp64, dt64, n_host, m_host)
    elif solver == "reduced":
        result = reduced_match_dense(c64, dp64, dt64, n_host, m_host)
        total, assignment = result.total, result.assignment(c64.shape[1])
    else:
        total, assignment = match_cpu(c64, dp64, dt64, n_host, m_host, k_start=K_START)
    return MatchResult(
        total=like(total.astype(_numpy_dtype(cost)), cost), assignment=like(assignment, cost)
    )


def _reduced_on_device(cost, diag_pred, diag_target, n_host, m_host) -> MatchResult:
    """The ``"reduced"`` solver on CUDA tensors: top-k lists on the device, the CUDA kernel."""
    import torch

    device = cost.device

    def pair_cost(index):
        return torch.gather(cost, 1, index[:, :, None].expand(-1, -1, cost.shape[2]))

    result = reduced_match_torch(pair_cost, diag_pred, diag_target,
                                 torch.as_tensor(n_host, device=device),
                                 torch.as_tensor(m_host, device=device), solver="cuda")
    return MatchResult(total=result.total.to(cost.dtype),
                       assignment=result.assignment(cost.shape[1]))


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
