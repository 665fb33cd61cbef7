"""Padded diagram batches and the cost matrices of the spatially weighted diagram matching.

A batch of matching problems (one per image, channel and homology dimension) is held as
padded tensors: a problem ``q`` has ``n[q]`` prediction points and ``m[q]`` target points,
stored in the first slots of rows of width ``N = max(n)`` and ``M = max(m)``. Every cost
matrix of the batch is built in one broadcast pass, on the device and in the dtype of the
diagrams; nothing is copied to the host except the two sizes ``N`` and ``M``.

The cost of matching a prediction point ``(b1, d1)`` born at pixel ``(r1, c1)`` with a target
point ``(b2, d2)`` born at ``(r2, c2)`` in an image of ``H`` x ``W`` pixels is

    ``sp * pd``,  ``pd = ||(b1 - b2, d1 - d2)||``,
    ``sp = clamp(||((r1 - r2) / H, (c1 - c2) / W)||, lo, hi)``

and in a volume of ``D`` x ``H`` x ``W`` voxels, with birth voxels ``(z1, r1, c1)`` and
``(z2, r2, c2)``, ``sp = clamp(||((z1 - z2) / D, (r1 - r2) / H, (c1 - c2) / W)||, lo, hi)``

(``pd`` alone without the spatial factor); sending a point to the diagonal costs
``|d - b| / sqrt(2)``, never spatially weighted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import torch

__all__ = [
    "PaddedDiagrams",
    "pack_pairs",
    "pair_costs",
    "cost_matrices",
    "diagonal_costs",
]


@dataclass(frozen=True)
class PaddedDiagrams:
    """Diagrams of a batch of Q problems, padded to a common number of points N.

    Attributes
    ----------
    birth, death : (Q, N) float tensor
        Values of the points; 0 in the padding. Differentiable if the packed values were.
    birth_pixel, death_pixel : (Q, N, 2) or (Q, N, 3) int64 tensor
        (row, col) of the critical pixels, (z, row, col) of the critical voxels of volumes;
        0 in the padding.
    source : (Q, N) int64 tensor
        Index of each point in the flat pair table it was packed from; -1 in the padding.
    size : (Q,) int64 tensor
        Number of points ``n`` of each problem.
    """

    birth: torch.Tensor
    death: torch.Tensor
    birth_pixel: torch.Tensor
    death_pixel: torch.Tensor
    source: torch.Tensor
    size: torch.Tensor

    @property
    def width(self) -> int:
        """The padded number of points N."""
        return int(self.birth.shape[1])

    @property
    def valid(self) -> torch.Tensor:
        """(Q, N) bool: which slots hold a point."""
        slots = torch.arange(self.width, device=self.size.device)
        return slots[None, :] < self.size[:, None]


def pack_pairs(
    problem: torch.Tensor,
    n_problems: int,
    birth: torch.Tensor,
    death: torch.Tensor,
    birth_pixel: torch.Tensor,
    death_pixel: torch.Tensor,
    min_width: int = 1,
) -> PaddedDiagrams:
    """Scatter a flat table of K persistence pairs into Q padded rows.

    Parameters
    ----------
    problem : (K,) int64 tensor
        Problem index of each pair, in ``[0, n_problems)``; any order.
    n_problems : int
        Q, the number of problems (problems without pairs get size 0).
    birth, death : (K,) float tensor
    birth_pixel, death_pixel : (K, 2) or (K, 3) int64 tensor
    min_width : int, default 1
        Lower bound on the padded width N, so that empty batches still give (Q, 1) tensors.

    Returns
    -------
    PaddedDiagrams
        Points in the order of the table within each problem (stable). Reads one bool
        (whether the table is already grouped by problem) and one integer, the largest
        problem size, back from the device.
    """
    device = birth.device
    count = problem.shape[0]
    grouped = count < 2 or bool((problem[1:] >= problem[:-1]).all())
    if grouped:  # the usual case (tables come grouped by problem): no sort
        order = torch.arange(count, device=device)
        sorted_problem = problem
    else:
        order = torch.sort(problem, stable=True).indices
        sorted_problem = problem[order]
    size = torch.bincount(sorted_problem, minlength=n_problems)
    start = torch.cumsum(size, 0) - size
    slot = torch.arange(count, device=device) - start[sorted_problem]
    width = max(int(size.max()) if n_problems and problem.numel() else 0, int(min_width))
    flat_slot = sorted_problem * width + slot

    def scatter(values: torch.Tensor, fill: float) -> torch.Tensor:
        tail = tuple(values.shape[1:])
        out = values.new_full((n_problems * width,) + tail, fill)
        out.index_copy_(0, flat_slot, values if grouped else values[order])
        return out.view((n_problems, width) + tail)

    source = torch.full((n_problems * width,), -1, dtype=torch.int64, device=device)
    source = source.index_copy_(0, flat_slot, order).view(n_problems, width)
    return PaddedDiagrams(
        birth=scatter(birth, 0.0),
        death=scatter(death, 0.0),
        birth_pixel=scatter(birth_pixel, 0),
        death_pixel=scatter(death_pixel, 0),
        source=source,
        size=size,
    )


def _safe_sqrt(squared: torch.Tensor) -> torch.Tensor:
    """``sqrt`` whose gradient at 0 is 0 (a subgradient) instead of inf/NaN."""
    positive = squared > 0
    root = torch.sqrt(torch.where(positive, squared, torch.ones_like(squared)))
    return torch.where(positive, root, torch.zeros_like(squared))


def pair_costs(
    birth1: torch.Tensor,
    death1: torch.Tensor,
    pixel1: torch.Tensor,
    birth2: torch.Tensor,
    death2: torch.Tensor,
    pixel2: torch.Tensor,
    image_shape: tuple[int, ...],
    spatial: bool = True,
    spatial_clamp: tuple[float, float] = (0.05, 1.0),
) -> torch.Tensor:
    """Matching cost between points, elementwise with broadcasting.

    Parameters
    ----------
    birth1, death1 : float tensor, shape S1
        Values of the first points (the prediction's; may carry gradients).
    pixel1 : int64 tensor, shape S1 + (2,) or S1 + (3,)
        (row, col) of their birth (creator) pixels; (z, row, col) of their birth voxels
        for volumes.
    birth2, death2 : float tensor, shape S2
        Values of the second points (the target's), broadcastable with S1.
    pixel2 : int64 tensor, shape S2 + (2,) or S2 + (3,)
    image_shape : (int, int) or (int, int, int)
        (H, W), the size of the image without padding, or (D, H, W) for volumes: the
        offset along each axis is divided by the size of that axis.
    spatial : bool, default True
        Multiply by the clamped spatial distance; False gives the plain Euclidean distance
        of the diagram points (the Wasserstein topological loss).
    spatial_clamp : (float, float), default (0.05, 1.0)
        Bounds of the spatial factor.

    Returns
    -------
    float tensor, shape broadcast(S1, S2)
        ``sp * pd`` (``pd`` if not ``spatial``), in the dtype of ``birth1``. The gradient of
        ``pd`` at coinciding points is taken as 0.
    """
    persistence_distance = _safe_sqrt((birth1 - birth2) ** 2 + (death1 - death2) ** 2)
    if not spatial:
        return persistence_distance
    dtype = persistence_distance.dtype
    offset = (pixel1 - pixel2).to(dtype)
    squared = sum((offset[..., axis] / size) ** 2 for axis, size in enumerate(image_shape))
    spatial_distance = torch.sqrt(squared)
    low, high = spatial_clamp
    return spatial_distance.clamp(low, high) * persistence_distance


def cost_matrices(
    pred: PaddedDiagrams,
    target: PaddedDiagrams,
    image_shape: tuple[int, ...],
    spatial: bool = True,
    spatial_clamp: tuple[float, float] = (0.05, 1.0),
) -> torch.Tensor:
    """All cost matrices of a batch of problems, in one pass, without gradients.

    Parameters
    ----------
    pred, target : PaddedDiagrams
        Q problems, N prediction points and M target points at most.
    image_shape, spatial, spatial_clamp
        As for :func:`pair_costs`.

    Returns
    -------
    (Q, N, M) float tensor
        ``cost[q, i, j]`` for ``i < n[q]``, ``j < m[q]``; 0 elsewhere. On the device and in
        the dtype of ``pred.birth``; detached.
    """
    with torch.no_grad():
        cost = pair_costs(
            pred.birth.detach()[:, :, None],
            pred.death.detach()[:, :, None],
            pred.birth_pixel[:, :, None, :],
            target.birth.detach()[:, None, :].to(pred.birth.dtype),
            target.death.detach()[:, None, :].to(pred.birth.dtype),
            target.birth_pixel[:, None, :, :],
            image_shape,
            spatial,
            spatial_clamp,
        )
        valid = pred.valid[:, :, None] & target.valid[:, None, :]
        return torch.where(valid, cost, torch.zeros_like(cost))


def diagonal_costs(diagrams: PaddedDiagrams, detach: bool = True) -> torch.Tensor:
    """(Q, N) cost ``|death - birth| / sqrt(2)`` of sending each point to the diagonal.

    Parameters
    ----------
    diagrams : PaddedDiagrams
    detach : bool, default True
        Return a detached tensor (for the solver) or keep the gradient (for the loss).

    Returns
    -------
    (Q, N) float tensor
        0 in the padding.
    """
    birth, death = diagrams.birth, diagrams.death
    if detach:
        birth, death = birth.detach(), death.detach()
    cost = (death - birth).abs() / math.sqrt(2.0)
    return torch.where(diagrams.valid, cost, torch.zeros_like(cost))
