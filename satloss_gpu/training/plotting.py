"""Figures, saved as PNG with Matplotlib's Agg backend (no display needed).

- :func:`plot_curves`: training curves from a run's ``metrics.csv``;
- :func:`plot_overlay`: image, probabilities and the errors of the binary prediction in
  colour (true positives white, false positives red, false negatives blue);
- :func:`plot_persistence`: the persistence diagram of an image with the critical pixels
  of its most persistent features;
- :func:`plot_matching`: the SATLoss matching between the diagrams of a prediction and its
  target, matched points joined by lines, points sent to the diagonal joined to it, and the
  matched birth pixels drawn on the image (as in the matching figure of the SATLoss paper).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["save_png", "plot_curves", "plot_overlay", "error_map", "plot_persistence",
           "plot_matching", "plot_volume_overlay", "plot_volume_matching"]

_DIM_COLOURS = ("tab:blue", "tab:orange", "tab:green")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: str | Path) -> Path:
    from .paths import output_file

    try:
        path = output_file(path, "`path`")
    except ValueError:
        _plt().close(fig)
        raise
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG."""
    import imageio.v3 as iio

    from .paths import output_file

    path = output_file(path, "`path`")
    iio.imwrite(path, np.asarray(array, dtype=np.uint8))
    return path


def plot_curves(metrics_csv: str | Path, path: str | Path) -> Path:
    """Loss, learning rate and validation metrics per epoch from a ``metrics.csv``."""
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if rows:
        epoch = [int(r["epoch"]) for r in rows]

        def col(name):
            return [float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows]

        axes[0].plot(epoch, col("loss"), "o-", label="total")
        if any(np.isfinite(col("bce"))) and max(col("bce")) > 0:
            axes[0].plot(epoch, col("bce"), "s--", label="BCE")
        if max(col("extra")) > 0:
            axes[0].plot(epoch, col("extra"), "^--", label="second term (unweighted)")
        axes[0].set_yscale("log")
        axes[0].set_title("training loss")
        for name in ("val_dice", "val_cldice", "val_accuracy", "val_f1"):
            if name in rows[0]:
                axes[1].plot(epoch, col(name), "o-", label=name[4:])
        axes[1].set_title("validation")
        axes[1].set_ylim(0, 1.02)
        for name in ("val_betti0_error", "val_betti1_error", "val_betti2_error"):
            if name in rows[0]:
                axes[2].plot(epoch, col(name), "o-", label=name[4:])
        axes[2].set_title("validation Betti errors (per image)")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return _finish(fig, path)


def error_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8: true positives white, false positives red, false negatives blue."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    out = np.zeros(pred.shape + (3,), np.uint8)
    out[pred & target] = (255, 255, 255)
    out[pred & ~target] = (230, 40, 40)
    out[~pred & target] = (40, 120, 255)
    return out


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image if image.ndim == 2 else image[..., :3]


def plot_overlay(image: np.ndarray, prob: np.ndarray, target: np.ndarray, path: str | Path,
                 title: str = "", threshold: float = 0.5) -> Path:
    """Image, probabilities, target and the colour-coded errors of ``prob > threshold``.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) float array in [0, 1]
    prob : (H, W) float array in [0, 1]
    target : (H, W) bool array
    path : path of the PNG
    """
    from ..metrics import betti_numbers, dice

    pred = np.asarray(prob) > threshold
    target = np.asarray(target, bool)
    bp, bt = betti_numbers(np.stack([pred, target]))
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    axes[0].imshow(_grey(image), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image")
    axes[1].imshow(prob, cmap="magma", vmin=0, vmax=1)
    axes[1].set_title("probability")
    axes[2].imshow(target, cmap="gray")
    axes[2].set_title(f"target  (b0={bt[0]}, b1={bt[1]})")
    axes[3].imshow(error_map(pred, target))
    axes[3].set_title(f"prediction: Dice {dice(pred, target):.3f}  (b0={bp[0]}, b1={bp[1]})\n"
                      "white TP, red FP, blue FN", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


def _diagram_axes(ax, lo: float, hi: float, label: str) -> None:
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("birth")
    ax.set_ylabel("death")
    ax.set_title(label)
    ax.grid(alpha=0.3)


def plot_persistence(image: np.ndarray, path: str | Path, title: str = "", top: int = 20,
                     superlevel: bool = False, construction: str = "T") -> Path:
    """Persistence diagram (H0, H1) of a grey image and the critical pixels of its top pairs.

    Parameters
    ----------
    image : (H, W) float array
    path : path of the PNG
    top : int, default 20
        The ``top`` most persistent finite pairs of each dimension are marked on the image
        (birth pixel: circle, death pixel: cross).
    superlevel : bool, default False
        Filter by decreasing values (bright structures first).
    """
    from ..metrics import _persistence_any

    image = np.asarray(image, dtype=np.float64)
    dg = _persistence_any(image, superlevel=superlevel, construction=construction).to_numpy()
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    axes[0].imshow(image, cmap="gray")
    finite = np.isfinite(dg.death)
    lo, hi = float(image.min()), float(image.max())
    pad = 0.02 * (hi - lo or 1.0)
    for d in (0, 1):
        sel = (dg.dim == d) & finite
        axes[1].scatter(dg.birth[sel], dg.death[sel], s=8, color=_DIM_COLOURS[d], alpha=0.6,
                        label=f"H{d} ({int(sel.sum())} pairs)")
        order = np.argsort(-np.abs(dg.death[sel] - dg.birth[sel]))[:top]
        bp, dp = dg.birth_pixel[sel][order], dg.death_pixel[sel][order]
        axes[0].scatter(bp[:, 1], bp[:, 0], s=30, facecolors="none", edgecolors=_DIM_COLOURS[d])
        axes[0].scatter(dp[:, 1], dp[:, 0], s=30, marker="x", color=_DIM_COLOURS[d])
    ess = ~finite
    axes[1].scatter(dg.birth[ess], np.full(int(ess.sum()), hi if not superlevel else lo),
                    marker="^", color="k", label="essential (death = inf)")
    axes[0].set_title(f"critical pixels of the {top} most persistent pairs per dimension\n"
                      "(circle: birth, cross: death)", fontsize=9)
    axes[0].axis("off")
    _diagram_axes(axes[1], lo - pad, hi + pad,
                  f"{'superlevel' if superlevel else 'sublevel'} persistence, {construction}-construction")
    axes[1].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


def _matchings(prob: np.ndarray, target: np.ndarray, crit: Any = None) -> Sequence[Any]:
    """The matchings of one image through ``crit.match``, or the functional API."""
    import torch

    p = torch.as_tensor(np.asarray(prob, dtype=np.float32))[None, None]
    t = torch.as_tensor(np.asarray(target, dtype=np.float32))[None, None]
    if crit is not None and hasattr(crit, "match"):
        return list(crit.match(p, t))
    from ..losses import sat_matching

    return list(sat_matching(p, t))


def _draw_matching(ax: Any, image_ax: Any, m: Any) -> None:
    """One problem's diagram panel on ``ax``; its matched birth pixels on ``image_ax``."""
    d = int(m.dim)
    colour = _DIM_COLOURS[d % len(_DIM_COLOURS)]
    for i, j in np.asarray(m.matches).reshape(-1, 2):
        ax.plot([m.pred_birth[i], m.target_birth[j]], [m.pred_death[i], m.target_death[j]],
                "-", color="0.5", lw=0.8)
        pb, tb = m.pred_birth_pixel[i][-2:], m.target_birth_pixel[j][-2:]  # (row, col)
        image_ax.plot([pb[1], tb[1]], [pb[0], tb[0]], "-", color=colour, lw=1.0)
        image_ax.scatter([pb[1]], [pb[0]], s=26, facecolors="none", edgecolors=colour)
        image_ax.scatter([tb[1]], [tb[0]], s=26, marker="x", color=colour)
    for i in np.asarray(m.pred_to_diagonal):
        mid = 0.5 * (m.pred_birth[i] + m.pred_death[i])
        ax.plot([m.pred_birth[i], mid], [m.pred_death[i], mid], "--", color="0.6", lw=0.8)
    for j in np.asarray(m.target_to_diagonal):
        mid = 0.5 * (m.target_birth[j] + m.target_death[j])
        ax.plot([m.target_birth[j], mid], [m.target_death[j], mid], "--", color="tab:red", lw=0.8)
    ax.scatter(m.pred_birth, m.pred_death, s=14, color=colour,
               label=f"prediction ({len(m.pred_birth)})", zorder=3)
    ax.scatter(m.target_birth, m.target_death, s=60, marker="x", color="tab:red",
               label=f"target ({len(m.target_birth)})", zorder=4)
    n_matched = len(np.asarray(m.matches).reshape(-1, 2))
    _diagram_axes(ax, -0.05, 1.05, f"H{d}: {n_matched} matched, cost {float(m.cost):.3f}")
    ax.legend(fontsize=8, loc="lower right")


def _draw_image_panel(ax: Any, prob: np.ndarray, target: np.ndarray,
                      image: Optional[np.ndarray]) -> None:
    """The image (or the probabilities) under the target outline, framed for the pixels."""
    ax.imshow(_grey(image) if image is not None else prob,
              cmap="gray" if image is None or np.ndim(image) == 2 else None)
    ax.contour(np.asarray(target, float), levels=[0.5], colors="lime", linewidths=0.6)
    h, w = np.shape(prob)
    ax.set_xlim(-1.5, w + 0.5)
    ax.set_ylim(h + 0.5, -1.5)
    ax.set_title("matched birth pixels (circle: prediction, cross: target;\n"
                 "green: target outline)", fontsize=9)
    ax.axis("off")


def plot_matching(prob: np.ndarray, target: np.ndarray, path: str | Path,
                  image: Optional[np.ndarray] = None, crit: Any = None, title: str = "") -> Path:
    """The SATLoss matching of a prediction to its target, on the diagrams and on the image.

    Parameters
    ----------
    prob : (H, W) float array in [0, 1]
        The prediction.
    target : (H, W) bool array
    path : path of the PNG
    image : (H, W) or (H, W, 3) array, optional
        Shown under the critical pixels (the probabilities otherwise).
    crit : SATLoss, optional
        The loss whose ``match`` gives the matching (default settings otherwise).

    Notes
    -----
    Diagrams are those the loss compares: of ``1 - p`` and ``1 - t`` (sublevel). Prediction
    points are dots, target points crosses; a grey line joins matched points, a dashed line
    joins a point sent to the diagonal to its projection. On the image, each matched pair's
    birth pixels (prediction: circle, target: cross) are joined by a line.
    """
    matchings = [m for m in _matchings(prob, target, crit) if int(getattr(m, "image", 0)) == 0]
    plt = _plt()
    fig, axes = plt.subplots(1, 1 + len(matchings), figsize=(5.2 * (1 + len(matchings)), 5.2))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes[1:], matchings):
        _draw_matching(ax, axes[0], m)
    _draw_image_panel(axes[0], prob, target, image)
    total = sum(float(m.cost) for m in matchings)
    fig.suptitle(title or f"SATLoss matching, loss {total:.4f}")
    fig.tight_layout()
    return _finish(fig, path)


def plot_betti_comparison(runs: dict, warmup: int, path: str | Path) -> Path:
    """Validation Betti errors per epoch of several runs, side by side.

    Parameters
    ----------
    runs : dict of str to path
        Run label -> its ``metrics.csv`` (columns ``epoch``, ``val_betti0_error``, ...).
    warmup : int
        Last epoch of the shared warm-up (a vertical line).
    path : path
        PNG written.
    """
    plt = _plt()
    tables = {}
    for label, metrics_csv in runs.items():
        with open(metrics_csv, newline="", encoding="utf-8") as f:
            tables[label] = list(csv.DictReader(f))
    volumes = any("val_betti2_error" in (rows[0] if rows else {}) for rows in tables.values())
    keys = ["betti0_error", "betti1_error"] + (["betti2_error"] if volumes else []) + \
        ["betti_matching_error", "dice"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for label, rows in tables.items():
        epochs = [int(r["epoch"]) for r in rows]
        for ax, key in zip(axes, keys):
            values = [float(r.get(f"val_{key}") or "nan") for r in rows]
            ax.plot(epochs, values, marker=".", label=label)
    for ax, key in zip(axes, keys):
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"validation {key.replace('_', ' ')}")
        ax.set_xlabel("epoch")
        if key != "dice":
            ax.set_yscale("symlog", linthresh=1.0)  # the first epochs' errors are far larger
            ax.set_ylim(bottom=0)  # absolute errors: no negative decades
    axes[0].legend(title=f"after a {warmup}-epoch BCE warm-up")
    return _finish(fig, path)


# --------------------------------------------------------------------------- volumes
_PROJECTIONS = ((0, "along z (H x W)"), (1, "along rows (D x W)"))


def plot_volume_overlay(image: np.ndarray, prob: np.ndarray, target: np.ndarray,
                        path: str | Path, title: str = "", threshold: float = 0.5) -> Path:
    """:func:`plot_overlay` for a volume, by maximum-intensity projections.

    Two rows (projections along z and along the rows); columns: the image, the
    probabilities, the target and the colour-coded errors of the projected prediction
    ``prob > threshold`` against the projected target (white both, red prediction only, blue
    target only).

    Parameters
    ----------
    image : (C, D, H, W) or (D, H, W) float array (the first channel is shown)
    prob : (D, H, W) float array in [0, 1]
    target : (D, H, W) bool array
    path : path of the PNG
    """
    from ..metrics import betti_numbers, dice

    volume = np.asarray(image, dtype=np.float32)
    volume = volume[0] if volume.ndim == 4 else volume
    prob = np.asarray(prob, dtype=np.float32)
    pred, target = prob > threshold, np.asarray(target, bool)
    bp, bt = betti_numbers(np.stack([pred, target]), spatial_dims=3)
    plt = _plt()
    fig, axes = plt.subplots(2, 4, figsize=(14, 7.2))
    for row, (axis, view) in enumerate(_PROJECTIONS):
        axes[row, 0].imshow(volume.max(axis=axis), cmap="gray")
        axes[row, 0].set_title(f"image, {view}", fontsize=9)
        axes[row, 1].imshow(prob.max(axis=axis), cmap="magma", vmin=0, vmax=1)
        axes[row, 1].set_title("probability (maximum)", fontsize=9)
        axes[row, 2].imshow(target.max(axis=axis), cmap="gray")
        axes[row, 2].set_title(f"target (b0={bt[0]}, b1={bt[1]}, b2={bt[2]})", fontsize=9)
        axes[row, 3].imshow(error_map(pred.max(axis=axis), target.max(axis=axis)))
        axes[row, 3].set_title(f"prediction: Dice {dice(pred, target, spatial_dims=3):.3f} "
                               f"(b0={bp[0]}, b1={bp[1]}, b2={bp[2]})\nprojected: white both, "
                               f"red FP, blue FN", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


def plot_volume_matching(prob: np.ndarray, target: np.ndarray, path: str | Path,
                         image: Optional[np.ndarray] = None, crit: Any = None,
                         title: str = "") -> Path:
    """:func:`plot_matching` for a volume: the diagrams (H0, H1, H2) and their matching, and
    the matched birth voxels on the projection along z of the prediction.

    Parameters
    ----------
    prob : (D, H, W) float array in [0, 1]
    target : (D, H, W) bool array
    path : path of the PNG
    image : (C, D, H, W) or (D, H, W) array, optional
        Not drawn (the projected prediction shows where the voxels lie); accepted for the
        same call as :func:`plot_matching`.
    crit : SATLoss, optional
        The loss whose ``match`` gives the matching (default settings otherwise).

    Notes
    -----
    A voxel (z, row, col) is drawn at (row, col) on the maximum-intensity projection of the
    probabilities along z, with the projected target outlined.
    """
    del image
    matchings = [m for m in _matchings(prob, target, crit) if int(getattr(m, "image", 0)) == 0]
    plt = _plt()
    fig, axes = plt.subplots(1, 1 + len(matchings), figsize=(5.2 * (1 + len(matchings)), 5.2))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes[1:], matchings):
        _draw_matching(ax, axes[0], m)
    projected = np.asarray(prob, dtype=np.float32).max(axis=0)
    _draw_image_panel(axes[0], projected, np.asarray(target, bool).max(axis=0), None)
    axes[0].set_title("matched birth voxels on the projection along z\n(circle: prediction, "
                      "cross: target; green: projected target outline)", fontsize=9)
    total = sum(float(m.cost) for m in matchings)
    fig.suptitle(title or f"SATLoss matching, loss {total:.4f}")
    fig.tight_layout()
    return _finish(fig, path)
