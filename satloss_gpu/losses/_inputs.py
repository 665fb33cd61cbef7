"""The input side of the losses: logits, softmax, label maps, masks, background channel.

:func:`prepare_inputs` turns what a segmentation network and a dataset give (logits or
probabilities, one-hot masks or integer label maps, a region mask) into what the topological
pipeline takes: probabilities and binary targets of one shape (B, C, H, W), or
(B, C, D, H, W) for volumes, one binary problem per channel. Every step is an explicit torch operation, so the loss of the prepared
inputs and its gradient are those of the explicit composition: ``torch.sigmoid`` (or
``torch.softmax`` over the channels) then the loss; ``F.one_hot`` of the label map then the
loss; ``p * mask`` and ``t * mask`` then the loss; channel 0 dropped from both.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._validation import (check_channels, check_label_map, check_loss_pred, check_mask,
                           check_target_like)
from ._options import LossOptions

__all__ = ["prepare_inputs", "needs_preparation"]


def needs_preparation(options: LossOptions, mask: Any) -> bool:
    """Whether the inputs are anything but probabilities and binary targets of one shape."""
    return (options.sigmoid or options.softmax or options.num_classes is not None
            or not options.include_background or mask is not None)


def _activate(pred: torch.Tensor, options: LossOptions) -> torch.Tensor:
    """Probabilities from logits (``pred`` itself when it holds probabilities)."""
    if options.sigmoid:
        return torch.sigmoid(pred)
    if options.softmax:
        return torch.softmax(pred, dim=1)
    return pred


def prepare_inputs(pred: Any, target: Any, options: LossOptions,
                   mask: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and binary targets of shape (B, C', H, W) (images) or (B, C', D, H, W)
    (volumes) from what the user gives.

    Parameters
    ----------
    pred : torch.Tensor, shape (B, C, H, W), (B, H, W) or (B, C, D, H, W), float
        Probabilities, or logits with ``options.sigmoid`` / ``options.softmax``. Half
        precision (float16, bfloat16) is computed in float32.
    target : torch.Tensor or array_like
        Of the shape of ``pred`` (binary, or one-hot), or with ``options.num_classes`` an
        integer label map (B, H, W) or (B, 1, H, W); (B, D, H, W) or (B, 1, D, H, W) for
        volumes.
    options : LossOptions
    mask : torch.Tensor or array_like, optional
        Shape (B, H, W), (B, 1, H, W) or (B, C, H, W) ((D, H, W) for (H, W) for volumes);
        bool or 0/1: where it is 0, every channel of the probabilities and of the target is
        set to 0, after the activation and the one-hot encoding.

    Returns
    -------
    probs : torch.Tensor, shape (B, C', H, W) or (B, C', D, H, W), float32 or float64
        Differentiable in ``pred``; ``C' = C``, or ``C - 1`` without the background.
    target : torch.Tensor, shape of ``probs``
        In the dtype and on the device of ``probs`` (checked to be binary later, with
        ``probs`` checked to lie in [0, 1]).
    """
    squeezed = isinstance(pred, torch.Tensor) and pred.ndim == 3
    pred4 = check_loss_pred(pred, logits=options.sigmoid or options.softmax)
    check_channels(pred4, options.softmax, options.num_classes, options.include_background)
    probs = _activate(pred4, options)
    if options.num_classes is not None:
        labels = check_label_map(target, probs, options.num_classes)
        target4 = F.one_hot(labels, options.num_classes).movedim(-1, 1).to(probs.dtype)
    else:
        target4 = check_target_like(target, probs, squeezed)
    if mask is not None:
        keep = check_mask(mask, tuple(int(s) for s in probs.shape), probs)
        probs, target4 = probs * keep, target4 * keep
    if not options.include_background:
        probs, target4 = probs[:, 1:], target4[:, 1:]
    return probs, target4
