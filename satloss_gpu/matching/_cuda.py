"""Drivers of the CUDA matching kernel (:mod:`satloss_gpu.kernels.cuda.matching_sap`): NumPy
inputs (copied to the device, or run in the simulator) and CUDA torch tensors (read in place, on
torch's current stream)."""
from __future__ import annotations

import numpy as np

from .._arraylib import to_numpy
from ..kernels.cuda.streams import numba_stream
from ._cpu import CERTIFICATE_RTOL, orient, oriented_arrays, redo_uncertified, rows_to_assignment

__all__ = ["match_cuda_host", "match_cuda_torch", "check_cuda_available"]


def check_cuda_available() -> None:
    """Raise ``ValueError`` naming ``solver`` unless the CUDA kernel can run here.

    It runs on a CUDA GPU visible to ``numba.cuda``, or in Numba's CUDA simulator
    (``NUMBA_ENABLE_CUDASIM=1``).
    """
    from ..persistence.backends.cuda import CUDABackend

    if not CUDABackend.is_available():
        raise ValueError("`solver='cuda'` needs a CUDA GPU; none is available to numba.cuda. "
                         "Use solver='auto' or 'cpu' (or set NUMBA_ENABLE_CUDASIM=1 to run the "
                         "kernel in Numba's simulator)")


def _cuda_work_shapes(batch: int, big_r: int, big_k: int) -> list[tuple[tuple[int, ...], str]]:
    """Shapes and dtypes of the kernel's work arrays, in ``launch`` order."""
    wide = (batch, big_r + big_k)
    return [((batch, big_r), "float64"), (wide, "float64"), (wide, "float64"), (wide, "int64"),
            (wide, "int64"), ((batch, big_r), "int64"), (wide, "uint8"), ((batch, big_r), "int64"),
            (wide, "int64")]


def match_cuda_host(cost, diag_pred, diag_target, n, m, return_stats: bool = False,
                    threads: int | None = None, use_shared: bool | None = None):
    """Run the CUDA kernel on NumPy inputs (the simulator, or copies to the current GPU).

    ``threads`` and ``use_shared`` override the launch rule of
    :func:`satloss_gpu.kernels.cuda.matching_sap.launch` (tests use them).
    """
    from numba import config, cuda

    from ..kernels.cuda import matching_sap as kernel

    check_cuda_available()
    A, row_diag, col_diag, row_counts, col_counts, transposed = oriented_arrays(cost, diag_pred,
                                                                                diag_target, n, m)
    batch, big_r, big_k = A.shape
    row_counts = np.ascontiguousarray(row_counts, dtype=np.int64)
    col_counts = np.ascontiguousarray(col_counts, dtype=np.int64)
    work = [np.zeros(shape, dtype=dtype) for shape, dtype in _cuda_work_shapes(batch, big_r, big_k)]
    results = [np.zeros(batch, dtype=np.float64) for _ in range(3)] + [np.zeros(batch, np.int64)]
    if config.ENABLE_CUDASIM:
        kernel.launch(A, row_diag, col_diag, row_counts, col_counts, work, results,
                      threads=threads, use_shared=use_shared)
    else:
        dev = [cuda.to_device(x) for x in (A, row_diag, col_diag, row_counts, col_counts)]
        dwork = [cuda.to_device(x) for x in work]
        dres = [cuda.to_device(x) for x in results]
        kernel.launch(*dev, dwork, dres, threads=threads, use_shared=use_shared)
        work = [x.copy_to_host() for x in dwork]
        results = [x.copy_to_host() for x in dres]
    total, violation, scale, steps = results
    col4row = work[5]
    # An aborted search (no open column) leaves col4row == -1: send the row to its private
    # (diagonal) column and fail the certificate, so that POT solves the problem again.
    aborted = ((np.arange(big_r)[None, :] < row_counts[:, None]) & (col4row < 0)).any(axis=1)
    violation[aborted] = np.nan
    col4row = np.where(col4row < 0, col_counts[:, None] + np.arange(big_r)[None, :], col4row)
    assignment = rows_to_assignment(col4row, row_counts, col_counts, transposed, cost.shape[1])
    redo_uncertified(total, assignment, violation, scale, cost, diag_pred, diag_target, n, m)
    if return_stats:
        return total, assignment, {"steps": steps, "violation": violation, "scale": scale}
    return total, assignment


def match_cuda_torch(cost, diag_pred, diag_target, n, m, return_stats: bool = False):
    """Run the CUDA kernel on torch CUDA tensors in place; results stay on the device."""
    import torch
    from numba import cuda

    from ..kernels.cuda import matching_sap as kernel

    device = cost.device
    batch, big_n, big_m = cost.shape
    transposed = orient(big_n, big_m)
    if transposed:
        A, row_diag, col_diag = cost.transpose(1, 2), diag_target, diag_pred
        row_counts, col_counts = m, n
    else:
        A, row_diag, col_diag, row_counts, col_counts = cost, diag_pred, diag_target, n, m
    A, row_diag, col_diag = (x.contiguous() for x in (A, row_diag, col_diag))
    row_counts_d = torch.as_tensor(row_counts, dtype=torch.int64, device=device)
    col_counts_d = torch.as_tensor(col_counts, dtype=torch.int64, device=device)
    big_r, big_k = A.shape[1], A.shape[2]
    work = [torch.empty(shape, dtype=getattr(torch, dtype), device=device)
            for shape, dtype in _cuda_work_shapes(batch, big_r, big_k)]
    results = [torch.empty(batch, dtype=torch.float64, device=device) for _ in range(3)]
    results.append(torch.empty(batch, dtype=torch.int64, device=device))
    with cuda.gpus[device.index if device.index is not None else torch.cuda.current_device()]:
        stream = numba_stream(torch.cuda.current_stream(device).cuda_stream)

        def as_dev(x):
            # The kernel runs on torch's stream: no host synchronisation per argument.
            return cuda.as_cuda_array(x, sync=False)

        kernel.launch(*(as_dev(x) for x in (A, row_diag, col_diag, row_counts_d, col_counts_d)),
                      [as_dev(x) for x in work], [as_dev(x) for x in results], stream=stream)
    total, violation, scale, steps = results
    assignment, aborted = _torch_assignment(work[5], row_counts_d, col_counts_d, transposed, big_n)
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


def _torch_assignment(col4row, row_counts_d, col_counts_d, transposed: bool, big_n: int):
    """``MatchResult.assignment`` (B, N) from the kernel's ``col4row`` (B, R), on its device.

    Also returns the (B,) bool mask of problems with an aborted search: a valid row left at
    ``col4row == -1``. Such rows go to the diagonal here (never to ``scatter_`` with index
    -1, which kills the CUDA context) and their problems are solved again by the caller.
    """
    import torch

    batch, big_r = col4row.shape
    device = col4row.device
    rows_valid = torch.arange(big_r, device=device)[None, :] < row_counts_d[:, None]
    aborted = (rows_valid & (col4row < 0)).any(dim=1)
    real = rows_valid & (col4row >= 0) & (col4row < col_counts_d[:, None])
    if not transposed:
        return torch.where(real, col4row, torch.full_like(col4row, -1)), aborted
    assignment = torch.full((batch, big_n + 1), -1, dtype=torch.int64, device=device)
    index = torch.where(real, col4row, torch.full_like(col4row, big_n))
    source = torch.arange(big_r, device=device).expand(batch, big_r).contiguous()
    assignment.scatter_(1, index, source)
    return assignment[:, :big_n].contiguous(), aborted
