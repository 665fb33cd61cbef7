"""U-Nets for binary segmentation of thin structures, with a sigmoid head.

``UNet`` follows the reference training (64, 128, 256, 512, 1024 channels); ``UNet_small``
is the same architecture with 16 .. 128 channels, for CPU runs and tests. Both return
probabilities in [0, 1] of shape (B, 1, H, W); H and W must be multiples of
``model.divisor`` (use :func:`pad_to_multiple` for other sizes). :func:`build_model` also
builds any model named ``package.module:ClassName``; :func:`model_logits` gets the logits of
either kind.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "UNet_small", "build_model", "model_logits", "size_divisor", "MODEL_NAMES",
           "pad_to_multiple"]

MODEL_NAMES = ("UNet", "UNet_small")


class _DoubleConv(nn.Sequential):
    """(3x3 convolution, batch norm, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with a sigmoid head.

    Parameters
    ----------
    in_channels : int, default 3
        Channels of the input images.
    out_channels : int, default 1
        Output maps (1 for binary segmentation).
    widths : sequence of int, default (64, 128, 256, 512, 1024)
        Channels per level, from the full-resolution level to the bottleneck. The input
        size must be a multiple of ``2 ** (len(widths) - 1)``.

    Shape
    -----
    - Input: (B, in_channels, H, W), float.
    - Output: (B, out_channels, H, W), probabilities in [0, 1].

    Examples
    --------
    >>> import torch
    >>> net = UNet(widths=(8, 16))
    >>> net(torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"`widths` must hold at least 2 positive ints; got {widths}")
        self.widths = widths
        self.divisor = 2 ** (len(widths) - 1)
        self.down = nn.ModuleList([_DoubleConv(in_channels, widths[0])])
        self.down.extend(_DoubleConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        pairs = list(zip(widths[::-1][:-1], widths[::-1][1:]))
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in pairs)
        self.merge = nn.ModuleList(_DoubleConv(2 * b, b) for _, b in pairs)
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, (B, out_channels, H, W)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, skips[-2::-1]):
            x = merge(torch.cat([skip, up(x)], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """Probabilities, or the pre-sigmoid scores when ``logits`` is true."""
        scores = self.logits(x)
        return scores if logits else torch.sigmoid(scores)


def UNet_small(in_channels: int = 3, out_channels: int = 1) -> UNet:  # noqa: N802 (reference name)
    """The U-Net with 16, 32, 64, 128 channels: a fast model for CPU runs and tests."""
    return UNet(in_channels, out_channels, widths=(16, 32, 64, 128))


def build_model(name: str, in_channels: int = 3,
                kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Build a model by its command-line name: a built-in one or ``package.module:ClassName``.

    Parameters
    ----------
    name : str
        ``"UNet"``, ``"UNet_small"``, or ``package.module:ClassName`` (any ``nn.Module``
        class, or function returning one; see :mod:`satloss_gpu.training.model_spec`).
    in_channels : int, default 3
        Input channels of the built-in models.
    kwargs : dict, optional
        Keyword arguments of the model (for the built-in ones: of :class:`UNet`, or
        ``in_channels`` and ``out_channels`` of :func:`UNet_small`).

    Raises
    ------
    ValueError
        An unknown name, a model that cannot be imported or built with ``kwargs``.
    """
    from .model_spec import is_model_spec, model_from_spec

    kwargs = dict(kwargs or {})
    if is_model_spec(name):
        return model_from_spec(name, kwargs)
    if name not in MODEL_NAMES:
        options = ", ".join(repr(n) for n in MODEL_NAMES)
        raise ValueError(f"`model` must be one of {options} or 'package.module:ClassName'; "
                         f"got {name!r}")
    kwargs.setdefault("in_channels", in_channels)
    try:
        return UNet(**kwargs) if name == "UNet" else UNet_small(**kwargs)
    except TypeError as exc:
        raise ValueError(f"`model_kwargs` {kwargs!r} do not fit {name}: {exc}") from exc


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, K, H, W) of ``model`` (possibly wrapped in DDP) for images ``x``.

    The built-in U-Nets are asked for logits (``logits=True``); any other model is called as
    ``model(x)`` and must return logits of the input's size; a dict output (torchvision's
    segmentation models) gives its ``"out"`` entry.

    Raises
    ------
    ValueError
        An output that is not a (B, K, H, W) tensor of the input's height and width.
    """
    net = model.module if hasattr(model, "module") else model
    out = model(x, logits=True) if isinstance(net, UNet) else model(x)
    if isinstance(out, dict) and "out" in out:
        out = out["out"]
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or \
            tuple(out.shape[-2:]) != tuple(x.shape[-2:]):
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"`model` must return logits (B, K, H, W) of the input's size "
                         f"{tuple(x.shape[-2:])}; got {found}")
    return out


def size_divisor(model: nn.Module) -> int:
    """Inputs are padded to multiples of this: ``model.divisor``, or 32 for models without."""
    net = model.module if hasattr(model, "module") else model
    return int(getattr(net, "divisor", 32))


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) at the bottom and right to multiples of ``divisor``.

    Returns
    -------
    padded : (B, C, H', W') tensor
    size : tuple of int
        The original (H, W), to crop the output back with ``out[..., :H, :W]``.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    pad_h = (-height) % divisor
    pad_w = (-width) % divisor
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)
