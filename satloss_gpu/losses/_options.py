"""The settings of the topological losses: one frozen object, validated once.

:func:`~satloss_gpu.losses.functional.sat_loss`, :func:`~satloss_gpu.losses.functional.sat_matching`
and the Modules (:class:`~satloss_gpu.losses.SATLoss`, :class:`~satloss_gpu.losses.TopoLoss`) all
build a :class:`LossOptions` and pass it down; its defaults are the defaults of every one of them.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .._validation import (HOMOLOGY_DIMS, check_bool, check_choice, check_clamp, check_dims,
                           check_input_options, check_reduction)
from ..matching.sinkhorn import check_sinkhorn_options
from ..persistence import BACKEND_NAMES, CONSTRUCTIONS

__all__ = ["LossOptions", "LOSS_SOLVERS", "TARGET_TIEBREAKS", "check_keywords"]

#: Matching solvers of the losses: the exact ones of :func:`satloss_gpu.matching.match_batch`
#: and the approximate "sinkhorn".
LOSS_SOLVERS = ("auto", "emd", "cpu", "cuda", "sinkhorn")

#: How the target's critical pixels are chosen among its ties (see ``LossOptions``).
TARGET_TIEBREAKS = ("index", "prediction")


@dataclass(frozen=True)
class LossOptions:
    """Settings of SATLoss and TopoLoss (see :func:`satloss_gpu.losses.functional.sat_loss`).

    Attributes
    ----------
    dims : tuple of int or None
        Homology dimensions, a non-empty subset of (0, 1) for images and of (0, 1, 2) for
        volumes, sorted; None (the default) means all of them: (0, 1) for images,
        (0, 1, 2) for volumes (see :meth:`dims_for`).
    spatial : bool
        Weight matching costs by the clamped distance of the birth pixels.
    pad : bool
        One-pixel foreground frame around prediction and target.
    construction : {"T", "V"}
    spatial_clamp : (float, float)
        ``(low, high)`` bounds of the spatial factor.
    solver : {"auto", "emd", "cpu", "cuda", "sinkhorn"}
    reduction : {"mean", "sum", "none"}
    backend : {"auto", "cpu", "cuda", "gudhi"}
        Persistence backend.
    target_tiebreak : {"index", "prediction"}
        How the critical pixels of the target are chosen among equal values (every value
        of a binary target is a tie). "index": by pixel index, like the diagram of any
        image (the reference's choice, arbitrary in the image). "prediction": by the
        prediction's values, i.e. the target's filtration is ordered by (target,
        prediction); each target feature is then located where the prediction creates or
        destroys it (a loop's birth at the prediction's weakest pixel of the target's
        loop, a component's at the prediction's strongest pixel of it). The target's
        diagram values are the same; only its critical pixels (the spatial factor) change.
    solver_options : dict
        Keyword arguments of the "sinkhorn" solver; must be empty for the exact solvers.
    sigmoid : bool
        ``pred`` holds logits; ``torch.sigmoid`` is applied first.
    softmax : bool
        ``pred`` holds logits of C >= 2 classes; ``torch.softmax`` over the channels first.
        Exclusive with ``sigmoid``.
    num_classes : int or None
        ``target`` is an integer label map with values in ``[0, num_classes)``, one-hot
        encoded to ``num_classes`` channels (>= 2).
    include_background : bool
        False drops channel 0 of prediction and target (after the activation and the one-hot
        encoding), as MONAI's losses do.

    Raises
    ------
    TypeError, ValueError
        On construction, for any invalid setting (naming it).

    Examples
    --------
    >>> LossOptions(dims=[1, 0], solver="emd").dims
    (0, 1)
    >>> LossOptions().dims_for(3)
    (0, 1, 2)
    """

    dims: Any = None
    spatial: bool = True
    pad: bool = True
    construction: str = "T"
    spatial_clamp: Any = (0.05, 1.0)
    solver: str = "auto"
    reduction: str = "mean"
    backend: str = "auto"
    target_tiebreak: str = "index"
    solver_options: Optional[dict] = field(default=None, compare=False)
    # the input side: how pred and target are read
    sigmoid: bool = False
    softmax: bool = False
    num_classes: Optional[int] = None
    include_background: bool = True

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        if self.dims is not None:
            set_field(self, "dims", check_dims(self.dims, HOMOLOGY_DIMS[3]))
        set_field(self, "spatial", check_bool("spatial", self.spatial))
        set_field(self, "pad", check_bool("pad", self.pad))
        check_choice("construction", self.construction, CONSTRUCTIONS)
        set_field(self, "spatial_clamp", check_clamp(self.spatial_clamp))
        check_choice("solver", self.solver, LOSS_SOLVERS)
        check_reduction(self.reduction)
        check_choice("backend", self.backend, BACKEND_NAMES)
        check_choice("target_tiebreak", self.target_tiebreak, TARGET_TIEBREAKS)
        options = self.solver_options
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"`solver_options` must be a dict; got {type(options).__name__}")
        if options and self.solver != "sinkhorn":
            raise ValueError(f"`solver_options` apply to solver='sinkhorn' only; got {options!r}")
        set_field(self, "solver_options", check_sinkhorn_options(options or {}))
        inputs = check_input_options(self.sigmoid, self.softmax, self.num_classes,
                                     self.include_background)
        for name, value in zip(("sigmoid", "softmax", "num_classes", "include_background"), inputs):
            set_field(self, name, value)

    @classmethod
    def of(cls, owner: str, settings: dict) -> "LossOptions":
        """The options of ``settings``, an unknown name refused as a call of ``owner`` would.

        Raises ``TypeError`` "``owner``() got an unexpected keyword argument 'name'" (with the
        closest known name, if any) instead of naming ``LossOptions.__init__``.
        """
        check_keywords(owner, settings, cls.field_names())
        return cls(**settings)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the settings, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def dims_for(self, spatial_dims: int) -> tuple[int, ...]:
        """The homology dimensions of the loss of images (``spatial_dims=2``) or volumes (3).

        Raises ``ValueError`` for a dimension the input does not have (2 for images).
        """
        allowed = HOMOLOGY_DIMS[spatial_dims]
        if self.dims is None:
            return allowed
        if any(d not in allowed for d in self.dims):
            raise ValueError(f"`dims` must be a non-empty subset of {allowed} for "
                             f"{_INPUT_WORDS[spatial_dims]}; got {self.dims!r}")
        return self.dims

    @property
    def loss_channels(self) -> Optional[int]:
        """Channels the loss is computed on when the settings fix them (``num_classes``
        less the background when it is dropped), else None."""
        if self.num_classes is None:
            return None
        return self.num_classes - (0 if self.include_background else 1)

    def replace(self, **changes: Any) -> "LossOptions":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """The settings as ``name=value`` pairs, for ``repr``."""
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                         if f.name != "solver_options")


#: How the messages name the inputs of each number of spatial dimensions.
_INPUT_WORDS = {2: "images (B, C, H, W) (dimension 2 needs volumes (B, C, D, H, W))",
                3: "volumes (B, C, D, H, W)"}


def check_keywords(owner: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise ``TypeError`` as Python does for a call of ``owner`` with an unknown keyword."""
    known = list(known)
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}{hint}")
