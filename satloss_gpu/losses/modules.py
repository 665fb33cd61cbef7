"""The topological losses as ``torch.nn.Module`` objects: settings stored, work forwarded.

The computation lives in :mod:`satloss_gpu.losses.functional`; these classes hold the options,
the optional channel weights (a buffer, so it follows ``.to(device)``) and the cache of
target diagrams.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .._validation import check_channel_weight_values
from ._cache import DEFAULT_MAX_ENTRIES, TargetCache, check_max_entries
from ._options import LossOptions, check_keywords
from .functional import DiagramMatching, SampleIds, loss_with_options, matching_with_options

__all__ = ["SATLoss", "TopoLoss"]


class SATLoss(nn.Module):
    """Spatial-Aware Topological Loss between predictions and binary masks or label maps.

    See :func:`satloss_gpu.losses.functional.sat_loss` for the exact definition and every option.
    Every setting is checked here, when the loss is built: a bad one raises ``ValueError`` or
    ``TypeError`` naming it.

    Parameters
    ----------
    channel_weights : array_like, shape (C',), optional
        Finite, non-negative weight of each channel the loss is computed on; an image's
        loss is the weighted mean ``mean_c(w_c * loss_c)`` (MONAI's convention: unit weights
        give the default, the plain mean). A buffer, so it follows ``.to(device)``.
    cache_max_entries : int, default 10000
        Most target diagrams kept by the cache that calls with ``keys`` fill (least
        recently used forgotten first); see :class:`~satloss_gpu.losses.TargetCache`.
    **settings
        The fields of :class:`~satloss_gpu.losses.LossOptions`, validated once here:

    sigmoid : bool, default False
        ``pred`` holds logits; ``torch.sigmoid`` is applied first.
    softmax : bool, default False
        ``pred`` holds logits of C >= 2 classes; softmax over the channels first.
    num_classes : int, optional
        ``target`` is an integer label map (B, H, W) or (B, 1, H, W), one-hot encoded.
    include_background : bool, default True
        False drops channel 0 of prediction and target (MONAI's convention).

    dims : sequence of int, optional
        Homology dimensions; default all of them: (0, 1) for images, (0, 1, 2) for volumes.
    spatial : bool, default True
        Spatially weighted matching cost (False: the Wasserstein topological loss).
    pad : bool, default True
        One-pixel (one-voxel) foreground frame around prediction and target.
    construction : {"T", "V"}, default "T"
    spatial_clamp : (float, float), default (0.05, 1.0)
    solver : {"auto", "emd", "cpu", "cuda", "sinkhorn"}, default "auto"
        "auto" is the fastest exact solver for the device; "sinkhorn" is approximate.
    reduction : {"mean", "sum", "none"}, default "mean"
    backend : {"auto", "cpu", "cuda", "gudhi"}, default "auto"
        Persistence backend.
    solver_options : dict, optional
        Options of the "sinkhorn" solver.
    target_tiebreak : {"index", "prediction"}, default "index"
        How the target's critical pixels are chosen among its ties: by index, or by the
        prediction (a target feature located where the prediction creates it; the target
        cache is then unused).

    Shape
    -----
    - pred: (B, C, H, W) or (B, H, W) images, or (B, C, D, H, W) volumes; probabilities in
      [0, 1], or logits with ``sigmoid`` or ``softmax``.
    - target: same shape, binary (one-hot); or with ``num_classes`` (B, H, W) or (B, 1, H, W)
      class indices ((B, D, H, W) or (B, 1, D, H, W) for volumes).
    - mask (optional): (B, H, W), (B, 1, H, W) or (B, C, H, W), bool or 0/1 ((D, H, W) for
      (H, W) for volumes).
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

    def __init__(self, *, channel_weights: Optional[Any] = None,
                 cache_max_entries: int = DEFAULT_MAX_ENTRIES, **settings: Any) -> None:
        super().__init__()
        self.options = LossOptions.of(type(self).__name__, settings)
        weights = check_channel_weight_values(channel_weights, self.options.loss_channels)
        self.register_buffer("channel_weights", weights)
        self._target_cache = TargetCache(check_max_entries(cache_max_entries,
                                                           "cache_max_entries"))

    @property
    def target_cache(self) -> TargetCache:
        """The cache of target diagrams filled by calls with ``keys``."""
        return self._target_cache

    def forward(self, pred: torch.Tensor, target: Any, keys: Optional[SampleIds] = None,
                mask: Optional[Any] = None) -> torch.Tensor:
        """Loss of a batch.

        ``keys`` (one sample id per image, or the (B,) integer tensor of indices a
        DataLoader gives): the target diagrams are cached per id, and served again while
        the id's target is unchanged. ``mask``: region of interest (outside it, prediction
        and target count as background).
        """
        return loss_with_options(pred, target, self.options, self.channel_weights, keys,
                                 self._target_cache if keys is not None else None, mask)

    def match(self, pred: torch.Tensor, target: Any,
              mask: Optional[Any] = None) -> list[DiagramMatching]:
        """The optimal matchings behind the loss, on the host, one per image/channel/dim."""
        return matching_with_options(pred, target, self.options, mask)

    def clear_cache(self) -> None:
        """Forget the cached target diagrams."""
        self._target_cache.clear()

    def extra_repr(self) -> str:
        weights = self.channel_weights
        shown = "" if weights is None else f", channel_weights={weights.tolist()!r}"
        return self.options.describe() + shown


class TopoLoss(SATLoss):
    """Wasserstein topological loss (WTLoss): :class:`SATLoss` without the spatial factor.

    Takes the parameters of :class:`SATLoss` except ``spatial`` and ``spatial_clamp``.

    Shape
    -----
    As :class:`SATLoss`.
    """

    def __init__(self, *, channel_weights: Optional[Any] = None, **settings: Any) -> None:
        known = [n for n in LossOptions.field_names() if n not in ("spatial", "spatial_clamp")]
        check_keywords("TopoLoss", settings, known + ["cache_max_entries"])
        super().__init__(channel_weights=channel_weights, spatial=False, **settings)
