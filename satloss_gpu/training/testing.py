"""Testing a checkpoint on a split of images or volumes.

:func:`test` loads a checkpoint and writes the binary and grey predictions (PNG for images;
``.npy`` volumes, uint8, for volumes), per-sample metrics (CSV) and their means (JSON) to
``<exp>/<split>_<checkpoint>/``. Volumes are predicted whole by sliding windows of the
training patch (``--tile``), and their figures are maximum-intensity projections.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..metrics import metric_names, summarize
from . import distributed as dist
from .checkpoints import CheckpointError, checkpoint_path, load_checkpoint, load_weights
from .config import Config
from .inference import predict_sample, sample_metrics
from .loop import _board, _Log, _log_test, _matching_figure, _write_csv, check_model_dims, \
    open_split, tile_of
from .models import build_model
from .paths import output_dir

__all__ = ["test"]

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
        stale += sorted((out / sub).glob("*.png")) + sorted((out / sub).glob("*.npy"))
    for path in stale:
        if path.is_file():
            path.unlink()


def _test(cfg: Config, info: dist.DistInfo) -> Dict[str, Any]:
    from tqdm import tqdm

    from .plotting import plot_overlay, plot_volume_overlay

    check_model_dims(cfg.model, cfg.spatial_dims)
    path = checkpoint_path(cfg, cfg.checkpoint or cfg.test_model)
    dataset = open_split(cfg, cfg.split, False)
    dataset.check()
    state = load_checkpoint(path, map_location=info.device)
    _check_dims(state, path, cfg.spatial_dims)
    model_name = state.get("model_name", cfg.model)
    if cfg.model is not None and model_name != cfg.model:
        raise CheckpointError(f"checkpoint {path} holds a {model_name}, not the --model "
                              f"{cfg.model} asked for; pass --model {model_name} or leave it out")
    model_kwargs = state.get("model_kwargs", cfg.model_kwargs)
    model = build_model(model_name, in_channels=dataset.channels,
                        kwargs=model_kwargs).to(info.device)
    load_weights(model, state, path, model_name)
    model.eval()
    out = _test_folder(cfg, path)
    for sub in _TEST_SUBFOLDERS:
        output_dir(out / sub, "--exp_root/--exp")
    (out / "config_test.json").write_text(cfg.to_json())
    log = _Log(cfg.exp_dir / "test.log", True)
    what = "volumes" if cfg.spatial_dims == 3 else "images"
    log(f"testing {path} (epoch {state.get('epoch', '?')}) on {len(dataset)} {what} of "
        f"{dataset.image_dir}")
    overlay = plot_volume_overlay if cfg.spatial_dims == 3 else plot_overlay
    rows = []
    with torch.no_grad():
        for i in tqdm(range(len(dataset)), desc=cfg.split, disable=not cfg.progress):
            name = dataset.items[i][0]
            image, label = dataset.load(i)
            prob = predict_sample(model, dataset, image, info.device, cfg.amp, tile_of(cfg),
                                  cfg.tile_overlap)
            _save_prediction(out, name, prob, cfg.threshold, cfg.spatial_dims)
            row = {"name": name, **sample_metrics(prob, label, cfg.threshold, cfg.spatial_dims)}
            rows.append(row)
            if cfg.figures and i < cfg.max_figures:
                overlay(image, prob, label, out / "figures" / f"{name}.png", title=name,
                        threshold=cfg.threshold)
    _write_csv(out / "metrics.csv", rows)
    names = metric_names(cfg.spatial_dims)
    summary = {**summarize(rows, names), "checkpoint": str(path), "epoch": state.get("epoch"),
               "split": cfg.split, "output": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.figures and rows:
        _matching_figure(cfg, model, dataset, info.device, out / "figures")
    board = _board(cfg, info)
    if board is not None:
        _log_test(board, cfg, summary, out, state.get("epoch") or 0)
    log(" ".join(f"{k} {summary[k]:.4f}" for k in names) + f" -> {out}")
    return summary


def _check_dims(state: Dict[str, Any], path: Path, spatial_dims: int) -> None:
    """A CheckpointError when the checkpoint was trained on the other kind of data."""
    trained = int((state.get("config") or {}).get("spatial_dims", 2))
    if trained != spatial_dims:
        kind = {2: "images", 3: "volumes"}
        raise CheckpointError(f"checkpoint {path} was trained on {kind[trained]} "
                              f"(--spatial_dims {trained}); pass --spatial_dims {trained} to "
                              f"test it")


def _save_prediction(out: Path, name: str, prob: np.ndarray, threshold: float,
                     spatial_dims: int) -> None:
    """The grey (0..255) and binary predictions of one sample: PNG images (binary 0/255), or
    uint8 ``.npy`` volumes (binary 0/1, as the volume layout's labels)."""
    grey = np.round(prob * 255).astype(np.uint8)
    binary = (prob > threshold).astype(np.uint8)
    if spatial_dims == 3:
        np.save(out / "pred_grey" / f"{name}.npy", grey)
        np.save(out / "pred_bin" / f"{name}.npy", binary)
        return
    from .plotting import save_png

    save_png(out / "pred_grey" / f"{name}.png", grey)
    save_png(out / "pred_bin" / f"{name}.png", binary * 255)
