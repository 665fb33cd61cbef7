"""The training loop shared by images and volumes.

:func:`train` follows the reference implementation's recipe: Adam with weight decay, the
learning rate multiplied by ``lr_decay_rate`` every ``lr_decay_epoch`` epochs, loss
``BCE + tloss_w * topological loss``, validation after every epoch, checkpoints of the best
Dice, the best accuracy and the last epoch. The model is put back in training mode after every
validation. Runs resume from a checkpoint with the optimizer, scheduler and gradient-scaler
states. Under ``torchrun`` the model is wrapped in DistributedDataParallel and the training
set is split with a DistributedSampler; rank 0 validates and writes.

Images (``cfg.spatial_dims == 2``) and volumes (3) differ only in their dataset
(:class:`~satloss_gpu.training.data.SegmentationDataset`: random crops of images;
:class:`~satloss_gpu.training.patches.VolumeDataset`: random patches of volumes, validated
whole by sliding windows), in their metrics (Betti errors up to H1 or H2) and in their
figures; the epochs, the warm-up and both arms, resume, checkpoints, metric rows and progress
bars are this module's, for both.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..metrics import metric_names, summarize
from . import distributed as dist
from .checkpoints import (
    CheckpointError,
    checkpoint_epoch,
    load_checkpoint,
    resume,
    save_checkpoints,
)
from .config import Config
from .criterion import TERM_LOSSES, _Criterion, build_criterion
from .data import DataError, SegmentationDataset, same_size, split_dirs
from .patches import VolumeDataset
from .inference import autocast, crop_to, evaluate, predict_sample
from .paths import output_dir
from .models import MODEL_NAMES, MODEL_NAMES_3D, build_model, model_logits, \
    model_spatial_dims, pad_to_multiple, size_divisor

__all__ = ["train", "run_result", "open_split", "tile_of", "VOLUME_DATASETS"]

#: A split of images or of volumes.
Dataset = Any

#: Built-in volume datasets generated on demand (``--make_data``), by name.
VOLUME_DATASETS = ("vessels3d",)
#: The generated volume dataset of a run (counts and size; ``cfg.extra["make_data"]`` changes
#: them).
VOLUME_DATA = dict(n_train=16, n_val=2, n_test=2, size=(48, 48, 48))

# --------------------------------------------------------------------------- helpers
class _Log:
    """Messages to a log file and (on rank 0) to the console, around progress bars."""

    def __init__(self, path: Optional[Path], enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        tqdm.write(message)
        if self.path is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"{stamp} {message}\n")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _write_csv(path: Path, rows: List[Dict[str, Any]], append: bool = False) -> None:
    if not rows:
        return
    keys = list(rows[0])
    exists = append and path.exists() and path.stat().st_size > 0
    if exists:  # the columns of the file (rows written before may lack a newer column)
        with open(path, newline="", encoding="utf-8") as f:
            keys = next(csv.reader(f), keys)
    with open(path, "a" if append else "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="", extrasaction="ignore")
        if not exists:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _read_metrics(path: Path, before_epoch: float) -> List[Dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r.get("epoch") and int(r["epoch"]) < before_epoch]


def open_split(cfg: Config, split: str, train: bool) -> Dataset:
    """The images (``cfg.spatial_dims`` 2) or volumes (3) of ``split``, with the training
    crops or patches and flips when ``train``."""
    kind = VolumeDataset if cfg.spatial_dims == 3 else SegmentationDataset
    return kind(cfg.dataroot, cfg.dataset, split, crop=cfg.crop if train else None,
                augment=cfg.augment and train, seed=cfg.seed)



def _ensure_data(cfg: Config, log: _Log, info: dist.DistInfo) -> None:
    """Generate a missing built-in synthetic dataset when asked to (rank 0 only); any other
    missing dataset is a :class:`DataError` (on every rank)."""
    if cfg.spatial_dims == 3:
        _ensure_volumes(cfg, log, info)
        return
    from .synthetic import dataset_to_generate, make_dataset

    kind = dataset_to_generate(cfg.dataroot, cfg.dataset, cfg.make_data)
    if kind is not None and info.is_main:
        params = dict(kind=kind, n_train=64, n_val=8, n_test=8, size=(96, 96), seed=cfg.seed)
        params.update(cfg.extra.get("make_data", {}))
        log(f"generating the synthetic dataset {Path(cfg.dataroot) / cfg.dataset} ({params})")
        make_dataset(cfg.dataroot, cfg.dataset, **params)
    dist.barrier(info)


def _ensure_volumes(cfg: Config, log: _Log, info: dist.DistInfo) -> None:
    """:func:`_ensure_data` for volumes: a missing ``vessels3d`` is generated with
    ``--make_data`` (:func:`~satloss_gpu.training.synthetic3d.make_volume_dataset`)."""
    from .synthetic3d import make_volume_dataset

    if (Path(cfg.dataroot) / cfg.dataset).is_dir():
        return
    if not (cfg.make_data and cfg.dataset in VOLUME_DATASETS):
        names = ", ".join(VOLUME_DATASETS)
        hint = (f"with --make_data a missing volume dataset is generated only for the names "
                f"{names}" if cfg.make_data else f"pass --make_data to generate {names}")
        base = Path(cfg.dataroot) / cfg.dataset
        raise DataError(f"volume dataset folder not found: {base} (--dataroot {cfg.dataroot}, "
                        f"--dataset {cfg.dataset}; looked for {base / 'train' / 'images'} and "
                        f"{base / 'train' / 'labels'}); {hint}; write others with `satloss "
                        f"make-data --spatial_dims 3`")
    if info.is_main:
        params = dict(VOLUME_DATA, seed=cfg.seed)
        params.update(cfg.extra.get("make_data", {}))
        log(f"generating the volume dataset {Path(cfg.dataroot) / cfg.dataset} ({params})")
        make_volume_dataset(cfg.dataroot, cfg.dataset, **params)
    dist.barrier(info)


# --------------------------------------------------------------------------- training
def train(cfg: Config, record: Optional[Config] = None) -> Dict[str, Any]:
    """Train a model as configured; return the best validation metrics and the run folder.

    Parameters
    ----------
    cfg : Config
        The settings of the run. With ``cfg.resume`` the run of ``<exp>`` continues after
        the epoch of its ``last.pth`` (from scratch, or ``cfg.checkpoint``, when there is
        none; nothing is trained when it is at ``cfg.epoch``).
    record : Config, optional
        The settings written to ``<exp>/config.json`` (default ``cfg``), without the way
        the run was started (``start_epoch``, ``resume``, ``overwrite``), so that
        ``--config`` reruns it. :func:`~satloss_gpu.training.recipe.train_with_baseline`
        records what the user asked for, not the settings of one of its arms.

    Returns
    -------
    dict
        ``exp_dir``, ``best_dice``, ``best_accuracy`` (over every epoch of the run, those
        before a resume included) and ``epochs``.

    Raises
    ------
    DataError, CheckpointError, ValueError
        For bad data, checkpoints or settings (the command line prints them on one line),
        all before the first epoch.
    """
    if cfg.loss in TERM_LOSSES and cfg.tloss_w > 0 \
            and cfg.warmup() >= cfg.epoch:
        raise ValueError(f"the second loss term would never start: tloss_start "
                         f"{cfg.warmup()} >= epoch {cfg.epoch}; lower --tloss_start")
    check_model_dims(cfg.model, cfg.spatial_dims)
    for run in (cfg, record or cfg):
        check_loss_dims(run.loss, run.spatial_dims)
    criterion = build_criterion(cfg.loss, cfg.tloss_w, cfg.tloss_kwargs)
    finished = _finished_run(cfg)
    if finished is not None:
        return finished
    info = dist.init(cfg.device, cfg.gpu_id)
    try:
        return _train(cfg, info, criterion, record or cfg)
    finally:
        dist.cleanup(info)


def check_model_dims(model: Optional[str], spatial_dims: int) -> None:
    """A ValueError naming ``--model`` and ``--spatial_dims`` for a built-in model of the
    other kind (a 2D U-Net for volumes or a 3D one for images)."""
    wanted, other = (MODEL_NAMES_3D, MODEL_NAMES) if spatial_dims == 3 else \
        (MODEL_NAMES, MODEL_NAMES_3D)
    if model in other:
        kind = "volumes (--spatial_dims 3)" if spatial_dims == 3 else "images (--spatial_dims 2)"
        raise ValueError(f"--model {model} does not fit {kind}; use {' or '.join(wanted)}, or "
                         f"your own model")


#: Losses for images only (soft Dice and soft clDice are written for (B, C, H, W)).
IMAGE_ONLY_LOSSES = ("bce+cldice", "dice")


def check_loss_dims(loss: str, spatial_dims: int) -> None:
    """A ValueError naming ``--loss`` for a loss that has no volume version."""
    if spatial_dims == 3 and loss in IMAGE_ONLY_LOSSES:
        raise ValueError(f"--loss {loss} is for images only; volumes (--spatial_dims 3) train "
                         f"with bce, bce+sat or bce+topo")


def _finished_run(cfg: Config) -> Optional[Dict[str, Any]]:
    """With ``cfg.resume``: the result of a run whose ``last.pth`` is at ``cfg.epoch``
    (nothing left to train), else None."""
    last = cfg.exp_dir / "last.pth"
    done = checkpoint_epoch(last) if cfg.resume else None
    if done is None or done < cfg.epoch:
        return None
    if done > cfg.epoch:
        raise CheckpointError(f"--resume: {last} is at epoch {done}, past --epoch {cfg.epoch}; "
                              f"pass --epoch {done} or more")
    _Log(cfg.exp_dir / "train.log", True)(f"--resume: {last} is at the last epoch {done}; "
                                          f"nothing left to train")
    return run_result(cfg.exp_dir, load_checkpoint(last).get("best", {}), done)


def run_result(exp_dir: Path, best: Dict[str, float], epochs: int) -> Dict[str, Any]:
    """What :func:`train` returns: the run folder, its best validation scores, its epochs."""
    return {"exp_dir": str(exp_dir), "best_dice": best.get("dice", -math.inf),
            "best_accuracy": best.get("accuracy", -math.inf), "epochs": int(epochs)}


def _train(cfg: Config, info: dist.DistInfo, criterion: "_Criterion",
           record: Config) -> Dict[str, Any]:
    from tqdm import tqdm

    log = _start_run(cfg, info, record)
    train_set, val_set = _training_sets(cfg)
    loader, sampler, generator = _loader(cfg, info, train_set)
    model = build_model(cfg.model, in_channels=train_set.channels,
                        kwargs=cfg.model_kwargs).to(info.device)
    _check_output(model, cfg.model, train_set, info.device)
    _check_term(record, train_set, info.device)
    board = _board(cfg, info)
    optimizer, scheduler, scaler = _optimisation(cfg, info, model)
    best = {"dice": -math.inf, "accuracy": -math.inf}
    start, last_row = resume(cfg, model, optimizer, scheduler, scaler, best, info.device, log)
    if info.is_main:
        _record_settings(cfg, record)
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"run {cfg.exp_dir}: {cfg.model} ({n_params / 1e6:.2f} M parameters), loss {cfg.loss}"
        f"{_schedule_text(cfg)}, {len(train_set)} train / {len(val_set)} val "
        f"{'volumes' if cfg.spatial_dims == 3 else 'images'}, "
        f"device {info.device}, {info.world_size} process(es), epochs {start + 1}..{cfg.epoch}")
    metrics_csv = _metrics_csv(cfg, info, start, log, last_row)

    model.train()
    epochs = tqdm(range(start + 1, cfg.epoch + 1), desc="epochs",
                  disable=not (cfg.progress and info.is_main), initial=start, total=cfg.epoch)
    for epoch in epochs:
        t0 = time.time()
        train_set.set_epoch(epoch)
        generator.manual_seed(cfg.seed * 100003 + epoch)  # the same batches when resumed
        if sampler is not None:
            sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        criterion.tloss_w = cfg.tloss_weight(epoch) if criterion.extra is not None else 0.0
        sums = _train_epoch(model, loader, criterion, optimizer, scaler, cfg, info, epoch)
        scheduler.step()
        if info.is_main:
            row: Dict[str, Any] = {"epoch": epoch, "lr": lr, "tloss_w": criterion.tloss_w, **sums}
            means = _validate_and_save(cfg, info, model, val_set, row, t0, metrics_csv,
                                       (optimizer, scheduler, scaler), best, log, board)
            epochs.set_postfix(loss=f"{sums['loss']:.3f}", dice=f"{means['dice']:.3f}")
        dist.barrier(info)
    best = dist.broadcast_object(best, info)
    if info.is_main and cfg.figures:
        crit = criterion.extra if hasattr(criterion.extra, "match") else None
        _matching_figure(cfg, _unwrap(model), val_set, info.device, cfg.exp_dir / "figures", crit)
    if board is not None:
        _log_final_figures(board, cfg, val_set)
    log(f"done: best val dice {best['dice']:.4f}, best val accuracy {best['accuracy']:.4f}; "
        f"outputs in {cfg.exp_dir}")
    return run_result(cfg.exp_dir, best, cfg.epoch)


def _schedule_text(cfg: Config) -> str:
    """`` (tloss_w=W, from epoch E, ramp R epochs)`` for losses with a topological term."""
    if cfg.loss not in TERM_LOSSES:
        return ""
    if cfg.warmup() == 0 and cfg.tloss_ramp == 0:
        return f" (tloss_w={cfg.tloss_w})"
    return (f" (tloss_w={cfg.tloss_w} from epoch {cfg.warmup() + 1}, "
            f"ramp {cfg.tloss_ramp} epochs)")


def _resuming(cfg: Config) -> bool:
    return cfg.checkpoint is not None or cfg.start_epoch > 0 or cfg.resume


def _check_run_folder(cfg: Config) -> None:
    """Refuse to start a new run in a folder that holds one (unless ``cfg.overwrite``)."""
    if _resuming(cfg) or cfg.overwrite or not cfg.exp_dir.is_dir():
        return
    held = sorted(p.name for p in cfg.exp_dir.iterdir()
                  if p.suffix == ".pth" or p.name == "metrics.csv")
    if held:
        raise ValueError(f"run folder {cfg.exp_dir} already holds a run ({', '.join(held[:3])}"
                         f"{', ...' if len(held) > 3 else ''}); pass --overwrite to replace it, "
                         f"--resume to continue it, or choose another --exp")


#: Settings that say how a run was started, not what it is: not recorded in config.json.
_START_SETTINGS = {"start_epoch": 0, "resume": False, "overwrite": False}


def _start_run(cfg: Config, info: dist.DistInfo, record: Config) -> _Log:
    """Create the run folder, its log and ``config.json`` (``record``, when the folder has
    none yet), seed, set threads,
    generate missing data."""
    # Every rank checks (a read of the folder, before any barrier), so that a refused run
    # stops all processes instead of leaving the others waiting for rank 0.
    _check_run_folder(cfg)
    if info.is_main:
        output_dir(cfg.exp_dir / "figures", "--exp_root/--exp")
        if not (cfg.exp_dir / "config.json").exists():
            _record_settings(cfg, record)
    log = _Log(cfg.exp_dir / "train.log" if info.is_main else None, info.is_main)
    if info.distributed and info.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world_size))
    _seed_everything(cfg.seed + info.rank)
    _ensure_data(cfg, log, info)
    return log


def _record_settings(cfg: Config, record: Config) -> None:
    """Write ``record`` to ``<exp>/config.json`` (without the way the run was started).

    :func:`_train` calls it again once the data, the model and the checkpoint to continue
    from are checked: a command refused by a check never replaces the settings of the run
    already in the folder (which ``--resume`` reads).
    """
    (cfg.exp_dir / "config.json").write_text(replace(record, **_START_SETTINGS).to_json())


def _training_sets(cfg: Config) -> Tuple[Dataset, Dataset]:
    """The checked training and validation sets (:class:`DataError` for unusable data).

    Without a ``val`` folder, ``val_fraction`` of the training images (at least one, chosen
    by ``seed``) are held out for validation and not trained on.
    """
    train_set = open_split(cfg, "train", True)
    if split_dirs(cfg.dataroot, cfg.dataset, "val")[0].exists():
        val_set = open_split(cfg, "val", False)
    else:
        val_set = _held_out(cfg, train_set)
    shapes = train_set.check(require_foreground=True)
    val_set.check()
    if val_set.channels != train_set.channels:
        raise DataError(f"the volumes in {val_set.image_dir} have {val_set.channels} channel(s), "
                        f"those in {train_set.image_dir} {train_set.channels}")
    if cfg.crop is None and not same_size(shapes):
        raise DataError(f"training images in {train_set.image_dir} have different sizes; "
                        f"use --crop SIZE")
    return train_set, val_set


def _held_out(cfg: Config, train_set: Dataset) -> Dataset:
    """Move ``val_fraction`` of ``train_set``'s items (at least one) to a validation set."""
    n = len(train_set)
    if n < 2:
        raise DataError(f"no validation folder {split_dirs(cfg.dataroot, cfg.dataset, 'val')[0]} "
                        f"and only {n} training image(s) to hold some out")
    n_val = min(n - 1, max(1, int(round(cfg.val_fraction * n))))
    order = np.random.default_rng(cfg.seed).permutation(n)
    held = set(order[:n_val].tolist())
    val_set = open_split(cfg, "train", False)
    val_set.items = [item for i, item in enumerate(train_set.items) if i in held]
    train_set.items = [item for i, item in enumerate(train_set.items) if i not in held]
    return val_set


def _loader(cfg: Config, info: dist.DistInfo, train_set: Dataset):
    """(loader, distributed sampler or None, generator reseeded every epoch)."""
    sampler = None
    if info.distributed:
        sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=info.world_size,
                                                      rank=info.rank, shuffle=True, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=cfg.num_workers, generator=generator, drop_last=False,
        pin_memory=info.device.type == "cuda", persistent_workers=cfg.num_workers > 0)
    return loader, sampler, generator


def _optimisation(cfg: Config, info: dist.DistInfo, model: torch.nn.Module):
    """(Adam optimizer, step learning-rate schedule, gradient scaler) of the reference recipe;
    a ValueError naming ``--model`` for a model with nothing to train."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"--model {cfg.model} has no trainable parameters (none, or all with "
                         f"requires_grad=False): there is nothing to train")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.lr_decay_epoch),
                                                gamma=cfg.lr_decay_rate)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and info.device.type == "cuda")
    return optimizer, scheduler, scaler


def _check_output(model: torch.nn.Module, name: Optional[str], dataset: Dataset,
                  device: torch.device) -> None:
    """The model must map a training image to one logit map of its size (binary labels);
    a ValueError naming ``--model`` otherwise (before the first epoch)."""
    if len(dataset) == 0:
        return
    dims = model_spatial_dims(model)
    if dims is not None and dims != dataset.spatial_dims:
        raise ValueError(f"--model {name} is a {dims}D model; the data are "
                         f"{dataset.spatial_dims}D (--spatial_dims {dataset.spatial_dims})")
    x = _probe(dataset)[0].to(device)
    was_training = model.training
    model.eval()
    padded, _ = pad_to_multiple(x, size_divisor(model))
    what, axes = ("volumes", "D, H, W") if dataset.spatial_dims == 3 else ("images", "H, W")
    try:
        with torch.no_grad():
            logits = model_logits(model, padded)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"--model {name} must map a batch of {what} (B, C, {axes}) to logits "
                         f"(B, 1, {axes}) of the same size; called as model(x) on x of shape "
                         f"{tuple(padded.shape)} it failed: "
                         f"{' '.join(str(exc).split())}") from exc
    finally:
        model.train(was_training)
    if int(logits.shape[1]) != 1:
        raise ValueError(f"--model {name} must return one logit map (B, 1, {axes}) for the "
                         f"binary labels of the dataset; got {tuple(logits.shape)}")


def _check_term(record: Config, dataset: Dataset, device: torch.device) -> None:
    """Call the second loss term of the run asked for (``record``) once, on a constant
    prediction and the label of one training image (1, 1, H, W), on the training device.

    Settings that the term can only refuse when it is called (``solver="cuda"`` without a
    GPU, ``channel_weights`` for another number of channels than the model's one) then
    stop the run before the first epoch, and before the warm-up of a run with a baseline,
    as a ValueError naming ``--tloss_kwargs``.
    """
    term = build_criterion(record.loss, record.tloss_w, record.tloss_kwargs).extra
    if term is None or len(dataset) == 0:
        return
    target = _probe(dataset)[1].to(device)
    try:
        term(torch.full_like(target, 0.5), target)
    except (TypeError, ValueError, RuntimeError, ImportError) as exc:
        raise ValueError(f"--tloss_kwargs {json.dumps(record.tloss_kwargs)} do not fit "
                         f"{type(term).__name__} in training (one logit map per image): "
                         f"{' '.join(str(exc).split())}") from exc


def _board(cfg: Config, info: dist.DistInfo):
    """The run's TensorBoard logger (rank 0, with ``cfg.tensorboard``), else None."""
    if not cfg.tensorboard or not info.is_main:
        return None
    from . import tensorboard_log

    if not tensorboard_log.tensorboard_available():
        raise ValueError(f"--tensorboard needs the tensorboard package: "
                         f"{tensorboard_log.INSTALL_HINT}")
    return tensorboard_log.TensorBoardLogger(cfg.exp_dir / "tensorboard")


def _log_epoch(board, cfg: Config, row: Dict[str, Any], kept: List[Tuple]) -> None:
    """Losses and learning rate under train/, validation metrics under val/, the figures."""
    epoch = row["epoch"]
    board.scalars({k: v for k, v in row.items() if k in ("loss", "bce", "extra", "lr")}, epoch,
                  prefix="train/")
    board.scalars({k[len("val_"):]: v for k, v in row.items() if k.startswith("val_")}, epoch,
                  prefix="val/")
    figures = cfg.exp_dir / "figures"
    board.image_file("figures/curves", figures / "curves.png", epoch)
    for name, *_ in kept:
        board.image_file(f"figures/val_{name}", figures / f"val_{name}.png", epoch)
    board.flush()


def _log_final_figures(board, cfg: Config, val_set: Dataset) -> None:
    """The matching figure of the end of the run; closes the logger."""
    if len(val_set):
        name = val_set.items[0][0]
        board.image_file("figures/matching", cfg.exp_dir / "figures" / f"matching_{name}.png",
                         cfg.epoch)
    board.close()


def _log_test(board, cfg: Config, summary: Dict[str, Any], out: Path, epoch: int) -> None:
    """The mean metrics of a test run under ``<split>/`` and its figures; closes the logger."""
    board.scalars({k: summary[k] for k in metric_names(cfg.spatial_dims)}, epoch, prefix=f"{cfg.split}/")
    for path in sorted((out / "figures").glob("*.png")):
        board.image_file(f"{cfg.split}/{path.stem}", path, epoch)
    board.close()


def _metrics_csv(cfg: Config, info: dist.DistInfo, start: int, log: _Log,
                 last_row: Dict[str, Any]) -> Path:
    """The per-epoch CSV, continued after epoch ``start``.

    Rows the run is about to redo (a new run with ``--overwrite``, or a resume from a
    checkpoint older than the last logged epoch) are never lost: the file as it was is first
    kept as ``metrics_until_epoch_<N>.csv`` (N its last epoch), then the CSV keeps the rows of
    epochs 1..``start``. ``last_row`` (the row of epoch ``start`` recorded in the run's own
    checkpoint) is appended when the run stopped after the checkpoint and before its row.
    """
    metrics_csv = cfg.exp_dir / "metrics.csv"
    if not info.is_main:
        return metrics_csv
    logged = [int(r["epoch"]) for r in _read_metrics(metrics_csv, math.inf)]
    if logged and max(logged) > start:
        kept = cfg.exp_dir / f"metrics_until_epoch_{max(logged):04d}.csv"
        n = 1
        while kept.exists():
            n += 1
            kept = cfg.exp_dir / f"metrics_until_epoch_{max(logged):04d}_{n}.csv"
        os.replace(metrics_csv, kept)
        log(f"metrics.csv logged epochs up to {max(logged)}; kept as {kept.name}")
        _write_csv(metrics_csv, _read_metrics(kept, start + 1))
    elif last_row and int(last_row.get("epoch", 0)) == start and start not in logged:
        _write_csv(metrics_csv, [last_row], append=True)
        log(f"metrics.csv: the row of epoch {start} restored from its checkpoint")
    return metrics_csv


def _validate_and_save(cfg: Config, info: dist.DistInfo, model, val_set: Dataset,
                       row: Dict[str, Any], t0: float, metrics_csv: Path, optimisation: Tuple,
                       best: Dict[str, float], log: _Log, board=None) -> Dict[str, float]:
    """Rank 0 after an epoch: validate, append the CSV row, save checkpoints, log, figures."""
    epoch = row["epoch"]
    # the plain module: a DDP forward on rank 0 alone would wait for the other ranks
    rows, kept = evaluate(_unwrap(model), val_set, info.device, cfg.amp, cfg.threshold,
                          progress=cfg.progress, keep=cfg.max_figures if cfg.figures else 0,
                          tile=tile_of(cfg), tile_overlap=cfg.tile_overlap)
    if not _unwrap(model).training:
        raise RuntimeError("validation left the model in eval mode")
    names = metric_names(cfg.spatial_dims)
    means = summarize(rows, names)
    row.update({f"val_{k}": means[k] for k in names})
    row["time_s"] = time.time() - t0
    # the checkpoints first (last.pth last), then the row: an interruption in between is
    # repaired on resume from the row recorded in last.pth
    improved = save_checkpoints(cfg, epoch, _unwrap(model), *optimisation, means, best, row)
    _write_csv(metrics_csv, [row], append=True)
    log(f"epoch {epoch}/{cfg.epoch} lr {row['lr']:.2e} loss {row['loss']:.4f} | val dice "
        f"{means['dice']:.4f} acc {means['accuracy']:.4f} cldice {means['cldice']:.4f} "
        f"betti0 {means['betti0_error']:.2f} betti1 {means['betti1_error']:.2f}"
        f"{_betti2_text(means)}"
        f"{' | saved ' + ', '.join(improved) if improved else ''} ({row['time_s']:.1f} s)")
    if cfg.figures:
        _epoch_figures(cfg, metrics_csv, kept, epoch)
    if board is not None:
        _log_epoch(board, cfg, row, kept)
    return means


def _train_epoch(model, loader, criterion, optimizer, scaler, cfg: Config, info: dist.DistInfo,
                 epoch: int) -> Dict[str, float]:
    from tqdm import tqdm

    totals = torch.zeros(4, dtype=torch.float64)  # loss*n, bce*n, extra*n, n
    batches = tqdm(loader, desc=f"epoch {epoch}", leave=False,
                   disable=not (cfg.progress and info.is_main))
    for step, batch in enumerate(batches, 1):
        image = batch["image"].to(info.device, non_blocking=True)
        label = batch["label"].to(info.device, non_blocking=True)
        padded, size = pad_to_multiple(image, size_divisor(model))
        with autocast(info.device, cfg.amp):
            logits = model_logits(model, padded)
        _check_diverged(logits, cfg, epoch, step)
        loss, parts = criterion(crop_to(logits, size), label)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = image.shape[0]
        totals += torch.tensor([float(loss.detach()) * n, parts.get("bce", 0.0) * n,
                                parts.get("extra", parts.get("dice_loss", 0.0)) * n, n],
                               dtype=torch.float64)
        batches.set_postfix(loss=f"{float(loss.detach()):.4f}")
    totals = dist.all_reduce_sum(totals.to(info.device), info).cpu()  # NCCL needs CUDA tensors
    n = max(float(totals[3]), 1.0)
    return {"loss": float(totals[0]) / n, "bce": float(totals[1]) / n, "extra": float(totals[2]) / n}


def _check_diverged(logits: torch.Tensor, cfg: Config, epoch: int, step: int) -> None:
    """A ValueError saying where the training diverged when the model's logits hold NaN
    (instead of the loss terms' or the metrics' errors about a `pred` the user never saw)."""
    if bool(torch.isnan(logits).any()):
        raise ValueError(f"training diverged at epoch {epoch}, batch {step}: the logits of "
                         f"--model {cfg.model} hold NaN; lower --lr ({cfg.lr:g}), or check the "
                         f"model and its input")


def tile_of(cfg: Config) -> Optional[int]:
    """The side of the sliding windows of validation and test: ``cfg.tile``; for volumes
    without one, the training patch ``cfg.crop`` (whole volumes when both are None)."""
    if cfg.tile is None and cfg.spatial_dims == 3:
        return cfg.crop
    return cfg.tile


def _betti2_text(means: Dict[str, float]) -> str:
    """`` betti2 E`` for volumes (nothing for images)."""
    return f" betti2 {means['betti2_error']:.2f}" if "betti2_error" in means else ""


def _probe(dataset: Dataset) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch of one sample to check the model and the loss term on: the first image
    whole (1, 3, H, W) with its label (1, 1, H, W), or the first volume's training patch
    (1, C, p, p, p) with its label (1, 1, p, p, p) (a whole volume can be far larger than
    what the model is trained on)."""
    if dataset.spatial_dims == 3:
        sample = dataset[0]
        return sample["image"][None], sample["label"][None]
    image, label = dataset.load(0)
    return (dataset.as_batch(image),
            torch.from_numpy(np.asarray(label, dtype=np.float32))[None, None])


def _epoch_figures(cfg: Config, metrics_csv: Path, kept: List[Tuple], epoch: int) -> None:
    from .plotting import plot_curves, plot_overlay, plot_volume_overlay

    figures = cfg.exp_dir / "figures"
    plot_curves(metrics_csv, figures / "curves.png")
    overlay = plot_volume_overlay if cfg.spatial_dims == 3 else plot_overlay
    for name, image, prob, label in kept:
        overlay(image, prob, label, figures / f"val_{name}.png",
                     title=f"{name}, epoch {epoch}", threshold=cfg.threshold)


def _matching_figure(cfg: Config, model, dataset: Dataset, device, folder: Path,
                     crit: Any = None) -> None:
    """Persistence diagrams and the matching of the first image (``crit.match``, or SATLoss's)."""
    from .plotting import plot_matching, plot_volume_matching

    if len(dataset) == 0:
        return
    name = dataset.items[0][0]
    image, label = dataset.load(0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        prob = predict_sample(model, dataset, image, device, cfg.amp, tile_of(cfg),
                              cfg.tile_overlap)
    model.train(was_training)
    if dataset.spatial_dims == 3:  # a centred patch: the diagrams of a whole volume are large
        box = _centre_box(label.shape, tile_of(cfg))
        plot_volume_matching(prob[box], label[box], folder / f"matching_{name}.png", crit=crit)
        return
    plot_matching(prob, label, folder / f"matching_{name}.png", image=image, crit=crit)


def _centre_box(shape: Tuple[int, ...], side: Optional[int]) -> Tuple[slice, ...]:
    """The slices of the centred cube of ``side`` voxels (the whole volume for None)."""
    if side is None:
        return tuple(slice(None) for _ in shape)
    return tuple(slice(max(0, (n - side) // 2), max(0, (n - side) // 2) + side) for n in shape)

