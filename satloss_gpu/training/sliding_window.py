"""Sliding-window inference: predict large images or volumes tile by tile and blend the tiles.

A network applied to a whole 4096 x 4096 image needs all of its activations at once. Here
the image is cut into overlapping windows of the training size, the windows go through the
network in small batches, and each output pixel is the weighted mean of the outputs of the
windows that cover it, with weights that fall off towards a window's border (where a
convolutional network sees the least context). Only ``batch_size`` windows are in the network
at any time; the output image is accumulated on the device of the input.

Where one window covers the whole image, the result is the network's output on the whole
image; for a network whose output at a pixel depends on that pixel alone, it is the whole
image's output for any windows, overlap and weights. Volumes (B, C, D, H, W) are cut into
boxes the same way along their three axes.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence, Tuple, Union

import torch

__all__ = ["sliding_window_inference", "window_starts", "number_of_windows", "blend_weights",
           "BLEND_MODES"]

BLEND_MODES = ("gaussian", "constant")


def _sides(value: Union[int, Sequence[int]], name: str, n: int = 2) -> Tuple[int, ...]:
    """``n`` sides (rows, cols; or depth, rows, cols for ``n = 3``) from an int or ``n``
    ints, each >= 1."""
    what = "a pair" if n == 2 else "a triple"
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int or {what} of ints; got {value!r}")
    if isinstance(value, int):
        sides = (value,) * n
    else:
        try:
            sides = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must be an int or {what} of ints; got {value!r}")
        if len(sides) != n:
            raise ValueError(f"`{name}` must be an int or {what} of ints; got {value!r}")
    if min(sides) < 1:
        raise ValueError(f"`{name}` must be >= 1; got {value!r}")
    return sides


def _pair(value: Union[int, Sequence[int]], name: str) -> Tuple[int, ...]:
    """(rows, cols) from an int or a pair of ints, each >= 1."""
    return _sides(value, name, 2)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """First rows (or columns) of the windows that cover ``size`` pixels.

    The windows are ``min(window, size)`` long, start ``window * (1 - overlap)`` apart
    (rounded, at least 1), and the last one ends at the last pixel.

    Examples
    --------
    >>> window_starts(10, 4, 0.5)
    [0, 2, 4, 6]
    >>> window_starts(3, 8, 0.25)
    [0]
    """
    window = min(window, size)
    stride = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window, stride))
    starts.append(size - window)
    return starts


def blend_weights(shape: Tuple[int, ...], mode: str = "gaussian",
                  device: Union[str, torch.device, None] = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h, w) (or (d, h, w)) weights of a window's pixels, 1 at the centre.

    "gaussian": a product of Gaussians with standard deviation 1/8 of the window side,
    floored at 1e-3 so that every pixel keeps a positive weight; "constant": all ones.
    """
    if mode == "constant":
        return torch.ones(shape, device=device, dtype=dtype)
    axes = []
    for length in shape:
        position = torch.arange(length, device=device, dtype=torch.float64)
        sigma = max(length / 8.0, 1e-6)
        axes.append(torch.exp(-0.5 * ((position - (length - 1) / 2.0) / sigma) ** 2))
    weights = axes[0]
    for axis in axes[1:]:
        weights = weights[..., None] * axis
    return (weights / weights.max()).clamp_min(1e-3).to(dtype)


def _check_arguments(predict: Callable, image: torch.Tensor, overlap: float, blend: str,
                     batch_size: int) -> None:
    if not callable(predict):
        raise TypeError(f"`predict` must be callable (a model or a function of a batch of "
                        f"windows); got {type(predict).__name__}")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"`image` must be a torch.Tensor; got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"`image` must be a real floating-point tensor (a network's input); "
                        f"got {image.dtype}")
    if image.ndim not in (4, 5) or any(int(s) == 0 for s in image.shape):
        raise ValueError(f"`image` must have shape (B, C, H, W) or (B, C, D, H, W) with no "
                         f"empty dimension; got {tuple(image.shape)}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or \
            not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"`overlap` must be a number in [0, 1); got {overlap!r}")
    if blend not in BLEND_MODES:
        raise ValueError(f"`blend` must be one of {', '.join(map(repr, BLEND_MODES))}; "
                         f"got {blend!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}")


def sliding_window_inference(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: Union[int, Sequence[int]],
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
) -> torch.Tensor:
    """Apply ``predict`` to overlapping windows of ``image`` and blend the outputs.

    Parameters
    ----------
    predict : callable
        Maps a batch of windows (N, C, h, w) (volumes: (N, C, d, h, w)) to outputs
        (N, K, h, w) ((N, K, d, h, w)) of the same spatial size (probabilities or logits),
        e.g. a model in eval mode.
    image : torch.Tensor, shape (B, C, H, W) or (B, C, D, H, W)
        The images or volumes, on the device ``predict`` runs on.
    window : int or (int, int) or (int, int, int)
        Window side (rows, cols; volumes: depth, rows, cols); clipped to the input's size.
    overlap : float, default 0.25
        Fraction of a window shared with the next one along each axis, in [0, 1).
    blend : {"gaussian", "constant"}, default "gaussian"
        Weights of a window's pixels in the mean (see :func:`blend_weights`).
    batch_size : int, default 4
        Windows per call of ``predict``.

    Returns
    -------
    torch.Tensor, shape (B, K, H, W) or (B, K, D, H, W), float32 (float64 if ``predict``
    returns float64)
        On the device of ``image``.

    Examples
    --------
    >>> import torch
    >>> image = torch.rand(1, 3, 20, 30)
    >>> out = sliding_window_inference(lambda x: x.mean(1, keepdim=True), image, 8)
    >>> out.shape, torch.allclose(out, image.mean(1, keepdim=True))
    (torch.Size([1, 1, 20, 30]), True)
    >>> volume = torch.rand(1, 1, 9, 12, 10)
    >>> torch.allclose(sliding_window_inference(lambda x: 2 * x, volume, 4), 2 * volume)
    True
    """
    _check_arguments(predict, image, overlap, blend, batch_size)
    size = tuple(int(n) for n in image.shape[2:])
    sides = _sides(window, "window", len(size))
    tile = tuple(min(w, n) for w, n in zip(sides, size))
    starts = [window_starts(n, w, float(overlap)) for n, w in zip(size, sides)]
    windows = [(b,) + corner for b in range(int(image.shape[0]))
               for corner in itertools.product(*starts)]
    total = weight_sum = weights = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        boxes = [(b, _box(corner, tile)) for b, *corner in chunk]
        tiles = torch.stack([image[(b, slice(None)) + box] for b, box in boxes])
        out = predict(tiles)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise TypeError(f"`predict` must return a floating-point torch.Tensor; got "
                            f"{getattr(out, 'dtype', type(out).__name__)}")
        if out.ndim != image.ndim or tuple(out.shape[2:]) != tile:
            shape = "(N, K, h, w)" if len(size) == 2 else "(N, K, d, h, w)"
            raise ValueError(f"`predict` must return {shape} for windows {tuple(tiles.shape)}; "
                             f"got {tuple(out.shape)}")
        if total is None:
            dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
            total = image.new_zeros((int(image.shape[0]), int(out.shape[1])) + size, dtype=dtype)
            weight_sum = image.new_zeros((int(image.shape[0]), 1) + size, dtype=dtype)
            weights = blend_weights(tile, blend, image.device, dtype)
        out = out.to(total.dtype)
        for (b, box), tile_out in zip(boxes, out):
            total[(b, slice(None)) + box] += weights * tile_out
            weight_sum[(b, slice(None)) + box] += weights
    return total / weight_sum


def _box(corner: Sequence[int], tile: Tuple[int, ...]) -> Tuple[slice, ...]:
    """The slices of the window starting at ``corner`` with sides ``tile``."""
    return tuple(slice(c, c + t) for c, t in zip(corner, tile))


def number_of_windows(shape: Tuple[int, ...], window: Union[int, Sequence[int]],
                      overlap: float = 0.25) -> int:
    """Windows per image of ``shape`` (H, W), or per volume of ``shape`` (D, H, W)."""
    sides = _sides(window, "window", len(shape))
    count = 1
    for n, w in zip(shape, sides):
        count *= len(window_starts(n, w, overlap))
    return count
