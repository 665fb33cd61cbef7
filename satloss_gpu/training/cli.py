"""Command line: ``satloss {train,test,make-data,persistence}`` and the reference's ``run.py``.

``satloss train`` with no arguments is the quick start: it generates a small synthetic
dataset into ``./data/synthetic`` if missing and trains UNet_small on 64 x 64 crops for a
few epochs on the CPU, writing ``./exp/quickstart``. ``run.py`` takes the reference's flags
with the reference's defaults (``--expmode train|test``). Bad input (missing folders,
unpaired or unreadable files, non-binary labels, unknown checkpoints) ends with one line on
stderr naming the path and exit status 2; set ``SATLOSS_DEBUG=1`` for the traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .config import QUICK_START, REFERENCE

__all__ = ["main", "run_main", "build_parser", "build_run_parser", "QUICK_START", "REFERENCE"]

TEST_MODELS_HELP = "best_dice, best_acc, last, epoch_NNNN, or a .pth path"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return value


def _crop(text: str) -> Optional[int]:
    if text.lower() in ("none", "0", "off"):
        return None
    return _positive_int(text)


def add_run_arguments(parser: argparse.ArgumentParser, defaults: Dict[str, Any],
                      expmode: bool) -> None:
    """The flags of a training or test run, with ``defaults`` (REFERENCE or QUICK_START)."""
    from .models import MODEL_NAMES
    from .config import LOSSES

    g = parser.add_argument_group("reference flags")
    g.add_argument("--dataset", default=defaults["dataset"],
                   help="dataset name: <dataroot>/<dataset>/{train,val,test}[_labels] (%(default)s)")
    g.add_argument("--dataroot", default=defaults["dataroot"], help="data folder (%(default)s)")
    g.add_argument("--exp", default=defaults["exp"], help="run name: outputs in <exp_root>/<exp> (%(default)s)")
    if expmode:
        g.add_argument("--expmode", choices=("train", "test"), default="train", help="(%(default)s)")
    g.add_argument("--model", choices=MODEL_NAMES, default=defaults["model"], help="(%(default)s)")
    g.add_argument("--epoch", type=_positive_int, default=defaults["epoch"], help="epochs (%(default)s)")
    g.add_argument("--start_epoch", type=_non_negative_int, default=0,
                   help="epochs already done: resume from --checkpoint or <exp>/last.pth (%(default)s)")
    g.add_argument("--batch_size", type=_positive_int, default=defaults["batch_size"], help="(%(default)s)")
    g.add_argument("--lr", type=_positive_float, default=defaults["lr"], help="(%(default)s)")
    g.add_argument("--lr_decay_epoch", type=_positive_int, default=defaults["lr_decay_epoch"],
                   help="multiply the learning rate by --lr_decay_rate every this many epochs (%(default)s)")
    g.add_argument("--lr_decay_rate", type=_positive_float, default=defaults["lr_decay_rate"],
                   help="(%(default)s)")
    g.add_argument("--wd", type=float, default=defaults["wd"], help="weight decay (%(default)s)")
    g.add_argument("--tloss_w", type=float, default=defaults["tloss_w"],
                   help="weight of the second loss term (%(default)s)")
    g.add_argument("--test_model", default="best_dice", help=f"checkpoint to test: {TEST_MODELS_HELP} (%(default)s)")
    g.add_argument("--checkpoint", default=None,
                   help="checkpoint to resume from (train) or to test (test): a path or a name in the run")
    g.add_argument("--seed", type=int, default=0, help="(%(default)s)")
    g.add_argument("--num_workers", type=_non_negative_int, default=0, help="data loader workers (%(default)s)")
    g.add_argument("--gpu_id", type=_non_negative_int, default=None, help="GPU index with --device cuda")
    o = parser.add_argument_group("satloss-gpu flags")
    o.add_argument("--loss", choices=LOSSES, default=defaults["loss"],
                   help="training loss; bce+X = BCE + tloss_w * X (%(default)s)")
    o.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (%(default)s)")
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
    o.add_argument("--threshold", type=float, default=0.5, help="binarisation of predictions (%(default)s)")
    o.add_argument("--make_data", action=argparse.BooleanOptionalAction, default=defaults["make_data"],
                   help="generate the synthetic dataset if <dataroot>/<dataset> is missing (%(default)s)")
    o.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                   help="write figures (%(default)s)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars (%(default)s)")


def build_run_parser() -> argparse.ArgumentParser:
    """The parser of ``run.py``: the reference's flags and defaults, plus ours."""
    parser = argparse.ArgumentParser(
        prog="run.py", description="Train or test a segmentation model with SATLoss "
        "(flags and defaults of the reference implementation).")
    add_run_arguments(parser, REFERENCE, expmode=True)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``satloss`` command."""
    from .synthetic import KINDS

    parser = argparse.ArgumentParser(
        prog="satloss", description="Topology-preserving segmentation with SATLoss: training, "
        "testing, synthetic data and persistence diagrams.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train = sub.add_parser("train", help="train a model (quick start with no arguments)",
                           description="Train a model. With no arguments: the quick start on a "
                           "synthetic dataset, a few minutes on a CPU.")
    add_run_arguments(train, QUICK_START, expmode=False)
    test = sub.add_parser("test", help="test a trained model",
                          description="Predict with a checkpoint and measure every metric.")
    add_run_arguments(test, QUICK_START, expmode=False)

    data = sub.add_parser("make-data", help="write a synthetic or retina dataset",
                          description="Write a deterministic synthetic dataset (or tiles of "
                          "skimage.data.retina() with pseudo-labels) in the reference layout.")
    data.add_argument("--kind", choices=("mixed",) + KINDS + ("retina",), default="mixed",
                      help="(%(default)s)")
    data.add_argument("--dataroot", default="./data", help="(%(default)s)")
    data.add_argument("--name", default=None, help="dataset name (default: synthetic, or the kind)")
    data.add_argument("--n_train", type=_positive_int, default=32, help="(%(default)s)")
    data.add_argument("--n_val", type=_non_negative_int, default=8, help="(%(default)s)")
    data.add_argument("--n_test", type=_non_negative_int, default=8, help="(%(default)s)")
    data.add_argument("--size", type=_positive_int, default=None,
                      help="image side (96), or tile side for retina (128)")
    data.add_argument("--seed", type=int, default=0, help="(%(default)s)")

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

    values = {k: v for k, v in vars(args).items() if k not in ("command",)}
    values["expmode"] = expmode
    return Config.from_dict(values)


def _cmd_run(args: argparse.Namespace, expmode: str) -> int:
    from .train import test, train

    cfg = _config(args, expmode)
    if expmode == "train":
        result = train(cfg)
    else:
        result = test(cfg)
    if result and os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: v for k, v in result.items()}, indent=2, default=str))
    return 0


def _cmd_make_data(args: argparse.Namespace) -> int:
    from .synthetic import make_dataset, make_retina_dataset

    if args.kind == "retina":
        path = make_retina_dataset(args.dataroot, args.name or "retina", tile=args.size or 128,
                                   seed=args.seed)
    else:
        name = args.name or ("synthetic" if args.kind == "mixed" else args.kind)
        size = args.size or 96
        path = make_dataset(args.dataroot, name, args.kind, args.n_train, args.n_val, args.n_test,
                            (size, size), args.seed)
    print(f"wrote {path}")
    return 0


def _cmd_persistence(args: argparse.Namespace) -> int:
    import numpy as np

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
    if max(image.shape) > args.max_size:
        from skimage.transform import rescale

        image = rescale(image, args.max_size / max(image.shape), anti_aliasing=True).astype(np.float32)
    out = Path(args.out) if args.out else Path("exp") / "persistence" / f"{name}.png"
    plot_persistence(image, out, title=f"{name} ({image.shape[0]} x {image.shape[1]})", top=args.top,
                     superlevel=args.superlevel, construction=args.construction)
    print(f"wrote {out}")
    return 0


def _guarded(func, *args) -> int:
    """Run a command; known input errors become one line on stderr and exit status 2."""
    from .data import DataError
    from .checkpoints import CheckpointError

    try:
        return func(*args)
    except (DataError, CheckpointError, ValueError, FileNotFoundError) as exc:
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
    args = build_parser().parse_args(argv)
    if args.command in ("train", "test"):
        return _guarded(_cmd_run, args, args.command)
    if args.command == "make-data":
        return _guarded(_cmd_make_data, args)
    return _guarded(_cmd_persistence, args)


def run_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``run.py`` (``--expmode train`` or ``test``)."""
    args = build_run_parser().parse_args(argv)
    expmode = args.expmode
    del args.expmode
    return _guarded(_cmd_run, args, expmode)
