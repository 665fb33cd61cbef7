"""The soft clDice loss (Shit et al., CVPR 2021) and the soft Dice loss, for torch.

clDice compares skeletons: topology precision is the fraction of the predicted skeleton
inside the target, topology sensitivity the fraction of the target skeleton inside the
prediction, and clDice their harmonic mean. The soft skeleton is computed with iterated
min/max pooling, so the loss is differentiable and runs on any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int, check_nonnegative, check_pred_target, check_reduction

__all__ = ["soft_erode", "soft_dilate", "soft_skeleton", "soft_dice_loss", "soft_cldice_loss",
           "SoftDiceLoss", "SoftClDiceLoss"]



def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft erosion of (B, C, H, W): minimum over the plus-shaped 3x3 neighbourhood."""
    vertical = -F.max_pool2d(-x, (3, 1), stride=1, padding=(1, 0))
    horizontal = -F.max_pool2d(-x, (1, 3), stride=1, padding=(0, 1))
    return torch.minimum(vertical, horizontal)


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft dilation of (B, C, H, W): maximum over the 3x3 neighbourhood."""
    return F.max_pool2d(x, 3, stride=1, padding=1)


def soft_skeleton(x: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Soft morphological skeleton of probabilities (B, C, H, W) in [0, 1].

    Parameters
    ----------
    x : (B, C, H, W) float tensor
    iterations : int, default 10
        Erosion steps; should exceed half the thickness of the thickest structure.

    Returns
    -------
    (B, C, H, W) tensor in [0, 1]
    """
    iterations = check_int("iterations", iterations, minimum=0)
    skeleton = F.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = F.relu(x - soft_dilate(soft_erode(x)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"`pred` and `target` must be torch tensors; got "
                        f"{type(pred).__name__} and {type(target).__name__}")
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(f"`pred` and `target` must have the same shape (B, C, H, W); got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    return check_pred_target(pred, target, logits_hint="for logits apply torch.sigmoid first")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    check_reduction(reduction)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
                   reduction: str = "mean") -> torch.Tensor:
    """``1 - Dice`` per image, on probabilities.

    Parameters
    ----------
    pred : (B, C, H, W) float tensor
        Probabilities in [0, 1] (NaN, inf and values outside raise ``ValueError``).
    target : (B, C, H, W) tensor
        Binary target (any dtype; values other than 0 and 1 raise ``ValueError``).
    smooth : float, default 1.0
        Added to numerator and denominator (empty images give loss 0).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Scalar tensor, or (B,) for ``reduction="none"``.
    """
    pred, target = _check_pair(pred, target)
    smooth = check_nonnegative("smooth", smooth)
    inter = (pred * target).flatten(1).sum(1)
    total = pred.flatten(1).sum(1) + target.flatten(1).sum(1)
    return _reduce(1.0 - (2.0 * inter + smooth) / (total + smooth), reduction)


def soft_cldice_loss(pred: torch.Tensor, target: torch.Tensor, iterations: int = 10,
                     smooth: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """``1 - soft clDice`` per image.

    Parameters
    ----------
    pred : (B, C, H, W) float tensor
        Probabilities in [0, 1].
    target : (B, C, H, W) tensor
        Binary target.
    iterations : int, default 10
        Soft-skeleton iterations.
    smooth : float, default 1.0
        Smoothing of the two skeleton ratios.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Scalar tensor, or (B,) for ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> t = torch.zeros(1, 1, 9, 9); t[..., 4, 1:8] = 1
    >>> float(soft_cldice_loss(t, t, smooth=0.0))
    0.0
    """
    pred, target = _check_pair(pred, target)
    smooth = check_nonnegative("smooth", smooth)
    skel_pred = soft_skeleton(pred, iterations)
    skel_true = soft_skeleton(target, iterations)
    precision = ((skel_pred * target).flatten(1).sum(1) + smooth) / (
        skel_pred.flatten(1).sum(1) + smooth)
    sensitivity = ((skel_true * pred).flatten(1).sum(1) + smooth) / (
        skel_true.flatten(1).sum(1) + smooth)
    cldice = 2.0 * precision * sensitivity / (precision + sensitivity).clamp_min(1e-12)
    return _reduce(1.0 - cldice, reduction)


class SoftDiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`."""

    def __init__(self, smooth: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.smooth = check_nonnegative("smooth", smooth)
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(pred, target, self.smooth, self.reduction)


class SoftClDiceLoss(nn.Module):
    """Module form of :func:`soft_cldice_loss`.

    Shape
    -----
    - pred: (B, C, H, W) probabilities; target: same shape, binary.
    - Output: scalar, or (B,) for ``reduction="none"``.
    """

    def __init__(self, iterations: int = 10, smooth: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.iterations = check_int("iterations", iterations, minimum=0)
        self.smooth = check_nonnegative("smooth", smooth)
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_cldice_loss(pred, target, self.iterations, self.smooth, self.reduction)
