"""The topological losses as ``torch.nn.Module`` objects: settings stored, work forwarded.

The computation lives in :mod:`satloss_gpu.losses.functional`; these classes hold the options,
the optional channel weights (a buffer, so it follows ``.to(device)``) and the cache of
target diagrams.
"""
from __future__ import annotations

from typing import Any, Hashable, Optional, Sequence

import torch
from torch import nn

from ._options import LossOptions
from .functional import DiagramMatching, loss_with_options, matching_with_options

__all__ = ["SATLoss", "TopoLoss"]


class SATLoss(nn.Module):
    """Spatial-Aware Topological Loss between predicted probabilities and binary masks.

    See :func:`satloss_gpu.losses.functional.sat_loss` for the exact definition and every option.

    Parameters
    ----------
    channel_weights : array_like, shape (C,), optional
        Weight of each channel (default: mean over channels); a buffer, so it follows
        ``.to(device)``.
    **settings
        The fields of :class:`~satloss_gpu.losses.LossOptions`, validated once here:

    dims : sequence of int, default (0, 1)
        Homology dimensions.
    spatial : bool, default True
        Spatially weighted matching cost (False: the Wasserstein topological loss).
    pad : bool, default True
        One-pixel foreground frame around prediction and target.
    construction : {"T", "V"}, default "T"
    spatial_clamp : (float, float), default (0.05, 1.0)
    solver : {"auto", "emd", "cpu", "cuda", "sinkhorn"}, default "auto"
        "auto" is the fastest exact solver for the device; "sinkhorn" is approximate.
    reduction : {"mean", "sum", "none"}, default "mean"
    backend : {"auto", "cpu", "cuda", "gudhi"}, default "auto"
        Persistence backend.
    solver_options : dict, optional
        Options of the "sinkhorn" solver.

    Shape
    -----
    - pred: (B, C, H, W) or (B, H, W), probabilities in [0, 1].
    - target: same shape, binary.
    - output: scalar, or (B,) with ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> from satloss_gpu import SATLoss
    >>> crit = SATLoss(backend="gudhi", solver="emd")
    >>> target = torch.zeros(2, 1, 16, 16)
    >>> target[:, :, 8, :] = 1.0
    >>> pred = torch.rand(2, 1, 16, 16, requires_grad=True)
    >>> loss = crit(pred, target)
    >>> loss.backward()
    >>> loss.item() > 0, pred.grad.shape
    (True, torch.Size([2, 1, 16, 16]))
    """

    channel_weights: Optional[torch.Tensor]

    def __init__(self, *, channel_weights: Optional[Any] = None, **settings: Any) -> None:
        super().__init__()
        self.options = LossOptions(**settings)
        weights = None if channel_weights is None else torch.as_tensor(channel_weights).float()
        self.register_buffer("channel_weights", weights)
        self._target_cache: dict = {}

    def forward(self, pred: torch.Tensor, target: Any,
                keys: Optional[Sequence[Hashable]] = None) -> torch.Tensor:
        """Loss of a batch; with ``keys`` (one id per image), target diagrams are cached."""
        return loss_with_options(pred, target, self.options, self.channel_weights, keys,
                                 self._target_cache if keys is not None else None)

    def match(self, pred: torch.Tensor, target: Any) -> list[DiagramMatching]:
        """The optimal matchings behind the loss, on the host, one per image/channel/dim."""
        return matching_with_options(pred, target, self.options)

    def clear_cache(self) -> None:
        """Forget the cached target diagrams."""
        self._target_cache.clear()

    def extra_repr(self) -> str:
        return self.options.describe()


class TopoLoss(SATLoss):
    """Wasserstein topological loss (WTLoss): :class:`SATLoss` without the spatial factor.

    Takes the parameters of :class:`SATLoss` except ``spatial`` and ``spatial_clamp``.

    Shape
    -----
    - pred: (B, C, H, W) or (B, H, W), probabilities in [0, 1].
    - target: same shape, binary.
    - output: scalar, or (B,) with ``reduction="none"``.
    """

    def __init__(self, *, channel_weights: Optional[Any] = None, **settings: Any) -> None:
        for name in ("spatial", "spatial_clamp"):
            if name in settings:
                raise TypeError(f"TopoLoss() got an unexpected keyword argument {name!r}")
        super().__init__(channel_weights=channel_weights, spatial=False, **settings)
