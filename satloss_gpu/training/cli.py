"""Command line: ``satloss {train,test,make-data,persistence}`` and the reference's ``run.py``.

``satloss train`` with no arguments is the quick start: it generates a small synthetic
dataset into ``./data/synthetic`` if missing (only the built-in synthetic names are ever
generated: a mistyped ``--dataroot`` or ``--dataset`` is an error) and trains UNet_small on
64 x 64 crops for a few epochs on the CPU, writing ``./exp/quickstart``. ``run.py`` takes the reference's flags
with the reference's defaults (``--expmode train|test``). Bad input (missing folders,
unpaired or unreadable files, non-binary labels, unknown checkpoints, output folders through
a file, bad config-file values) ends with one line on stderr naming the path or the option
and exit status 2; set ``SATLOSS_DEBUG=1`` for the traceback.

``--model package.module:ClassName`` (with ``--model_kwargs`` as JSON) trains any
``nn.Module`` returning logits; ``--config FILE`` reruns from a saved ``config.json`` (its
settings become the defaults, each checked like its flag; flags given still override them).
``--resume`` continues the interrupted run of ``--exp`` with the settings of its
``config.json`` (every arm of a run with ``--baseline``).

``--spatial_dims 3`` works on volumes: ``satloss train --spatial_dims 3`` generates vessel
volumes into ``./data/vessels3d`` if missing and trains UNet3D_small on random 32^3 patches
(``--crop``), validating whole volumes by sliding windows (``--tile``, default the patch),
writing ``./exp/quickstart3d``; ``satloss test --spatial_dims 3`` and ``satloss make-data
--spatial_dims 3`` likewise.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from .config import QUICK_START, QUICK_START_3D, REFERENCE

__all__ = ["main", "run_main", "build_parser", "build_run_parser", "QUICK_START", "REFERENCE"]

TEST_MODELS_HELP = "best_dice, best_acc, last, epoch_NNNN, or a .pth path"


def _number(convert: Callable[[str], Any], accept: Callable[[Any], bool], requirement: str,
            name: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)`` if it is finite and ``accept`` holds, else an
    error "must be <requirement>; got '<text>'" (argparse prefixes the flag)."""

    def check(text: str) -> Any:
        try:
            value = convert(str(text).strip())
        except (TypeError, ValueError):
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)) \
                or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}; got {str(text)!r}")
        return value

    check.__name__ = name
    return check


_positive_int = _number(int, lambda v: v >= 1, "a positive integer", "positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0", "integer >= 0")
_positive_float = _number(float, lambda v: v > 0, "a number > 0", "number > 0")
_non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0", "number >= 0")
_fraction = _number(float, lambda v: 0.0 < v < 1.0, "a number in (0, 1)", "number in (0, 1)")
_image_side = _number(int, lambda v: v >= 8, "an integer >= 8", "integer >= 8")
_unit_interval = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)", "number in [0, 1)")


def _optional_positive_int(words: Sequence[str], name: str) -> Callable[[str], Optional[int]]:
    """An argparse ``type``: None for one of ``words`` (any case), else a positive integer."""

    def check(text: str) -> Optional[int]:
        if str(text).strip().lower() in words:
            return None
        try:
            return _positive_int(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"must be a positive integer or {' or '.join(words)}; got {str(text)!r}") from None

    check.__name__ = name
    return check


_tile = _optional_positive_int(("none", "off"), "positive integer or none")
_crop = _optional_positive_int(("none", "0", "off"), "positive integer or none")


def _name_error(text: str, requirement: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {requirement}; got {str(text)!r}")


def _folder_name(text: str) -> str:
    """A plain folder name (a dataset): not empty, no path separator, not . or .."""
    name = str(text).strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise _name_error(text, "a folder name (not empty, no '/', not '.' or '..')")
    return name


def _run_name(text: str) -> str:
    """A run folder relative to ``--exp_root`` (subfolders allowed): not empty, not absolute,
    no '..'."""
    path = Path(str(text).strip())
    if not str(text).strip() or path.is_absolute() or ".." in path.parts or path == Path("."):
        raise _name_error(text, "a folder name relative to --exp_root (not empty, not absolute, "
                          "no '..')")
    return str(text).strip()


_folder_name.__name__ = "folder name"
_run_name.__name__ = "run name"


def _model(text: str) -> str:
    """A built-in model name or ``package.module:ClassName`` (its form only: it is imported
    when the run starts)."""
    from .model_spec import is_model_spec, parse_model_spec
    from .models import MODEL_NAMES, MODEL_NAMES_3D

    if is_model_spec(text):
        try:
            parse_model_spec(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("`model` must be", "must be"))
        return text.strip()
    if text not in MODEL_NAMES + MODEL_NAMES_3D:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(MODEL_NAMES + MODEL_NAMES_3D)} or "
            f"package.module:ClassName; got {text!r}")
    return text


def _model_kwargs(text: str) -> Dict[str, Any]:
    from .model_spec import parse_model_kwargs

    try:
        return parse_model_kwargs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("`model_kwargs` must be", "must be"))


def add_run_arguments(parser: argparse.ArgumentParser, defaults: Dict[str, Any],
                      expmode: bool, settings: Optional[Dict[str, Any]] = None,
                      settings_file: str = "") -> None:
    """The flags of a training or test run, with ``defaults`` (REFERENCE or QUICK_START).

    ``settings`` (those of a ``--config`` file) replace the defaults, each checked like its
    flag; flags given on the command line still override them.
    """
    from .models import MODEL_NAMES, MODEL_NAMES_3D
    from .config import LOSSES

    g = parser.add_argument_group("reference flags")
    g.add_argument("--dataset", type=_folder_name, default=defaults["dataset"],
                   help="dataset name: <dataroot>/<dataset>/{train,val,test}[_labels] (%(default)s)")
    g.add_argument("--dataroot", default=defaults["dataroot"], help="data folder (%(default)s)")
    g.add_argument("--exp", type=_run_name, default=defaults["exp"], help="run name: outputs in <exp_root>/<exp> (%(default)s)")
    if expmode:
        g.add_argument("--expmode", choices=("train", "test"), default="train", help="(%(default)s)")
    g.add_argument("--model", type=_model, default=defaults["model"],
                   help=f"{' or '.join(MODEL_NAMES)} (images), {' or '.join(MODEL_NAMES_3D)} "
                   "(volumes), or package.module:ClassName for any nn.Module returning logits "
                   "(%(default)s)")
    g.add_argument("--epoch", "--epochs", dest="epoch", type=_positive_int, default=defaults["epoch"],
                   help="total epochs, those of a resumed run included (%(default)s)")
    g.add_argument("--start_epoch", type=_non_negative_int, default=0,
                   help="epochs already done: resume from --checkpoint or <exp>/last.pth, whose epoch "
                   "must be this one (%(default)s)")
    g.add_argument("--batch_size", type=_positive_int, default=defaults["batch_size"], help="(%(default)s)")
    g.add_argument("--lr", type=_positive_float, default=defaults["lr"], help="(%(default)s)")
    g.add_argument("--lr_decay_epoch", type=_positive_int, default=defaults["lr_decay_epoch"],
                   help="multiply the learning rate by --lr_decay_rate every this many epochs (%(default)s)")
    g.add_argument("--lr_decay_rate", type=_positive_float, default=defaults["lr_decay_rate"],
                   help="(%(default)s)")
    g.add_argument("--wd", type=_non_negative_float, default=defaults["wd"], help="weight decay (%(default)s)")
    g.add_argument("--tloss_w", type=_non_negative_float, default=defaults["tloss_w"],
                   help="weight of the second loss term, >= 0 (%(default)s)")
    g.add_argument("--test_model", default="best_dice", help=f"checkpoint to test: {TEST_MODELS_HELP} (%(default)s)")
    g.add_argument("--checkpoint", default=None,
                   help="checkpoint to resume from (train) or to test (test): a path or a name in the run")
    g.add_argument("--seed", type=_non_negative_int, default=0, help="(%(default)s)")
    g.add_argument("--num_workers", type=_non_negative_int, default=0, help="data loader workers (%(default)s)")
    g.add_argument("--gpu_id", type=_non_negative_int, default=None, help="GPU index with --device cuda")
    o = parser.add_argument_group("satloss-gpu flags")
    o.add_argument("--loss", choices=LOSSES, default=defaults["loss"],
                   help="training loss; bce+X = BCE + tloss_w * X (%(default)s)")
    o.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:K or mps (%(default)s)")
    o.add_argument("--tloss_start", type=_non_negative_int, default=defaults["tloss_start"],
                   help="epochs of BCE alone (warm-up) before the second loss term starts; "
                   "default: half of --epoch in `satloss train`, 0 in run.py")
    o.add_argument("--tloss_ramp", type=_non_negative_int, default=defaults["tloss_ramp"],
                   help="epochs over which the second term's weight grows linearly from 0 to "
                   "--tloss_w after --tloss_start; 0: at once (%(default)s)")
    o.add_argument("--tloss_kwargs", type=_model_kwargs, default={},
                   help="keyword arguments of the second loss term as a JSON object, e.g. "
                   "'{\"pad\": false}' for SATLoss without its frame")
    o.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=defaults["baseline"],
                   help="with --tloss_start > 0 and a second loss term: after the warm-up also "
                   "train BCE alone from the same checkpoint (in <exp>/baseline_bce) and compare "
                   "their Betti errors (%(default)s)")
    o.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="start a new run in an <exp> folder that already holds one (its "
                   "checkpoints are replaced, its metrics.csv kept as metrics_until_epoch_N.csv); "
                   "test: replace the results of an earlier test of the same checkpoint and "
                   "split (%(default)s)")
    o.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                   help="continue the interrupted run of <exp> where it stopped, with the "
                   "settings of its config.json (flags given override them); a run with "
                   "--baseline continues each of its arms (%(default)s)")
    o.add_argument("--val_fraction", type=_fraction, default=0.125,
                   help="without a val folder, this fraction of the training images (at least "
                   "one) is held out for validation (%(default)s)")
    o.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="mixed precision (float16 on CUDA, bfloat16 on CPU) (%(default)s)")
    o.add_argument("--crop", type=_crop, default=defaults["crop"],
                   help="random square training crops of this side, or none (%(default)s)")
    o.add_argument("--augment", action=argparse.BooleanOptionalAction, default=defaults["augment"],
                   help="random flips and transpositions of training samples (%(default)s)")
    o.add_argument("--exp_root", default="./exp", help="folder of the runs (%(default)s)")
    o.add_argument("--save_every", type=_non_negative_int, default=defaults["save_every"],
                   help="also keep epoch_NNNN.pth every N epochs; 0: never (%(default)s)")
    o.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="split evaluated in test mode (%(default)s)")
    o.add_argument("--threshold", type=_unit_interval, default=0.5, help="binarisation of predictions (%(default)s)")
    o.add_argument("--make_data", action=argparse.BooleanOptionalAction, default=defaults["make_data"],
                   help="generate <dataroot>/<dataset> when it is missing and --dataset is a "
                   "built-in synthetic name (synthetic, vessels, roads, cracks, membranes); any "
                   "other missing dataset is an error (%(default)s)")
    o.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                   help="write figures (%(default)s)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars (%(default)s)")
    o.add_argument("--model_kwargs", type=_model_kwargs, default={},
                   help="keyword arguments of --model as a JSON object, e.g. '{\"width\": 32}'")
    o.add_argument("--config", default=None, metavar="FILE",
                   help="rerun from a saved config.json; flags given here override it")
    o.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False,
                   help="also log losses, metrics and figures to <exp>/tensorboard (needs the "
                   "tensorboard extra) (%(default)s)")
    o.add_argument("--tile", type=_tile, default=None,
                   help="predict validation and test images larger than this by sliding windows "
                   "of this side, blended; none: whole images (%(default)s)")
    o.add_argument("--tile_overlap", type=_unit_interval, default=0.25,
                   help="overlap of neighbouring windows, in [0, 1) (%(default)s)")
    o.add_argument("--spatial_dims", type=int, choices=(2, 3), default=defaults["spatial_dims"],
                   help="2: images; 3: volumes (<dataroot>/<dataset>/<split>/{images,labels}/"
                   "*.npy, random cubic patches of --crop voxels, validation and test by "
                   "sliding windows of --tile voxels, default the patch) (%(default)s)")
    if settings:
        _apply_settings(parser, settings, settings_file)


def _apply_settings(parser: argparse.ArgumentParser, settings: Dict[str, Any],
                    settings_file: str) -> None:
    """Make the settings of a config file the parser's defaults, each checked and converted
    like its flag (settings without a flag: like their :class:`Config` field)."""
    actions = {a.dest: a for a in parser._actions}
    checked = {}
    for key, value in settings.items():
        try:
            checked[key] = _setting_value(key, value, actions.get(key))
        except ValueError as exc:
            raise ValueError(f"config file {settings_file}: {exc}") from None
    parser.set_defaults(**checked)


def _setting_value(key: str, value: Any, action: Optional[argparse.Action]) -> Any:
    """``value`` of a config file as its flag ``action`` would give it (``--crop 0``: None).

    Raises
    ------
    ValueError
        "`key` must be ...; got ..." when the value does not fit the field or the flag.
    """
    from .config import check_setting

    value = check_setting(key, value)
    if action is None or value is None or isinstance(value, bool):
        return value
    try:
        if action.type is not None:
            value = action.type(json.dumps(value) if isinstance(value, dict) else str(value))
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(map(str, action.choices))}; got {json.dumps(value)}")
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"`{key}` {exc}") from None
    return value


#: How a run starts: said on the command line, never taken from a config file.
START_FLAGS = ("start_epoch", "resume", "overwrite")


def _settings(config: Optional[str]) -> Dict[str, Any]:
    """Keyword arguments of :func:`add_run_arguments` for a ``--config`` file (or none); the
    file's :data:`START_FLAGS` are left out."""
    if config is None:
        return {}
    from .config import read_config_file

    settings = {k: v for k, v in read_config_file(config).items() if k not in START_FLAGS}
    return {"settings": settings, "settings_file": config}


def _config_file(argv: Optional[Sequence[str]], defaults: Dict[str, Any]) -> Optional[str]:
    """The ``--config FILE`` of ``argv``, if any (read before the full parse); with
    ``--resume`` and no ``--config``, the run's ``<exp_root>/<exp>/config.json`` if it exists
    (``defaults``: the preset giving the default ``--exp``)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False)
    pre.add_argument("--exp", default=defaults["exp"])
    pre.add_argument("--exp_root", default="./exp")
    known, _ = pre.parse_known_args(argv)
    saved = Path(known.exp_root) / known.exp / "config.json"
    if known.config is None and known.resume and saved.is_file():
        return str(saved)
    return known.config


def build_run_parser(config: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of ``run.py``: the reference's flags and defaults, plus ours.

    With ``config`` (a saved ``config.json``) its settings are the defaults.
    """
    parser = argparse.ArgumentParser(
        prog="run.py", description="Train or test a segmentation model with SATLoss "
        "(flags and defaults of the reference implementation).")
    add_run_arguments(parser, REFERENCE, expmode=True, **_settings(config))
    return parser


def _volumes(argv: Optional[Sequence[str]]) -> bool:
    """Whether ``argv`` asks for volumes (``--spatial_dims 3``): the presets differ."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--spatial_dims", default="2")
    known, _ = pre.parse_known_args(argv)
    return str(known.spatial_dims).strip() == "3"


def build_parser(config: Optional[str] = None, volumes: bool = False) -> argparse.ArgumentParser:
    """The parser of the ``satloss`` command (``config``: see :func:`build_run_parser`;
    ``volumes``: the defaults of ``--spatial_dims 3``)."""
    from .synthetic import KINDS

    parser = argparse.ArgumentParser(
        prog="satloss", description="Topology-preserving segmentation with SATLoss: training, "
        "testing, synthetic data and persistence diagrams.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train = sub.add_parser("train", help="train a model (quick start with no arguments)",
                           description="Train a model. With no arguments: the quick start on a "
                           "synthetic dataset, a few minutes on a CPU.")
    settings = _settings(config)
    preset = QUICK_START_3D if volumes else QUICK_START
    add_run_arguments(train, preset, expmode=False, **settings)
    test = sub.add_parser("test", help="test a trained model",
                          description="Predict with a checkpoint and measure every metric.")
    add_run_arguments(test, preset, expmode=False, **settings)

    data = sub.add_parser("make-data", help="write a synthetic or retina dataset",
                          description="Write a deterministic synthetic dataset (or tiles of "
                          "skimage.data.retina() with pseudo-labels) in the reference layout.")
    data.add_argument("--kind", choices=("mixed",) + KINDS + ("retina",), default="mixed",
                      help="(%(default)s)")
    data.add_argument("--dataroot", default="./data", help="(%(default)s)")
    data.add_argument("--name", type=_folder_name, default=None, help="dataset name (default: synthetic, or the kind)")
    data.add_argument("--n_train", type=_positive_int, default=32, help="(%(default)s)")
    data.add_argument("--n_val", type=_non_negative_int, default=8, help="(%(default)s)")
    data.add_argument("--n_test", type=_non_negative_int, default=8, help="(%(default)s)")
    data.add_argument("--size", type=_image_side, default=None,
                      help="image side (96), or tile side for retina (128)")
    data.add_argument("--seed", type=_non_negative_int, default=0, help="(%(default)s)")
    data.add_argument("--spatial_dims", type=int, choices=(2, 3), default=2,
                      help="3: vessel volumes (--kind vessels, --size the side of cubic volumes, "
                      "default 48; name vessels3d) in the volume layout (%(default)s)")
    data.add_argument("--overwrite", action="store_true",
                      help="replace a dataset that make-data wrote there before (only the files "
                      "its dataset.json lists are removed; any other file stops it)")

    pers = sub.add_parser("persistence", help="plot the persistence diagram of an image",
                          description="Persistence diagram (H0, H1) of a grey image with the "
                          "critical pixels of its most persistent pairs.")
    pers.add_argument("image", nargs="?", default=None,
                      help="image file (default: the green channel of skimage.data.retina())")
    pers.add_argument("--out", default=None, help="PNG path (default exp/persistence/<name>.png)")
    pers.add_argument("--max_size", type=_positive_int, default=512,
                      help="downscale larger images to this side (%(default)s)")
    pers.add_argument("--superlevel", action="store_true", help="filter by decreasing values")
    pers.add_argument("--construction", choices=("T", "V"), default="T", help="(%(default)s)")
    pers.add_argument("--top", type=_positive_int, default=20, help="pairs marked per dimension")
    return parser


def _config(args: argparse.Namespace, expmode: str):
    from .config import Config

    values = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    values["expmode"] = expmode
    return Config.from_dict(values)


def _given(argv: Optional[Sequence[str]], flag: str) -> bool:
    """Whether ``flag`` is on the command line ``argv`` (``sys.argv`` when None)."""
    words = sys.argv[1:] if argv is None else list(argv)
    return any(w == flag or w.startswith(flag + "=") for w in words)


def _cmd_run(args: argparse.Namespace, expmode: str, argv: Optional[Sequence[str]] = None) -> int:
    from .recipe import follows_recipe, train_with_baseline
    from .train import test, train

    if expmode == "test" and args.resume:
        raise ValueError("--resume continues a training run; a test is rerun with --overwrite")
    if expmode == "test" and not (_given(argv, "--model") or args.config):
        args.model = None  # test the checkpoint's model; a --model given must match it
    cfg = _config(args, expmode)
    if expmode == "train" and follows_recipe(cfg):
        result = train_with_baseline(cfg)
    elif expmode == "train":
        result = train(cfg)
    else:
        result = test(cfg)
    if result and os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: v for k, v in result.items()}, indent=2, default=str))
    return 0


def _cmd_make_data(args: argparse.Namespace) -> int:
    from .synthetic import make_dataset, make_retina_dataset

    if args.spatial_dims == 3:
        return _make_volumes(args)
    if args.kind == "retina":
        try:
            path = make_retina_dataset(args.dataroot, args.name or "retina", tile=args.size or 128,
                                       seed=args.seed, overwrite=args.overwrite)
        except ValueError as exc:
            if "`tile`" not in str(exc):
                raise
            raise ValueError(f"--size {args.size}: tiles too large for the retina photograph "
                             f"(fewer than 3 inside its field of view); use 352 or less") from None
    else:
        name = args.name or ("synthetic" if args.kind == "mixed" else args.kind)
        size = args.size or 96
        path = make_dataset(args.dataroot, name, args.kind, args.n_train, args.n_val, args.n_test,
                            (size, size), args.seed, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def _make_volumes(args: argparse.Namespace) -> int:
    """``make-data --spatial_dims 3``: generated vessel volumes in the volume layout."""
    from .synthetic3d import VOLUME_KINDS, make_volume_dataset

    kind = "vessels" if args.kind == "mixed" else args.kind
    if kind not in VOLUME_KINDS:
        raise ValueError(f"--kind {args.kind} has no volumes; with --spatial_dims 3 use "
                         f"{' or '.join(VOLUME_KINDS)}")
    size = args.size or 48
    path = make_volume_dataset(args.dataroot, args.name or "vessels3d", args.n_train,
                               args.n_val, args.n_test, (size, size, size), args.seed,
                               overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def _cmd_persistence(args: argparse.Namespace) -> int:
    import numpy as np

    from .paths import output_file
    from .plotting import plot_persistence

    if args.image is None:
        from skimage import data

        image = data.retina()[..., 1].astype(np.float32) / 255.0
        name = "retina"
    else:
        from .data import read_image

        path = Path(args.image)
        if not path.is_file():
            from .data import DataError

            raise DataError(f"image not found: {path}")
        rgb = read_image(path)
        image = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        name = path.stem
    out = output_file(args.out or _unused_path(Path("exp") / "persistence", name, ".png"),
                      "--out" if args.out else "the default --out (exp/persistence)")
    if max(image.shape) > args.max_size:
        from skimage.transform import rescale

        image = rescale(image, args.max_size / max(image.shape), anti_aliasing=True).astype(np.float32)
    plot_persistence(image, out, title=f"{name} ({image.shape[0]} x {image.shape[1]})", top=args.top,
                     superlevel=args.superlevel, construction=args.construction)
    print(f"wrote {out}")
    return 0


def _unused_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or ``folder/stem_K+suffix`` with the least K >= 2 that names no
    existing file: a default output path never replaces an earlier output."""
    path, k = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, k = folder / f"{stem}_{k}{suffix}", k + 1
    return path


def _raise(exc: Exception) -> int:
    raise exc


#: Operating-system errors about a path the user gave (one line naming it, status 2).
_PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError)


def _guarded(func, *args) -> int:
    """Run a command; known input errors become one line on stderr and exit status 2."""
    from .data import DataError
    from .checkpoints import CheckpointError

    try:
        return func(*args)
    except (DataError, CheckpointError, ValueError, *_PATH_ERRORS) as exc:
        if os.environ.get("SATLOSS_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"satloss: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("satloss: interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``satloss`` and ``python -m satloss_gpu``; returns the exit status."""
    preset = QUICK_START_3D if _volumes(argv) else QUICK_START
    try:
        parser = build_parser(_config_file(argv, preset), volumes=preset is QUICK_START_3D)
    except ValueError as exc:
        return _guarded(_raise, exc)
    args = parser.parse_args(argv)
    if args.command in ("train", "test"):
        return _guarded(_cmd_run, args, args.command, argv)
    if args.command == "make-data":
        return _guarded(_cmd_make_data, args)
    return _guarded(_cmd_persistence, args)


def run_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``run.py`` (``--expmode train`` or ``test``)."""
    try:
        parser = build_run_parser(_config_file(argv, REFERENCE))
    except ValueError as exc:
        return _guarded(_raise, exc)
    args = parser.parse_args(argv)
    expmode = args.expmode
    del args.expmode
    return _guarded(_cmd_run, args, expmode, argv)
