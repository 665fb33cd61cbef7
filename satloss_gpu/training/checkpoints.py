"""Checkpoints of a run: where they are, writing them atomically, reading them back, resuming."""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .config import Config

__all__ = ["CheckpointError", "checkpoint_path", "load_checkpoint", "load_weights",
           "save_checkpoints", "resume", "resume_path", "checkpoint_epoch", "copy_checkpoint",
           "write_atomically"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or read; the message names the path."""


def checkpoint_path(cfg: Config, name: Optional[str] = None) -> Path:
    """A checkpoint given as a path, or as a name (best_dice, last, epoch_0005) in the run."""
    name = cfg.checkpoint if name is None else name
    path = Path(name)
    if path.suffix == ".pth" or path.exists() or os.sep in str(name):
        return path
    return cfg.exp_dir / f"{name}.pth"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`train`; :class:`CheckpointError` names the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a satloss checkpoint (no 'model' entry)")
    return state


def load_weights(model: torch.nn.Module, state: Dict[str, Any], path: Any, model_name: str) -> None:
    """Load ``state["model"]`` into ``model``; :class:`CheckpointError` if it does not fit.

    The message is one line naming every kind of mismatch (missing keys, unexpected keys,
    shapes), a few keys of each and their number.
    """
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        mismatch = _mismatch(model.state_dict(), state["model"]) or str(exc).replace("\n", " ")
        raise CheckpointError(f"checkpoint {path} does not fit model {model_name}: "
                              f"{mismatch}") from exc


def _mismatch(expected: Dict[str, Any], found: Any) -> str:
    """``expected`` (the model's state dict) against ``found`` (a checkpoint's), in one line."""
    if not isinstance(found, dict):
        return f"its weights are a {type(found).__name__}, not a state dict"
    shapes = [f"{k} {tuple(found[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
              if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(v.shape)]
    parts = [(f"{len(keys)} {what}", keys) for what, keys in (
        ("missing key(s)", [k for k in expected if k not in found]),
        ("unexpected key(s)", [k for k in found if k not in expected]),
        ("shape(s) differ", shapes)) if keys]
    return "; ".join(f"{label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                     for label, keys in parts)


def _save(state: Dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a crash leaves no half file."""
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file (no half copy on a crash)."""
    write_atomically(Path(target), lambda tmp: shutil.copyfile(source, tmp))


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """``write`` a temporary file next to ``path``, then rename it to ``path``; an
    interruption leaves ``path`` as it was and removes the temporary file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _state(epoch: int, model, best: Dict[str, float], cfg: Config,
           means: Dict[str, float], row: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The weights and the record of a checkpoint; ``model`` is the plain module (not the
    DDP wrapper); ``row``: the epoch's line of ``metrics.csv``."""
    return {"epoch": epoch, "model": model.state_dict(), "best": dict(best),
            "model_name": cfg.model, "model_kwargs": dict(cfg.model_kwargs), "config": asdict(cfg),
            "val_metrics": means, "row": dict(row or {})}


def _resumable(state: Dict[str, Any], optimizer, scheduler, scaler) -> Dict[str, Any]:
    """``state`` with the optimizer, scheduler and gradient-scaler states (``last`` only)."""
    return {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict()}


def save_checkpoints(cfg: Config, epoch: int, model, optimizer, scheduler, scaler,
                     means: Dict[str, float], best: Dict[str, float],
                     row: Optional[Dict[str, Any]] = None) -> List[str]:
    """Write ``best_dice``, ``best_acc``, ``epoch_NNNN`` when due, then ``last``; update ``best``.

    Only ``last`` holds the optimizer, scheduler and gradient-scaler states (it alone is
    resumable); the others hold the weights and the record, a third of the size with Adam.
    ``last`` is written after the others: once it is at an epoch, every checkpoint of that
    epoch is written, so a run interrupted while saving redoes the epoch. Every checkpoint
    records ``row`` (the epoch's line of ``metrics.csv``, written after them).

    Returns the names of the checkpoints written besides ``last``.
    """
    saved = []
    improved = {k: means[k] > best[k] for k in ("dice", "accuracy")}
    for key in improved:
        if improved[key]:
            best[key] = means[key]
    state = _state(epoch, model, best, cfg, means, row)
    for key, name in (("dice", "best_dice"), ("accuracy", "best_acc")):
        if improved[key]:
            _save(state, cfg.exp_dir / f"{name}.pth")
            saved.append(name)
    if cfg.save_every and epoch % cfg.save_every == 0:
        _save(state, cfg.exp_dir / f"epoch_{epoch:04d}.pth")
        saved.append(f"epoch_{epoch:04d}")
    _save(_resumable(state, optimizer, scheduler, scaler), cfg.exp_dir / "last.pth")
    return saved


def checkpoint_epoch(path: Path) -> Optional[int]:
    """The epoch of the checkpoint ``path``, or None when there is no such file."""
    return int(load_checkpoint(path).get("epoch", 0)) if Path(path).is_file() else None


def resume_path(cfg: Config) -> Optional[Path]:
    """The checkpoint a run starts from, or None (a new run from scratch).

    With ``cfg.resume``: ``<exp>/last.pth`` when it exists, else ``--checkpoint`` if given
    (the run had not finished an epoch). Otherwise ``--checkpoint``, or ``last`` when
    ``--start_epoch`` > 0.

    Raises
    ------
    CheckpointError
        ``resume`` with ``start_epoch`` > 0 (the epoch is read from ``last.pth``).
    """
    last = cfg.exp_dir / "last.pth"
    if cfg.resume and cfg.start_epoch > 0:
        raise CheckpointError(f"--resume continues after the epoch of {last}; leave "
                              f"--start_epoch {cfg.start_epoch} out")
    if cfg.resume and last.is_file():
        return last
    if cfg.checkpoint is not None:
        return checkpoint_path(cfg)
    return last if cfg.start_epoch > 0 else None


def resume(cfg: Config, model, optimizer, scheduler, scaler, best: Dict[str, float],
           device: Any, log: Callable[[str], None]) -> Tuple[int, Dict[str, Any]]:
    """Load the checkpoint of :func:`resume_path`; return the epochs done and its
    ``metrics.csv`` row (empty when it is not this run's own, or a new run).

    The run continues after the checkpoint's epoch. ``--start_epoch`` > 0 must equal it
    (:class:`CheckpointError` otherwise: skipping or redoing epochs silently is refused).
    A checkpoint without optimizer state (``best_dice``, ``best_acc``, ``epoch_NNNN``)
    gives the weights only: the optimizer starts afresh, the learning-rate schedule is
    advanced to the checkpoint's epoch.
    """
    path = resume_path(cfg)
    if path is None:
        return 0, {}
    state = load_checkpoint(path, map_location=device)
    done = int(state.get("epoch", 0))
    if cfg.start_epoch > 0 and cfg.start_epoch != done:
        raise CheckpointError(f"--start_epoch {cfg.start_epoch} disagrees with checkpoint {path} "
                              f"(epoch {done}); pass --start_epoch {done} or leave it out")
    if done >= cfg.epoch:
        raise CheckpointError(f"checkpoint {path} is at epoch {done}, not before --epoch "
                              f"{cfg.epoch}: nothing to train; pass a larger --epoch")
    load_weights(model, state, path, cfg.model)
    for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if key in state:
            obj.load_state_dict(state[key])
    if "scheduler" not in state:
        scheduler.last_epoch = done
        for group, lr in zip(optimizer.param_groups, scheduler._get_closed_form_lr()):
            group["lr"] = lr
    best.update(state.get("best", {}))
    kind = "" if "optimizer" in state else " (weights only: fresh optimizer state)"
    log(f"resumed from {path} (epoch {done}){kind}; continuing after epoch {done}")
    own = Path(path).resolve().parent == cfg.exp_dir.resolve()
    return done, dict(state.get("row") or {}) if own else {}
