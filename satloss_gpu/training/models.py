"""U-Nets for binary segmentation of thin structures, with a sigmoid head.

``UNet`` follows the reference training (64, 128, 256, 512, 1024 channels); ``UNet_small``
is the same architecture with 16 .. 128 channels, for CPU runs and tests. Both return
probabilities in [0, 1] of shape (B, 1, H, W); H and W must be multiples of
``model.divisor`` (use :func:`pad_to_multiple` for other sizes).

``UNet3D`` is the same network for volumes, with 3D convolutions, pooling and transposed
convolutions: (B, C, D, H, W) in, (B, 1, D, H, W) out, with D, H and W multiples of
``model.divisor``. Its default widths are (32, 64, 128, 256) and its default normalisation is
instance norm (3D batches are small); ``UNet3D_small`` (8 .. 64 channels) is for CPU runs and
tests. The 2D names are :data:`MODEL_NAMES`, the 3D ones :data:`MODEL_NAMES_3D`; every U-Net
says its dimension in ``model.spatial_dims`` (:func:`model_spatial_dims`).

:func:`build_model` also builds any model named ``package.module:ClassName``;
:func:`model_logits` gets the logits of either kind.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "UNet_small", "UNet3D", "UNet3D_small", "build_model", "model_logits",
           "size_divisor", "model_spatial_dims", "MODEL_NAMES", "MODEL_NAMES_3D", "NORMS",
           "pad_to_multiple"]

#: The built-in models for images (B, C, H, W).
MODEL_NAMES = ("UNet", "UNet_small")
#: The built-in models for volumes (B, C, D, H, W).
MODEL_NAMES_3D = ("UNet3D", "UNet3D_small")
#: The normalisations of the U-Nets' convolution blocks.
NORMS = ("batch", "instance")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_UPCONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
_NORM = {("batch", 2): nn.BatchNorm2d, ("batch", 3): nn.BatchNorm3d,
         ("instance", 2): nn.InstanceNorm2d, ("instance", 3): nn.InstanceNorm3d}


def _norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """Batch norm, or instance norm with learnt affine parameters."""
    if norm == "instance":
        return _NORM[norm, spatial_dims](channels, affine=True)
    return _NORM[norm, spatial_dims](channels)


class _DoubleConv(nn.Sequential):
    """(3x3 or 3x3x3 convolution, normalisation, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2,
                 norm: str = "batch") -> None:
        conv = _CONV[spatial_dims]
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1, bias=False),
            _norm_layer(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=False),
            _norm_layer(norm, spatial_dims, out_channels),
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
    norm : {"batch", "instance"}, default "batch"
        Normalisation after every convolution (instance norm with affine parameters).

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

    #: Spatial dimensions of the inputs: 2 here, 3 for :class:`UNet3D`.
    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str = "batch",
    ) -> None:
        from .._validation import check_choice

        super().__init__()
        check_choice("norm", norm, NORMS)
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"`widths` must hold at least 2 positive ints; got {widths}")
        dims = self.spatial_dims
        self.widths = widths
        self.norm = norm
        self.divisor = 2 ** (len(widths) - 1)
        self.down = nn.ModuleList([_DoubleConv(in_channels, widths[0], dims, norm)])
        self.down.extend(_DoubleConv(a, b, dims, norm) for a, b in zip(widths[:-1], widths[1:]))
        pairs = list(zip(widths[::-1][:-1], widths[::-1][1:]))
        self.up = nn.ModuleList(_UPCONV[dims](a, b, 2, stride=2) for a, b in pairs)
        self.merge = nn.ModuleList(_DoubleConv(2 * b, b, dims, norm) for _, b in pairs)
        self.head = _CONV[dims](widths[0], out_channels, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, (B, out_channels, H, W) (or (B, out_channels, D, H, W))."""
        pool = _POOL[self.spatial_dims]
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else pool(x, 2))
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


class UNet3D(UNet):
    """U-Net for volumes with a sigmoid head: :class:`UNet` with 3D layers.

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input volumes.
    out_channels : int, default 1
        Output maps (1 for binary segmentation).
    widths : sequence of int, default (32, 64, 128, 256)
        Channels per level, from the full-resolution level to the bottleneck. D, H and W
        must be multiples of ``2 ** (len(widths) - 1)``.
    norm : {"instance", "batch"}, default "instance"
        Normalisation after every convolution.

    Shape
    -----
    - Input: (B, in_channels, D, H, W), float.
    - Output: (B, out_channels, D, H, W), probabilities in [0, 1].

    Examples
    --------
    >>> import torch
    >>> net = UNet3D(widths=(4, 8))
    >>> net(torch.zeros(1, 1, 4, 6, 8)).shape
    torch.Size([1, 1, 4, 6, 8])
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        norm: str = "instance",
    ) -> None:
        super().__init__(in_channels, out_channels, widths, norm)


def UNet3D_small(in_channels: int = 1, out_channels: int = 1,  # noqa: N802 (like UNet_small)
                 norm: str = "instance") -> UNet3D:
    """The 3D U-Net with 8, 16, 32, 64 channels: a fast model for CPU runs and tests."""
    return UNet3D(in_channels, out_channels, widths=(8, 16, 32, 64), norm=norm)


_BUILDERS = {"UNet": UNet, "UNet_small": UNet_small, "UNet3D": UNet3D,
             "UNet3D_small": UNet3D_small}


def build_model(name: str, in_channels: int = 3,
                kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Build a model by its command-line name: a built-in one or ``package.module:ClassName``.

    Parameters
    ----------
    name : str
        ``"UNet"``, ``"UNet_small"`` (images), ``"UNet3D"``, ``"UNet3D_small"`` (volumes), or
        ``package.module:ClassName`` (any ``nn.Module`` class, or function returning one;
        see :mod:`satloss_gpu.training.model_spec`).
    in_channels : int, default 3
        Input channels of the built-in models (a volume run passes its own, usually 1).
    kwargs : dict, optional
        Keyword arguments of the model (for the built-in ones: of :class:`UNet` or
        :class:`UNet3D`, or those of :func:`UNet_small` and :func:`UNet3D_small`).

    Raises
    ------
    ValueError
        An unknown name, a model that cannot be imported or built with ``kwargs``.
    """
    from .model_spec import is_model_spec, model_from_spec

    kwargs = dict(kwargs or {})
    if is_model_spec(name):
        return model_from_spec(name, kwargs)
    if name not in _BUILDERS:
        options = ", ".join(repr(n) for n in MODEL_NAMES + MODEL_NAMES_3D)
        raise ValueError(f"`model` must be one of {options} or 'package.module:ClassName'; "
                         f"got {name!r}")
    kwargs.setdefault("in_channels", in_channels)
    try:
        return _BUILDERS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"`model_kwargs` {kwargs!r} do not fit {name}: {exc}") from exc


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, K, H, W) of ``model`` (possibly wrapped in DDP) for images ``x``.

    The built-in U-Nets are asked for logits (``logits=True``); any other model is called as
    ``model(x)`` and must return logits of the input's size; a dict output (torchvision's
    segmentation models) gives its ``"out"`` entry. Volumes ``x`` (B, C, D, H, W) need logits
    (B, K, D, H, W).

    Raises
    ------
    ValueError
        An output that is not a (B, K, H, W) (volumes: (B, K, D, H, W)) tensor of the
        input's spatial size.
    """
    net = model.module if hasattr(model, "module") else model
    out = model(x, logits=True) if isinstance(net, UNet) else model(x)
    if isinstance(out, dict) and "out" in out:
        out = out["out"]
    volume = x.ndim == 5
    spatial = tuple(x.shape[-3:]) if volume else tuple(x.shape[-2:])
    if not isinstance(out, torch.Tensor) or out.ndim != (5 if volume else 4) or \
            tuple(out.shape[-len(spatial):]) != spatial:
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        shape = "(B, K, D, H, W)" if volume else "(B, K, H, W)"
        raise ValueError(f"`model` must return logits {shape} of the input's size "
                         f"{spatial}; got {found}")
    return out


def model_spatial_dims(model: nn.Module) -> Optional[int]:
    """``model.spatial_dims`` (2 or 3 for the built-in U-Nets), or None for models without."""
    net = model.module if hasattr(model, "module") else model
    dims = getattr(net, "spatial_dims", None)
    return int(dims) if isinstance(dims, int) else None


def size_divisor(model: nn.Module) -> int:
    """Inputs are padded to multiples of this: ``model.divisor``, or 32 for models without."""
    net = model.module if hasattr(model, "module") else model
    return int(getattr(net, "divisor", 32))


def pad_to_multiple(x: torch.Tensor, divisor: int,
                    spatial_dims: Optional[int] = None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Reflect-pad the spatial axes at their high ends to multiples of ``divisor``.

    Parameters
    ----------
    x : (B, C, H, W) or (B, C, D, H, W) tensor
    divisor : int
    spatial_dims : {2, 3}, optional
        The number of trailing axes to pad; by default 3 for a 5-D ``x``, else 2 (the last
        two axes, as for images).

    Returns
    -------
    padded : (B, C, H', W') or (B, C, D', H', W') tensor
        Reflected where every pad is shorter than its axis, else edge-replicated.
    size : tuple of int
        The original (H, W) or (D, H, W), to crop the output back with ``out[..., :H, :W]``
        (``out[..., :D, :H, :W]``).

    Examples
    --------
    >>> import torch
    >>> padded, size = pad_to_multiple(torch.zeros(1, 1, 5, 6, 7), 4)
    >>> tuple(padded.shape), size
    ((1, 1, 8, 8, 8), (5, 6, 7))
    """
    if spatial_dims is None:
        spatial_dims = 3 if x.ndim == 5 else 2
    if spatial_dims not in (2, 3) or x.ndim < spatial_dims + 1:
        raise ValueError(f"`spatial_dims` must be 2 or 3 and at most x.ndim - 1; got "
                         f"{spatial_dims!r} for x of shape {tuple(x.shape)}")
    size = tuple(int(n) for n in x.shape[-spatial_dims:])
    pads = [(-n) % divisor for n in size]
    if any(pads):
        mode = "reflect" if all(p < n for p, n in zip(pads, size)) else "replicate"
        flat = [amount for p in reversed(pads) for amount in (0, p)]
        lead = tuple(x.shape[:-spatial_dims])
        padded = F.pad(x.reshape(-1, 1, *size), flat, mode=mode)
        x = padded.reshape(*lead, *padded.shape[2:])
    return x, size
