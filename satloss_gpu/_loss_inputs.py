"""The input side of the losses: logits, softmax, label maps, masks, background channel.

:func:`prepare_inputs` turns what a segmentation network and a dataset give (logits or
probabilities, one-hot masks or integer label maps, an optional region mask) into what the
topological pipeline takes: probabilities ``p`` in [0, 1] and binary targets ``t`` of the
same shape (B, C, H, W), one binary problem per channel. Every step is an explicit torch
operation, so the loss of the prepared inputs and its gradient are those of the explicit
composition (``torch.sigmoid`` then the loss; ``F.one_hot`` of the label map then the loss;
``p * mask`` and ``t * mask`` then the loss).

The option checks (:func:`check_input_options`) run once, when a Module is built or when the
functional is called; the checks of the tensors run on every call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["InputOptions", "check_input_options", "prepare_inputs", "expected_channels"]


@dataclass(frozen=True)
class InputOptions:
    """How the loss reads its inputs (validated by :func:`check_input_options`).

    Attributes
    ----------
    sigmoid : bool
        ``pred`` holds logits; the loss applies ``torch.sigmoid`` channel by channel.
    softmax : bool
        ``pred`` holds logits; the loss applies ``torch.softmax`` over the channels.
    num_classes : int or None
        ``target`` is an integer label map with values in ``[0, num_classes)``; it is
        one-hot encoded to ``num_classes`` channels.
    include_background : bool
        Keep channel 0; False drops it from prediction and target after the activation
        and the one-hot encoding (MONAI's convention).
    """

    sigmoid: bool = False
    softmax: bool = False
    num_classes: Optional[int] = None
    include_background: bool = True


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


def check_input_options(sigmoid: Any = False, softmax: Any = False, num_classes: Any = None,
                        include_background: Any = True) -> InputOptions:
    """Validate the input options of a loss and return them as one :class:`InputOptions`.

    Raises
    ------
    TypeError
        A flag that is not a bool, ``num_classes`` not an int.
    ValueError
        ``sigmoid`` and ``softmax`` both true, ``num_classes`` < 2.
    """
    sigmoid = _check_flag("sigmoid", sigmoid)
    softmax = _check_flag("softmax", softmax)
    include_background = _check_flag("include_background", include_background)
    if sigmoid and softmax:
        raise ValueError("`sigmoid` and `softmax` are exclusive: pass at most one of them as True")
    if num_classes is not None:
        if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes,
                                                                        (int, np.integer)):
            raise TypeError(f"`num_classes` must be an int >= 2 or None; got "
                            f"{type(num_classes).__name__} {num_classes!r}")
        num_classes = int(num_classes)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2 (a label map of one class has no "
                             f"foreground); got {num_classes}")
    return InputOptions(sigmoid, softmax, num_classes, include_background)


def expected_channels(options: InputOptions) -> Optional[int]:
    """Channels the loss is computed on, when the options fix them (else None)."""
    if options.num_classes is None:
        return None
    return options.num_classes - (0 if options.include_background else 1)


# ----------------------------------------------------------------------------- per call

def _check_pred(pred: Any, options: InputOptions) -> torch.Tensor:
    """``pred`` as a float32/float64 (B, C, H, W) tensor (a view where possible)."""
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"`pred` must be a torch.Tensor; got {type(pred).__name__}")
    if not pred.dtype.is_floating_point:
        kind = "logits" if options.sigmoid or options.softmax else "probabilities"
        raise TypeError(f"`pred` must be a floating-point tensor of {kind}; got dtype {pred.dtype}")
    if pred.ndim not in (3, 4):
        raise ValueError(
            f"`pred` must have shape (B, C, H, W) or (B, H, W); got {tuple(pred.shape)}"
        )
    if any(int(s) == 0 for s in pred.shape):
        raise ValueError(f"`pred` must not be empty; got shape {tuple(pred.shape)}")
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()  # float16 / bfloat16 (autocast): computed in float32
    if pred.ndim == 3:
        pred = pred[:, None]
    channels = int(pred.shape[1])
    if options.softmax and channels < 2:
        raise ValueError(f"`softmax=True` needs at least 2 channels in `pred`; got shape "
                         f"{tuple(pred.shape)} (use sigmoid=True for one channel)")
    if options.num_classes is not None and channels != options.num_classes:
        raise ValueError(f"`pred` must have num_classes={options.num_classes} channels; got "
                         f"shape {tuple(pred.shape)}")
    if not options.include_background and channels < 2:
        raise ValueError(f"`include_background=False` needs at least 2 channels in `pred`; got "
                         f"shape {tuple(pred.shape)}")
    return pred


def _activate(pred: torch.Tensor, options: InputOptions) -> torch.Tensor:
    """Probabilities from logits (or ``pred`` itself); finite logits are required."""
    if not (options.sigmoid or options.softmax):
        return pred
    bad = ~torch.isfinite(pred.detach())
    if bool(bad.any()):
        n_nan = int(torch.isnan(pred.detach()).sum())
        raise ValueError(f"`pred` (logits) must be finite; found {n_nan} NaN and "
                         f"{int(bad.sum()) - n_nan} inf values")
    if options.sigmoid:
        return torch.sigmoid(pred)
    return torch.softmax(pred, dim=1)


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"`{name}` must be a tensor or an array; got {type(value).__name__}")


def _one_hot(labels: Any, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, num_classes, H, W) one-hot encoding of an integer label map."""
    labels = _as_tensor(labels, "target")
    batch, _, height, width = (int(s) for s in pred.shape)
    shapes = {(batch, height, width), (batch, 1, height, width)}
    if tuple(labels.shape) not in shapes:
        raise ValueError(
            f"`target` must be a label map of shape (B, H, W) or (B, 1, H, W) = "
            f"{(batch, height, width)} or {(batch, 1, height, width)} with num_classes="
            f"{num_classes}; got {tuple(labels.shape)}"
        )
    if labels.dtype.is_complex:
        raise TypeError(f"`target` must hold class indices; got dtype {labels.dtype}")
    labels = labels.detach().to(pred.device).reshape(batch, height, width)
    if labels.dtype.is_floating_point:
        if not bool(torch.isfinite(labels).all()) or bool((labels != labels.round()).any()):
            odd = labels[~torch.isfinite(labels) | (labels != labels.round())]
            raise ValueError(f"`target` must hold integer class indices in [0, {num_classes}); "
                             f"found {torch.unique(odd)[:5].tolist()}")
    labels = labels.long()
    outside = (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        raise ValueError(f"`target` must hold class indices in [0, {num_classes}); found "
                         f"{torch.unique(labels[outside])[:5].tolist()}")
    one_hot = torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2)
    return one_hot.to(pred.dtype)


def _binary_target(target: Any, pred: torch.Tensor, squeezed: bool) -> torch.Tensor:
    """The binary (or one-hot) ``target`` as (B, C, H, W), or an error with a hint."""
    target = _as_tensor(target, "target")
    expected = tuple(pred.shape[:1] + pred.shape[2:]) if squeezed else tuple(pred.shape)
    if tuple(target.shape) != expected:
        hint = ""
        label_shapes = {(int(pred.shape[0]), *map(int, pred.shape[2:])),
                        (int(pred.shape[0]), 1, *map(int, pred.shape[2:]))}
        if int(pred.shape[1]) > 1 and tuple(target.shape) in label_shapes:
            hint = f" (for an integer label map pass num_classes={int(pred.shape[1])})"
        raise ValueError(f"`target` must have the shape of `pred` {expected}; got "
                         f"{tuple(target.shape)}{hint}")
    if target.dtype.is_complex:
        raise TypeError(f"`target` must hold real numbers; got dtype {target.dtype}")
    target = target.detach().to(device=pred.device, dtype=pred.dtype)
    return target[:, None] if squeezed else target


def _check_mask(mask: Any, shape: tuple[int, ...], device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    """``mask`` as a 0/1 tensor broadcastable to (B, C, H, W) ``shape``."""
    mask = _as_tensor(mask, "mask")
    batch, channels, height, width = shape
    allowed = {(batch, height, width), (batch, 1, height, width),
               (batch, channels, height, width)}
    if tuple(mask.shape) not in allowed:
        options = " or ".join(str(s) for s in sorted(allowed, key=len))
        raise ValueError(f"`mask` must have shape {options}; got {tuple(mask.shape)}")
    if mask.dtype.is_complex:
        raise TypeError(f"`mask` must be bool or hold 0/1 values; got dtype {mask.dtype}")
    mask = mask.detach().to(device=device)
    if mask.dtype != torch.bool:
        odd = (mask != 0) & (mask != 1)
        if bool(odd.any()):
            raise ValueError(f"`mask` must be bool or hold 0/1 values; found "
                             f"{torch.unique(mask[odd])[:5].tolist()}")
    mask = mask.to(dtype)
    return mask[:, None] if mask.ndim == 3 else mask


def prepare_inputs(pred: Any, target: Any, options: InputOptions,
                   mask: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and binary targets of shape (B, C', H, W) from what the user gives.

    Parameters
    ----------
    pred : torch.Tensor, shape (B, C, H, W) or (B, H, W), float
        Probabilities, or logits with ``options.sigmoid`` / ``options.softmax``. Half
        precision (float16, bfloat16) is computed in float32.
    target : torch.Tensor or array_like
        Of the shape of ``pred`` (binary, or one-hot), or with ``options.num_classes`` an
        integer label map (B, H, W) or (B, 1, H, W).
    options : InputOptions
    mask : torch.Tensor or array_like, shape (B, H, W), (B, 1, H, W) or (B, C, H, W), optional
        Bool or 0/1: pixels where it is 0 are set to 0 (background) in every channel of the
        probabilities and of the target, after the activation and the one-hot encoding.

    Returns
    -------
    probs : torch.Tensor, shape (B, C', H, W), float32 or float64
        Differentiable in ``pred``. ``C' = C``, or ``C - 1`` without the background.
    target : torch.Tensor, shape (B, C', H, W)
        In the dtype and on the device of ``probs``; values not yet checked to be binary.
    """
    squeezed = isinstance(pred, torch.Tensor) and pred.ndim == 3
    pred4 = _check_pred(pred, options)
    probs = _activate(pred4, options)
    if options.num_classes is not None:
        target4 = _one_hot(target, probs, options.num_classes)
    else:
        target4 = _binary_target(target, probs, squeezed)
    if mask is not None:
        keep = _check_mask(mask, tuple(int(s) for s in probs.shape), probs.device, probs.dtype)
        probs = probs * keep
        target4 = target4 * keep
    if not options.include_background:
        probs, target4 = probs[:, 1:], target4[:, 1:]
    return probs, target4
