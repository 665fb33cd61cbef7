"""Training and testing of segmentation models with topological losses.

:func:`train` follows the reference implementation's recipe: Adam with weight
decay, the learning rate multiplied by ``lr_decay_rate`` every ``lr_decay_epoch`` epochs,
loss ``BCE + tloss_w * topological loss``, validation after every epoch, checkpoints of the
best Dice, the best accuracy and the last epoch. The model is put back in training mode
after every validation. Runs resume from a checkpoint with the optimizer, scheduler and
gradient-scaler states. Under ``torchrun`` the model is wrapped in DistributedDataParallel
and the training set is split with a DistributedSampler; rank 0 validates and writes.

:func:`test` loads a checkpoint and writes binary and grey predictions (PNG), per-image
metrics (CSV) and their means (JSON).

Everything goes to ``<exp_root>/<exp>/``::

    config.json        the settings of the run (``--config`` reruns it)
    train.log          the log (test.log in test mode)
    metrics.csv        one row per epoch: losses, learning rate, validation metrics, time
    best_dice.pth, best_acc.pth, last.pth, epoch_NNNN.pth   checkpoints
    figures/           training curves, validation overlays, persistence matchings
    test_<model>/      pred_bin/, pred_grey/, metrics.csv, summary.json, config_test.json,
                       figures/ (an earlier test's folder is replaced with --overwrite only)
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
import torch.nn.functional as F

from ..metrics import METRIC_NAMES, segmentation_metrics, summarize
from . import distributed as dist
from .checkpoints import (
    CheckpointError,
    checkpoint_epoch,
    checkpoint_path,
    load_checkpoint,
    load_weights,
    resume,
    save_checkpoints,
)
from .config import LOSSES, Config
from .data import DataError, SegmentationDataset, same_size, split_dirs
from .paths import output_dir
from .models import build_model, model_logits, pad_to_multiple, size_divisor

__all__ = ["Config", "LOSSES", "train", "test", "evaluate", "predict", "build_criterion",
           "load_checkpoint", "CheckpointError"]

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


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if enabled and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def predict(model: torch.nn.Module, image: torch.Tensor, amp: bool = False,
            tile: Optional[int] = None, tile_overlap: float = 0.25) -> torch.Tensor:
    """Probabilities for a batch of images of any size (reflect-padded to the model's divisor).

    Parameters
    ----------
    model : torch.nn.Module
        A built-in U-Net or any model returning logits (see :func:`model_logits`).
    image : (B, C, H, W) float tensor, on the model's device
    amp : bool, default False
        Mixed precision.
    tile : int, optional
        Images larger than ``tile`` on either side are predicted by sliding windows of
        ``tile`` x ``tile`` pixels blended with Gaussian weights
        (:func:`~satloss_gpu.training.sliding_window.sliding_window_inference`), so the
        network never holds the whole image's activations.
    tile_overlap : float, default 0.25
        Overlap of neighbouring windows, in [0, 1).

    Returns
    -------
    (B, K, H, W) float32 tensor in [0, 1]
    """
    if tile is not None and max(int(image.shape[-2]), int(image.shape[-1])) > tile:
        from .sliding_window import sliding_window_inference

        return sliding_window_inference(lambda x: _whole_image(model, x, amp), image, tile,
                                        overlap=tile_overlap)
    return _whole_image(model, image, amp)


def _whole_image(model: torch.nn.Module, image: torch.Tensor, amp: bool) -> torch.Tensor:
    """Probabilities of whole images, padded to the model's divisor and cropped back."""
    padded, (h, w) = pad_to_multiple(image, size_divisor(model))
    with _autocast(image.device, amp):
        logits = model_logits(model, padded)
    return torch.sigmoid(logits.float()[..., :h, :w])


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SegmentationDataset, device: torch.device,
             amp: bool = False, threshold: float = 0.5, progress: bool = False,
             keep: int = 0, desc: str = "val", tile: Optional[int] = None,
             tile_overlap: float = 0.25) -> Tuple[List[Dict[str, Any]], List[Tuple]]:
    """Metrics of every image of ``dataset``, one image at a time (by windows larger than
    ``tile``, see :func:`predict`).

    The model is put in eval mode and back in the mode it was in.

    Returns
    -------
    rows : list of dict
        ``name`` and every metric of :data:`satloss_gpu.metrics.METRIC_NAMES`.
    kept : list of (name, image (H, W, 3), probabilities (H, W), label (H, W))
        The first ``keep`` images, for figures.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    rows, kept = [], []
    try:
        for i in tqdm(range(len(dataset)), desc=desc, leave=False, disable=not progress):
            image, label = dataset.load(i)
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
            prob = predict(model, x, amp, tile, tile_overlap)[0, 0].cpu().numpy()
            row = {"name": dataset.items[i][0]}
            row.update(segmentation_metrics(prob, label, threshold=threshold))
            rows.append(row)
            if len(kept) < keep:
                kept.append((dataset.items[i][0], image, prob, label))
    finally:
        model.train(was_training)
    return rows, kept


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


def _dataset(cfg: Config, split: str, train: bool) -> SegmentationDataset:
    return SegmentationDataset(cfg.dataroot, cfg.dataset, split, crop=cfg.crop if train else None,
                               augment=cfg.augment and train, seed=cfg.seed)


def _ensure_data(cfg: Config, log: _Log, info: dist.DistInfo) -> None:
    """Generate a missing built-in synthetic dataset when asked to (rank 0 only); any other
    missing dataset is a :class:`DataError` (on every rank)."""
    from .synthetic import dataset_to_generate, make_dataset

    kind = dataset_to_generate(cfg.dataroot, cfg.dataset, cfg.make_data)
    if kind is not None and info.is_main:
        params = dict(kind=kind, n_train=64, n_val=8, n_test=8, size=(96, 96), seed=cfg.seed)
        params.update(cfg.extra.get("make_data", {}))
        log(f"generating the synthetic dataset {Path(cfg.dataroot) / cfg.dataset} ({params})")
        make_dataset(cfg.dataroot, cfg.dataset, **params)
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
    criterion = build_criterion(cfg.loss, cfg.tloss_w, cfg.tloss_kwargs)
    finished = _finished_run(cfg)
    if finished is not None:
        return finished
    info = dist.init(cfg.device, cfg.gpu_id)
    try:
        return _train(cfg, info, criterion, record or cfg)
    finally:
        dist.cleanup(info)


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
    model = build_model(cfg.model, kwargs=cfg.model_kwargs).to(info.device)
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
        f"{_schedule_text(cfg)}, {len(train_set)} train / {len(val_set)} val images, "
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


def _training_sets(cfg: Config) -> Tuple[SegmentationDataset, SegmentationDataset]:
    """The checked training and validation sets (:class:`DataError` for unusable data).

    Without a ``val`` folder, ``val_fraction`` of the training images (at least one, chosen
    by ``seed``) are held out for validation and not trained on.
    """
    train_set = _dataset(cfg, "train", True)
    if split_dirs(cfg.dataroot, cfg.dataset, "val")[0].exists():
        val_set = _dataset(cfg, "val", False)
    else:
        val_set = _held_out(cfg, train_set)
    shapes = train_set.check(require_foreground=True)
    val_set.check()
    if cfg.crop is None and not same_size(shapes):
        raise DataError(f"training images in {train_set.image_dir} have different sizes; "
                        f"use --crop SIZE")
    return train_set, val_set


def _held_out(cfg: Config, train_set: SegmentationDataset) -> SegmentationDataset:
    """Move ``val_fraction`` of ``train_set``'s items (at least one) to a validation set."""
    n = len(train_set)
    if n < 2:
        raise DataError(f"no validation folder {split_dirs(cfg.dataroot, cfg.dataset, 'val')[0]} "
                        f"and only {n} training image(s) to hold some out")
    n_val = min(n - 1, max(1, int(round(cfg.val_fraction * n))))
    order = np.random.default_rng(cfg.seed).permutation(n)
    held = set(order[:n_val].tolist())
    val_set = _dataset(cfg, "train", False)
    val_set.items = [item for i, item in enumerate(train_set.items) if i in held]
    train_set.items = [item for i, item in enumerate(train_set.items) if i not in held]
    return val_set


def _loader(cfg: Config, info: dist.DistInfo, train_set: SegmentationDataset):
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


def _check_output(model: torch.nn.Module, name: Optional[str], dataset: SegmentationDataset,
                  device: torch.device) -> None:
    """The model must map a training image to one logit map of its size (binary labels);
    a ValueError naming ``--model`` otherwise (before the first epoch)."""
    if len(dataset) == 0:
        return
    image, _ = dataset.load(0)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    was_training = model.training
    model.eval()
    padded, _ = pad_to_multiple(x, size_divisor(model))
    try:
        with torch.no_grad():
            logits = model_logits(model, padded)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"--model {name} must map a batch of images (B, C, H, W) to logits "
                         f"(B, 1, H, W) of the same size; called as model(x) on x of shape "
                         f"{tuple(padded.shape)} it failed: "
                         f"{' '.join(str(exc).split())}") from exc
    finally:
        model.train(was_training)
    if int(logits.shape[1]) != 1:
        raise ValueError(f"--model {name} must return one logit map (B, 1, H, W) for the "
                         f"binary labels of the dataset; got {tuple(logits.shape)}")


def _check_term(record: Config, dataset: SegmentationDataset, device: torch.device) -> None:
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
    _, label = dataset.load(0)
    target = torch.from_numpy(np.asarray(label, dtype=np.float32))[None, None].to(device)
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


def _log_final_figures(board, cfg: Config, val_set: SegmentationDataset) -> None:
    """The matching figure of the end of the run; closes the logger."""
    if len(val_set):
        name = val_set.items[0][0]
        board.image_file("figures/matching", cfg.exp_dir / "figures" / f"matching_{name}.png",
                         cfg.epoch)
    board.close()


def _log_test(board, cfg: Config, summary: Dict[str, Any], out: Path, epoch: int) -> None:
    """The mean metrics of a test run under ``<split>/`` and its figures; closes the logger."""
    board.scalars({k: summary[k] for k in METRIC_NAMES}, epoch, prefix=f"{cfg.split}/")
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


def _validate_and_save(cfg: Config, info: dist.DistInfo, model, val_set: SegmentationDataset,
                       row: Dict[str, Any], t0: float, metrics_csv: Path, optimisation: Tuple,
                       best: Dict[str, float], log: _Log, board=None) -> Dict[str, float]:
    """Rank 0 after an epoch: validate, append the CSV row, save checkpoints, log, figures."""
    epoch = row["epoch"]
    # the plain module: a DDP forward on rank 0 alone would wait for the other ranks
    rows, kept = evaluate(_unwrap(model), val_set, info.device, cfg.amp, cfg.threshold,
                          progress=cfg.progress, keep=cfg.max_figures if cfg.figures else 0,
                          tile=cfg.tile, tile_overlap=cfg.tile_overlap)
    if not _unwrap(model).training:
        raise RuntimeError("validation left the model in eval mode")
    means = summarize(rows)
    row.update({f"val_{k}": means[k] for k in METRIC_NAMES})
    row["time_s"] = time.time() - t0
    # the checkpoints first (last.pth last), then the row: an interruption in between is
    # repaired on resume from the row recorded in last.pth
    improved = save_checkpoints(cfg, epoch, _unwrap(model), *optimisation, means, best, row)
    _write_csv(metrics_csv, [row], append=True)
    log(f"epoch {epoch}/{cfg.epoch} lr {row['lr']:.2e} loss {row['loss']:.4f} | val dice "
        f"{means['dice']:.4f} acc {means['accuracy']:.4f} cldice {means['cldice']:.4f} "
        f"betti0 {means['betti0_error']:.2f} betti1 {means['betti1_error']:.2f}"
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
        padded, (h, w) = pad_to_multiple(image, size_divisor(model))
        with _autocast(info.device, cfg.amp):
            logits = model_logits(model, padded)
        _check_diverged(logits, cfg, epoch, step)
        loss, parts = criterion(logits[..., :h, :w], label)
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


def _epoch_figures(cfg: Config, metrics_csv: Path, kept: List[Tuple], epoch: int) -> None:
    from .plotting import plot_curves, plot_overlay

    figures = cfg.exp_dir / "figures"
    plot_curves(metrics_csv, figures / "curves.png")
    for name, image, prob, label in kept:
        plot_overlay(image, prob, label, figures / f"val_{name}.png",
                     title=f"{name}, epoch {epoch}", threshold=cfg.threshold)


def _matching_figure(cfg: Config, model, dataset: SegmentationDataset, device, folder: Path,
                     crit: Any = None) -> None:
    """Persistence diagrams and the matching of the first image (``crit.match``, or SATLoss's)."""
    from .plotting import plot_matching

    if len(dataset) == 0:
        return
    name = dataset.items[0][0]
    image, label = dataset.load(0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
        prob = predict(model, x, cfg.amp, cfg.tile, cfg.tile_overlap)[0, 0].cpu().numpy()
    model.train(was_training)
    plot_matching(prob, label, folder / f"matching_{name}.png", image=image, crit=crit)


# --------------------------------------------------------------------------- testing
def test(cfg: Config) -> Dict[str, Any]:
    """Evaluate a checkpoint on ``cfg.split``; write predictions, per-image metrics, summary.

    Returns
    -------
    dict
        The summary (mean of every metric, number of images, checkpoint, output folder).
    """
    info = dist.init(cfg.device, cfg.gpu_id)
    try:
        if not info.is_main:
            return {}
        return _test(cfg, info)
    finally:
        dist.cleanup(info)


test.__test__ = False  # not a pytest test


def _test_folder(cfg: Config, checkpoint: Path) -> Path:
    """``<exp>/<split>_<checkpoint name>``; a ValueError when it holds the results of an
    earlier test and ``cfg.overwrite`` is not set (they are never replaced unasked); with
    it, the earlier test's outputs are removed first."""
    tag = Path(checkpoint).stem if cfg.checkpoint else cfg.test_model
    out = cfg.exp_dir / f"{cfg.split}_{tag}"
    held = sorted(p.name for p in out.glob("*") if p.is_file() or any(p.iterdir())) \
        if out.is_dir() else []
    if held and not cfg.overwrite:
        raise ValueError(f"test folder {out} already holds results ({', '.join(held[:3])}"
                         f"{', ...' if len(held) > 3 else ''}); pass --overwrite to replace them")
    if held:
        _remove_test_outputs(out)
    return out


#: What a test writes in its folder: PNGs in these subfolders, and these files.
_TEST_SUBFOLDERS = ("pred_bin", "pred_grey", "figures")
_TEST_FILES = ("metrics.csv", "summary.json", "config_test.json")


def _remove_test_outputs(out: Path) -> None:
    """Remove the files an earlier test wrote in ``out`` (``--overwrite``), so that the
    folder holds only the new test's predictions and figures, none of images it did not
    test; other files are kept."""
    stale = [out / name for name in _TEST_FILES]
    for sub in _TEST_SUBFOLDERS:
        stale += sorted((out / sub).glob("*.png"))
    for path in stale:
        if path.is_file():
            path.unlink()


def _test(cfg: Config, info: dist.DistInfo) -> Dict[str, Any]:
    from tqdm import tqdm

    from .plotting import plot_overlay, save_png

    path = checkpoint_path(cfg, cfg.checkpoint or cfg.test_model)
    dataset = _dataset(cfg, cfg.split, False)
    dataset.check()
    state = load_checkpoint(path, map_location=info.device)
    model_name = state.get("model_name", cfg.model)
    if cfg.model is not None and model_name != cfg.model:
        raise CheckpointError(f"checkpoint {path} holds a {model_name}, not the --model "
                              f"{cfg.model} asked for; pass --model {model_name} or leave it out")
    model_kwargs = state.get("model_kwargs", cfg.model_kwargs)
    model = build_model(model_name, kwargs=model_kwargs).to(info.device)
    load_weights(model, state, path, model_name)
    model.eval()
    out = _test_folder(cfg, path)
    for sub in _TEST_SUBFOLDERS:
        output_dir(out / sub, "--exp_root/--exp")
    (out / "config_test.json").write_text(cfg.to_json())
    log = _Log(cfg.exp_dir / "test.log", True)
    log(f"testing {path} (epoch {state.get('epoch', '?')}) on {len(dataset)} images of "
        f"{dataset.image_dir}")
    rows = []
    with torch.no_grad():
        for i in tqdm(range(len(dataset)), desc=cfg.split, disable=not cfg.progress):
            name = dataset.items[i][0]
            image, label = dataset.load(i)
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(info.device)
            prob = predict(model, x, cfg.amp, cfg.tile, cfg.tile_overlap)[0, 0].cpu().numpy()
            save_png(out / "pred_grey" / f"{name}.png", np.round(prob * 255).astype(np.uint8))
            save_png(out / "pred_bin" / f"{name}.png", (prob > cfg.threshold).astype(np.uint8) * 255)
            row = {"name": name, **segmentation_metrics(prob, label, threshold=cfg.threshold)}
            rows.append(row)
            if cfg.figures and i < cfg.max_figures:
                plot_overlay(image, prob, label, out / "figures" / f"{name}.png", title=name,
                             threshold=cfg.threshold)
    _write_csv(out / "metrics.csv", rows)
    summary = {**summarize(rows), "checkpoint": str(path), "epoch": state.get("epoch"),
               "split": cfg.split, "output": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.figures and rows:
        _matching_figure(cfg, model, dataset, info.device, out / "figures")
    board = _board(cfg, info)
    if board is not None:
        _log_test(board, cfg, summary, out, state.get("epoch") or 0)
    log(" ".join(f"{k} {summary[k]:.4f}" for k in METRIC_NAMES) + f" -> {out}")
    return summary
