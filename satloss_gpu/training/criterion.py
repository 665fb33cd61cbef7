"""The training criterion: ``BCE + tloss_w * term`` (or the soft Dice loss) of a model's logits.

The second term (SATLoss, TopoLoss or soft clDice) reads the sigmoid of the model's one logit
map, for images (B, 1, H, W) and volumes (B, 1, D, H, W) alike.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .config import LOSSES

__all__ = ["TERM_LOSSES", "build_criterion", "term_kwargs"]

# --------------------------------------------------------------------------- losses
#: Losses with a second term, ``BCE + tloss_w * term``.
TERM_LOSSES = ("bce+sat", "bce+topo", "bce+cldice")

#: Options of the second term that the trainer fixes, with the reason: the term reads the
#: sigmoid of the model's one logit map (binary labels) and is averaged over the batch, as
#: BCE is. ``tloss_kwargs`` may repeat the fixed value, not change it.
_FIXED_TERM_OPTIONS: Dict[str, Tuple[Any, str]] = {
    "softmax": (False, "the model returns one logit map for binary labels (softmax needs "
                       ">= 2 classes)"),
    "num_classes": (None, "the labels are binary masks (B, 1, H, W), not label maps"),
    "include_background": (True, "the one channel is the foreground"),
    "reduction": ("mean", "the term is averaged over the batch, as BCE is"),
}


class _Criterion(torch.nn.Module):
    """``BCE + tloss_w * extra`` (or the soft Dice loss alone) of logits (B, 1, H, W).

    The second term ``extra`` receives the probabilities ``sigmoid(logits)``: it equals the
    term built with ``sigmoid=True`` applied to the logits, whichever ``sigmoid`` the user
    passed (see :func:`term_kwargs`).
    """

    def __init__(self, loss: str, tloss_w: float, tloss_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.loss = loss
        self.tloss_w = float(tloss_w)
        self.extra = _second_term(loss, term_kwargs(loss, tloss_kwargs))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        logits = logits.float()
        probs = torch.sigmoid(logits)
        if self.loss == "dice":
            from ..losses.cldice import soft_dice_loss

            value = soft_dice_loss(probs, target)
            return value, {"dice_loss": float(value.detach())}
        bce = F.binary_cross_entropy_with_logits(logits, target)
        parts = {"bce": float(bce.detach())}
        if self.extra is None or self.tloss_w == 0.0:
            return bce, parts
        extra = self.extra(probs, target)
        parts["extra"] = float(extra.detach())
        return bce + self.tloss_w * extra, parts


def term_kwargs(loss: str, tloss_kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The keyword arguments of ``loss``'s second term, for the trainer's probabilities.

    ``sigmoid`` (a bool) is dropped: the trainer applies the sigmoid to the model's logits
    before the term, so ``sigmoid=True`` (the network outputs logits) and ``sigmoid=False``
    (the term reads probabilities) both describe what happens. The options of
    :data:`_FIXED_TERM_OPTIONS` may only repeat their fixed value.

    Raises
    ------
    ValueError
        Keyword arguments for a loss without a second term, or a fixed option changed; the
        message names ``--tloss_kwargs``.
    """
    if not isinstance(tloss_kwargs, (dict, type(None))):
        raise ValueError(f"--tloss_kwargs must be a JSON object; got {tloss_kwargs!r}")
    kwargs = dict(tloss_kwargs or {})
    if kwargs and loss not in TERM_LOSSES:
        raise ValueError(f"--tloss_kwargs {json.dumps(kwargs)} apply to a second loss term; "
                         f"--loss {loss} has none (use one of {', '.join(TERM_LOSSES)})")
    sigmoid = kwargs.pop("sigmoid", True)
    if not isinstance(sigmoid, bool):
        raise ValueError(f"--tloss_kwargs: `sigmoid` must be true or false; got {sigmoid!r}")
    for key, (fixed, reason) in _FIXED_TERM_OPTIONS.items():
        if key in kwargs and kwargs[key] != fixed:
            raise ValueError(f"--tloss_kwargs: `{key}` is fixed to {json.dumps(fixed)} in "
                             f"training ({reason}); got {json.dumps(kwargs[key])}")
    return kwargs


def _second_term(loss: str, kwargs: Dict[str, Any]) -> Optional[torch.nn.Module]:
    """The module of ``loss``'s second term (None for ``bce`` and ``dice``)."""
    if loss not in TERM_LOSSES:
        return None
    from .. import losses
    from ..losses import cldice

    name = {"bce+sat": "SATLoss", "bce+topo": "TopoLoss", "bce+cldice": "SoftClDiceLoss"}[loss]
    module = cldice if loss == "bce+cldice" else losses
    try:
        return getattr(module, name)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--tloss_kwargs {json.dumps(kwargs)} do not fit {name}: {exc}") from None


def build_criterion(loss: str, tloss_w: float,
                    tloss_kwargs: Optional[Dict[str, Any]] = None) -> _Criterion:
    """The training criterion for a ``--loss`` name (see :data:`LOSSES`); ``tloss_kwargs``
    are passed to the second term's module (``{"pad": false}``: SATLoss without its frame;
    see :func:`term_kwargs` for the options the trainer fixes).

    Raises
    ------
    ValueError
        An unknown ``loss``, ``tloss_w`` < 0, or ``tloss_kwargs`` the term refuses.
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {', '.join(LOSSES)}; got {loss!r}")
    if not float(tloss_w) >= 0.0:
        raise ValueError(f"`tloss_w` must be >= 0; got {tloss_w}")
    return _Criterion(loss, tloss_w, tloss_kwargs)
