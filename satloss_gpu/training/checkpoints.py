"""Checkpoints of a run: where they are, writing them atomically, reading them back, resuming."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from .config import Config

__all__ = ["CheckpointError", "checkpoint_path", "load_checkpoint", "load_weights",
           "save_checkpoints", "resume"]


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
    """Load ``state["model"]`` into ``model``; :class:`CheckpointError` if it does not fit."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit model {model_name}: "
                              f"{str(exc).splitlines()[0]}") from exc


def _save(state: Dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a crash leaves no half file."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _state(epoch: int, model, best: Dict[str, float], cfg: Config,
           means: Dict[str, float]) -> Dict[str, Any]:
    """The weights and the record of a checkpoint; ``model`` is the plain module (not the
    DDP wrapper)."""
    return {"epoch": epoch, "model": model.state_dict(), "best": dict(best),
            "model_name": cfg.model, "model_kwargs": dict(cfg.model_kwargs), "config": asdict(cfg),
            "val_metrics": means}


def _resumable(state: Dict[str, Any], optimizer, scheduler, scaler) -> Dict[str, Any]:
    """``state`` with the optimizer, scheduler and gradient-scaler states (``last`` only)."""
    return {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict()}


def save_checkpoints(cfg: Config, epoch: int, model, optimizer, scheduler, scaler,
                     means: Dict[str, float], best: Dict[str, float]) -> List[str]:
    """Write ``last`` (and ``best_dice``, ``best_acc``, ``epoch_NNNN`` when due); update ``best``.

    Only ``last`` holds the optimizer, scheduler and gradient-scaler states (it alone is
    resumable); the others hold the weights and the record, a third of the size with Adam.

    Returns the names of the checkpoints written besides ``last``.
    """
    saved = []
    improved = {k: means[k] > best[k] for k in ("dice", "accuracy")}
    for key in improved:
        if improved[key]:
            best[key] = means[key]
    state = _state(epoch, model, best, cfg, means)
    for key, name in (("dice", "best_dice"), ("accuracy", "best_acc")):
        if improved[key]:
            _save(state, cfg.exp_dir / f"{name}.pth")
            saved.append(name)
    _save(_resumable(state, optimizer, scheduler, scaler), cfg.exp_dir / "last.pth")
    if cfg.save_every and epoch % cfg.save_every == 0:
        _save(state, cfg.exp_dir / f"epoch_{epoch:04d}.pth")
        saved.append(f"epoch_{epoch:04d}")
    return saved


def resume(cfg: Config, model, optimizer, scheduler, scaler, best: Dict[str, float],
           device: Any, log: Callable[[str], None]) -> int:
    """Load ``--checkpoint`` (or ``last`` when ``--start_epoch`` > 0); return the epochs done.

    The run continues after the checkpoint's epoch. ``--start_epoch`` > 0 must equal it
    (:class:`CheckpointError` otherwise: skipping or redoing epochs silently is refused).
    A checkpoint without optimizer state (``best_dice``, ``best_acc``, ``epoch_NNNN``)
    gives the weights only: the optimizer starts afresh, the learning-rate schedule is
    advanced to the checkpoint's epoch.
    """
    if cfg.checkpoint is None and cfg.start_epoch <= 0:
        return 0
    path = checkpoint_path(cfg, cfg.checkpoint or "last")
    state = load_checkpoint(path, map_location=device)
    done = int(state.get("epoch", 0))
    if cfg.start_epoch > 0 and cfg.start_epoch != done:
        raise CheckpointError(f"--start_epoch {cfg.start_epoch} disagrees with checkpoint {path} "
                              f"(epoch {done}); pass --start_epoch {done} or leave it out")
    if done >= cfg.epoch:
        raise CheckpointError(f"checkpoint {path} is at epoch {done}, not before --epoch "
                              f"{cfg.epoch}: nothing to train")
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
    return done
