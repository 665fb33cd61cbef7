"""The warm-up recipe with its baseline: one BCE warm-up, then BCE alone and BCE + the
topological term continued from the same checkpoint, compared side by side.

A topological loss trained from scratch hurts: at initialisation its gradient dominates BCE
and is unrelated to it. After a BCE warm-up, BCE + 0.01 SATLoss halved the validation beta0
error of a BCE control trained as long (vessels, 3 seeds; see the design notes, section 7).
:func:`train_with_baseline` trains that recipe and its control so that every run of it shows
the comparison::

    <exp>/                 the run with the topological term: epochs 1..tloss_start are
                           the warm-up (BCE alone), then the term ramps in
    <exp>/warmup.pth       the checkpoint both arms continue from (end of the warm-up)
    <exp>/baseline_bce/    BCE alone from warmup.pth to the same last epoch
    <exp>/figures/baseline_betti.png   validation Betti errors per epoch, both arms
    <exp>/baseline.json    the last epoch's validation metrics of both arms
    <exp>/config.json      the settings asked for (``--config`` reruns the whole recipe)

An interrupted run continues with ``resume=True`` (``satloss train --exp NAME --resume``):
each step finds where it stopped (the warm-up and the run with the topological term in
``<exp>/last.pth``, the control in ``<exp>/baseline_bce/last.pth``) and continues, so the
results and files are those of an uninterrupted run.
"""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List

from .checkpoints import (CheckpointError, checkpoint_epoch, checkpoint_path, copy_checkpoint,
                          write_atomically)
from .config import Config

__all__ = ["train_with_baseline", "follows_recipe", "COMPARED", "CONTROL", "WARMUP"]

#: The validation metrics compared (columns ``val_<name>`` of ``metrics.csv``; the H2 ones
#: for volumes only).
COMPARED = ("dice", "cldice", "betti0_error", "betti1_error", "betti2_error", "betti0_signed",
            "betti1_signed", "betti2_signed", "betti_matching_error")
#: The control's run folder, inside the run's.
CONTROL = "baseline_bce"
#: The checkpoint at the end of the warm-up, inside the run's folder.
WARMUP = "warmup.pth"


def follows_recipe(cfg: Config) -> bool:
    """Whether ``satloss train`` runs ``cfg`` with :func:`train_with_baseline`: ``baseline``,
    a loss with a second term and 0 < :meth:`~Config.warmup` < ``epoch``."""
    return bool(cfg.baseline) and _has_warm_up(cfg)


def _has_warm_up(cfg: Config) -> bool:
    return cfg.loss not in ("bce", "dice") and 0 < cfg.warmup() < cfg.epoch


def train_with_baseline(cfg: Config) -> Dict[str, Any]:
    """Train ``cfg`` (a loss with a second term, 0 < ``cfg.warmup()`` < ``cfg.epoch``) and its
    BCE control; with ``cfg.resume``, continue each where an interrupted run stopped.

    Every setting (the second term's options included) is checked before the warm-up.

    Returns
    -------
    dict
        The run with the topological term as :func:`~satloss_gpu.training.train.train`
        returns it (``exp_dir``, ``best_dice``, ``best_accuracy``, ``epochs``), ``baseline``:
        the same for the BCE control, and ``comparison``: for ``cfg.loss`` and ``"bce"``,
        the last epoch's validation metrics of :data:`COMPARED`.
    """
    from .train import build_criterion, train

    warmup = _check(cfg)
    build_criterion(cfg.loss, cfg.tloss_w, cfg.tloss_kwargs)
    arm = replace(cfg, tloss_start=warmup, baseline=False, resume=True, checkpoint=None,
                  overwrite=False)
    _warm_up(cfg, arm, warmup)
    result = train(arm, record=cfg)
    control = replace(arm, loss="bce", tloss_kwargs={}, exp=str(Path(cfg.exp) / CONTROL),
                      make_data=False, resume=cfg.resume,
                      checkpoint=str(cfg.exp_dir / WARMUP))
    baseline = train(control)
    comparison = _compare({cfg.loss: cfg.exp_dir, "bce": control.exp_dir})
    _write_text(cfg.exp_dir / "baseline.json", json.dumps(comparison, indent=2))
    if cfg.figures:
        from .plotting import plot_betti_comparison

        plot_betti_comparison({cfg.loss: cfg.exp_dir / "metrics.csv",
                               "bce": control.exp_dir / "metrics.csv"}, warmup,
                              cfg.exp_dir / "figures" / "baseline_betti.png")
    print(comparison_table(comparison, cfg.epoch, warmup))
    return {**result, "baseline": baseline, "comparison": comparison}


def _check(cfg: Config) -> int:
    """The warm-up's epochs; a ValueError for settings the recipe cannot follow."""
    warmup = cfg.warmup()
    if not _has_warm_up(cfg):
        raise ValueError(f"a baseline comparison needs a loss with a second term and 0 < "
                         f"tloss_start < epoch; got loss {cfg.loss!r}, tloss_start "
                         f"{warmup}, epoch {cfg.epoch}")
    if cfg.start_epoch > 0:
        raise ValueError(f"--start_epoch {cfg.start_epoch}: a run with a BCE baseline has "
                         f"several arms; continue it with --resume (each arm continues where "
                         f"it stopped), or train a single run with --no-baseline")
    start = None if cfg.checkpoint is None else checkpoint_epoch(checkpoint_path(cfg))
    if start is not None and start >= warmup:
        raise CheckpointError(f"--checkpoint {cfg.checkpoint} is at epoch {start}: the "
                              f"{warmup}-epoch warm-up (--tloss_start) starts from it, so it "
                              f"must be before epoch {warmup}")
    return warmup


def _warm_up(cfg: Config, arm: Config, warmup: int) -> None:
    """BCE alone to epoch ``warmup`` in ``<exp>``, then ``<exp>/warmup.pth`` (continuing
    from ``<exp>/last.pth`` with ``cfg.resume``; nothing to do when it exists)."""
    from .train import train

    warm, last = cfg.exp_dir / WARMUP, cfg.exp_dir / "last.pth"
    done = checkpoint_epoch(warm) if cfg.resume else None
    if done is None:
        done = checkpoint_epoch(last) if cfg.resume else None
        if done is None or done < warmup:
            train(replace(arm, epoch=warmup, loss="bce", tloss_kwargs={}, resume=cfg.resume,
                          checkpoint=cfg.checkpoint, overwrite=cfg.overwrite), record=cfg)
            done = warmup
        if done == warmup:
            copy_checkpoint(last, warm)
    if done != warmup:
        raise CheckpointError(f"--resume: the warm-up of {cfg.exp_dir} ended at epoch {done} "
                              f"(in {warm if warm.is_file() else last}), not at the "
                              f"--tloss_start {warmup} asked for; resume with the run's "
                              f"settings (--config {cfg.exp_dir / 'config.json'})")


def _compare(runs: Dict[str, Path]) -> Dict[str, Dict[str, float]]:
    """The last epoch's validation metrics of :data:`COMPARED` for each run folder."""
    rows = {arm: _last_row(folder / "metrics.csv") for arm, folder in runs.items()}
    return {arm: {k: float(row[f"val_{k}"]) for k in COMPARED if f"val_{k}" in row}
            for arm, row in rows.items()}


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file (no half file on an interruption)."""
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _last_row(metrics_csv: Path) -> Dict[str, str]:
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        rows: List[Dict[str, str]] = list(csv.DictReader(f))
    return rows[-1]


def comparison_table(comparison: Dict[str, Dict[str, float]], epoch: int, warmup: int) -> str:
    """The validation metrics of both arms, one column each, as text."""
    arms = list(comparison)
    lines = [f"validation after epoch {epoch} (both arms continue the same {warmup}-epoch "
             f"BCE warm-up; lower Betti errors are better)",
             f"{'metric':<22}" + "".join(f"{arm:>12}" for arm in arms)]
    for key in COMPARED:
        if all(key in comparison[a] for a in arms):
            lines.append(f"{key:<22}" + "".join(f"{comparison[a][key]:>12.3f}" for a in arms))
    return "\n".join(lines)
