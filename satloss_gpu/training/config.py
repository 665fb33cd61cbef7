"""The settings of a training run: one :class:`Config` dataclass, its defaults and presets.

:data:`REFERENCE` holds the reference implementation's recipe (the defaults of ``run.py``),
:data:`QUICK_START` those of ``satloss train``, which runs in a few minutes on 2 CPU cores,
and :data:`QUICK_START_3D` those of ``satloss train --spatial_dims 3`` (volumes).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, get_args, get_origin, get_type_hints

__all__ = ["check_device_name", "check_setting", "Config", "LOSSES", "REFERENCE", "QUICK_START",
           "QUICK_START_3D", "read_config_file"]

#: Training losses: BCE alone, BCE + a topological or clDice term, or the soft Dice loss.
LOSSES = ("bce", "bce+sat", "bce+topo", "bce+cldice", "dice")


def check_device_name(device: str) -> str:
    """``device`` if it is auto, cpu, cuda, cuda:K or mps; else a ValueError naming it."""
    text = str(device).strip().lower()
    if text in ("auto", "cpu", "cuda", "mps"):
        return text
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    raise ValueError(f"`device` must be auto, cpu, cuda, cuda:K or mps; got {device!r}")


@dataclass
class Config:
    """Every setting of a run; the command line maps one flag to each field.

    The defaults are the reference's (UNet, 30 epochs, batch 16, ...). The quick start of
    ``satloss train`` overrides a few (see :mod:`satloss_gpu.training.cli`).

    ``tloss_start`` and ``tloss_ramp`` schedule the second loss term (see
    :meth:`tloss_weight`): BCE alone for ``tloss_start`` epochs (None: half of ``epoch``), then a linear ramp of
    ``tloss_ramp`` epochs up to ``tloss_w``; both 0 (the reference) keep ``tloss_w`` from
    the first epoch. ``overwrite`` allows a new run in a folder that holds one; ``resume``
    continues the run of the folder where it stopped (every arm of a baseline run).
    ``baseline`` (train mode, a loss with a second term and 0 < :meth:`warmup` < ``epoch``) also trains
the BCE control from the end of the warm-up
(:func:`satloss_gpu.training.recipe.train_with_baseline`).
    ``val_fraction`` of the training images are held out when there is no ``val`` folder.
    In test mode ``model=None`` takes the checkpoint's model; a name must match it.
    ``spatial_dims`` 3 trains on volumes: ``crop`` is then the side of the random cubic
    training patches, and validation and test volumes are predicted whole by sliding windows
    of ``tile`` (default: ``crop``) voxels a side.
    """

    dataset: str = "ROADS"
    dataroot: str = "./data"
    exp: str = "default"
    expmode: str = "train"
    model: Optional[str] = "UNet"
    epoch: int = 30
    start_epoch: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    lr_decay_epoch: int = 10
    lr_decay_rate: float = 0.1
    wd: float = 1e-3
    tloss_w: float = 1e-2
    test_model: str = "best_dice"
    checkpoint: Optional[str] = None
    seed: int = 0
    num_workers: int = 0
    gpu_id: Optional[int] = None
    loss: str = "bce+sat"
    device: str = "auto"
    amp: bool = False
    crop: Optional[int] = None
    augment: bool = False
    exp_root: str = "./exp"
    save_every: int = 0
    split: str = "test"
    threshold: float = 0.5
    make_data: bool = False
    figures: bool = True
    progress: bool = True
    max_figures: int = 4
    extra: Dict[str, Any] = field(default_factory=dict)
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    tensorboard: bool = False
    tile: Optional[int] = None
    tile_overlap: float = 0.25
    tloss_start: Optional[int] = 0
    tloss_ramp: int = 0
    overwrite: bool = False
    resume: bool = False
    baseline: bool = False
    tloss_kwargs: Dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.125
    spatial_dims: int = 2

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if isinstance(self.spatial_dims, bool) or self.spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 (images) or 3 (volumes); got "
                             f"{self.spatial_dims!r}")
        if not float(self.tloss_w) >= 0.0:
            raise ValueError(f"`tloss_w` must be >= 0; got {self.tloss_w}")
        if (self.tloss_start is not None and int(self.tloss_start) < 0) or int(self.tloss_ramp) < 0:
            raise ValueError(f"`tloss_start` and `tloss_ramp` must be >= 0; got "
                             f"{self.tloss_start} and {self.tloss_ramp}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1); got {self.val_fraction}")

    def warmup(self) -> int:
        """Epochs before the second loss term starts: ``tloss_start``, or half of ``epoch``
        (rounded down) when ``tloss_start`` is None (the quick start's default)."""
        return int(self.epoch) // 2 if self.tloss_start is None else int(self.tloss_start)

    def tloss_weight(self, epoch: int) -> float:
        """The weight of the second loss term in ``epoch`` (1-based) under the schedule.

        0 before epoch ``warmup() + 1``; then ``tloss_w`` times a linear ramp that reaches
        1 after ``tloss_ramp`` epochs (``(epoch - tloss_start) / tloss_ramp``, capped at 1);
        ``tloss_start = tloss_ramp = 0`` is the reference's constant weight.
        """
        done = int(epoch) - self.warmup()
        if done < 1:
            return 0.0
        if int(self.tloss_ramp) == 0:
            return float(self.tloss_w)
        return float(self.tloss_w) * min(1.0, done / int(self.tloss_ramp))

    @property
    def exp_dir(self) -> Path:
        return Path(self.exp_root) / self.exp

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "Config":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


#: JSON types of the :class:`Config` fields, as a message says them.
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               dict: "a JSON object"}
def _is_device_name(value: str) -> bool:
    try:
        check_device_name(value)
    except ValueError:
        return False
    return True


#: Rules of the settings whose flag does not check them (a setting whose flag has a type or
#: choices follows them too).
_RULES = {"max_figures": (lambda v: v >= 0, "an integer >= 0"),
          "device": (_is_device_name, "auto, cpu, cuda, cuda:K or mps")}


def _field_type(name: str) -> Tuple[type, bool]:
    """(JSON type, whether None is allowed) of the :class:`Config` field ``name``."""
    hint = get_type_hints(Config)[name]
    args = get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    return get_origin(hint) or hint, optional


def _is_a(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_setting(name: str, value: Any) -> Any:
    """Return ``value`` if it fits the :class:`Config` field ``name``, else a ValueError.

    The type is the field's (an integer is also a number; None only where the field is
    optional); settings without a command-line flag also follow :data:`_RULES`.

    Raises
    ------
    ValueError
        "`name` must be <what>; got <value as JSON>".
    """
    kind, optional = _field_type(name)
    if value is None and optional:
        return value
    what = _TYPE_NAMES.get(kind, kind.__name__) + (" or null" if optional else "")
    accept, rule = _RULES.get(name, (lambda v: True, what))
    if value is None or not _is_a(value, kind) or not accept(value):
        raise ValueError(f"`{name}` must be {rule}; got {_as_json(value)}")
    return value


def _as_json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def read_config_file(path: str | Path) -> Dict[str, Any]:
    """The settings of a saved ``config.json``: a JSON object of :class:`Config` fields.

    ``expmode`` is dropped (the command says it). The values are checked by the command
    line, each like its flag.

    Raises
    ------
    ValueError
        A missing or unreadable file, not a JSON object, unknown settings; the message names
        the file.
    """
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"config file {file} is a folder; expected a JSON file such as "
                         f"exp/NAME/config.json")
    if not file.is_file():
        raise ValueError(f"config file not found: {file}")
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"config file {file} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {file} must hold a JSON object of settings; got "
                         f"{type(values).__name__}")
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config file {file}: unknown setting(s) {', '.join(unknown)}")
    return {k: v for k, v in values.items() if k != "expmode"}


def _preset(**changes: Any) -> Dict[str, Any]:
    """The run settings of a preset: the :class:`Config` defaults of :data:`PRESET_FIELDS`,
    with ``changes``."""
    defaults = Config()
    values = {name: getattr(defaults, name) for name in PRESET_FIELDS}
    values.update(changes)
    return values


#: The settings a preset fixes (the command line's defaults).
PRESET_FIELDS = ("dataset", "dataroot", "exp", "model", "epoch", "batch_size", "lr",
                 "lr_decay_epoch", "lr_decay_rate", "wd", "tloss_w", "loss", "crop", "augment",
                 "make_data", "save_every", "tloss_start", "tloss_ramp", "baseline",
                 "spatial_dims")
#: Defaults of ``run.py``: the reference implementation's training recipe.
REFERENCE: Dict[str, Any] = _preset()
#: Defaults of ``satloss train/test``: a quick start that runs in a few minutes on 2 CPU cores.
QUICK_START: Dict[str, Any] = _preset(
    dataset="synthetic", exp="quickstart", model="UNet_small", epoch=12, batch_size=8, lr=3e-3,
    lr_decay_epoch=10, wd=1e-4, crop=64, augment=True, make_data=True,
    tloss_start=None, tloss_ramp=2, baseline=True,
)
#: Defaults of ``satloss train/test --spatial_dims 3``: generated vessel volumes (16/2/2 of
#: 48^3), UNet3D_small on random 32^3 patches, validated whole by sliding windows; a few
#: minutes on 2 CPU cores.
QUICK_START_3D: Dict[str, Any] = _preset(
    dataset="vessels3d", exp="quickstart3d", model="UNet3D_small", epoch=6, batch_size=2,
    lr=3e-3, lr_decay_epoch=10, wd=1e-4, crop=32, augment=True, make_data=True,
    tloss_start=None, tloss_ramp=1, baseline=True, spatial_dims=3,
)
