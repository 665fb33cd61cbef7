"""Does SATLoss improve topology? A reproducible training experiment with a BCE control.

UNet_small is trained on thin-structure datasets (``vessels`` and ``roads`` from
:mod:`satloss_gpu.training.synthetic`, exact labels, and ``retina``: tiles of
``skimage.data.retina()`` with vesselness **pseudo-labels**, not expert annotations), 5 seeds
each. For every dataset and seed one BCE warm-up of ``warmup_epochs`` epochs is trained; every
arm continues from its ``last`` checkpoint to the same ``epochs`` in total (the topological
term ramps in over ``ramp_epochs`` after the warm-up, ``--tloss_start`` / ``--tloss_ramp``):

* ``bce``: BCE alone (the control: the same warm-up and total epochs as every other arm);
* ``bce+topo``: BCE + w * TopoLoss (the Wasserstein topological loss, no spatial factor);
* ``bce+sat``: BCE + w * SATLoss (with the loss's one-pixel foreground frame, the default);
* ``bce+sat-noframe``: BCE + w * SATLoss without the frame (``pad=False``);
* ``bce+sat-predtie`` and ``bce+sat-noframe-predtie``: the same two with the target's
  critical pixels chosen by the prediction among the target's ties
  (``target_tiebreak="prediction"``) instead of by index;
* ``bce+cldice``: BCE + w * soft clDice;

then a sweep of the SATLoss weight under the same warm-up (one dataset, one seed). Test images
are larger than the training crops (synthetic test images ``test_size`` pixels a side, crops
``crop``; retina tiles larger than the crops). Every run is tested with its ``last``
checkpoint through :func:`satloss_gpu.training.train.test`: Dice, clDice, Betti errors
(absolute, signed: missing < 0 < extra, and with the loss's frame), Betti matching error, ARE,
VOI; means and stds over seeds and paired Wilcoxon tests of every arm against BCE on the same
images and seeds.

Outputs under ``--out`` (default ``bench/out/topology``)::

    data/, exp/          the generated datasets and every run (config, logs, checkpoints, tests)
    runs.csv             one row per run: settings, test metrics, time, loss terms
    summary.json         settings, machine, per-run rows, mean and std over seeds, paired tests
    summary.csv          mean and std over seeds per dataset and loss
    table.md             the printed tables (markdown)

and a figure ``topology_quality.png`` (the same test images segmented by each loss, next to
the ground truth) in ``--figure-dir`` (default ``bench/figures``; ``<out>/figures`` with
``--quick``).

Sizes (``Plan``): the default CPU plan trains 3 datasets x 5 seeds x (20 warm-up epochs + 7
arms x 20 epochs) on 48 images of 96 x 96 (64 x 64 crops, test images 128 x 128), plus 3 sweep
runs (15 warm-ups, 108 continued runs): 31 minutes on 2 CPU cores with one thread (measured 2026-11-26: 23.0 minutes
for the first 5 arms and the sweep, 7.7 for the 2 tie-break arms added with ``--reuse``).
Besides the comparisons with BCE it tests the SATLoss variants against each other
(``VARIANT_PAIRS``: the tie-break with and without the frame, the frame itself). Examples::

    NUMBA_NUM_THREADS=1 python bench/topology_experiment.py --threads 1   # CPU, ~31 min
    python bench/topology_experiment.py --reuse --no-sweep   # add missing runs, keep the others
    python bench/topology_experiment.py --quick         # a smoke run (< 1 min)
    python bench/topology_experiment.py --full --device cuda   # larger, for a GPU
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
LOSSES = ("bce", "bce+topo", "bce+sat", "bce+sat-noframe", "bce+sat-predtie",
          "bce+sat-noframe-predtie", "bce+cldice")
#: The training loss and the second term's keyword arguments of every arm.
ARMS = {"bce": ("bce", {}), "bce+topo": ("bce+topo", {}), "bce+sat": ("bce+sat", {}),
        "bce+sat-noframe": ("bce+sat", {"pad": False}),
        "bce+sat-predtie": ("bce+sat", {"target_tiebreak": "prediction"}),
        "bce+sat-noframe-predtie": ("bce+sat", {"pad": False, "target_tiebreak": "prediction"}),
        "bce+cldice": ("bce+cldice", {})}
METRICS = ("dice", "cldice", "betti0_error", "betti1_error", "betti0_signed", "betti1_signed",
           "betti0_error_framed", "betti1_error_framed", "betti_matching_error", "are", "voi")
HEADERS = {"dice": "Dice", "cldice": "clDice", "betti0_error": "beta0 err",
           "betti1_error": "beta1 err", "betti0_signed": "beta0 signed",
           "betti1_signed": "beta1 signed", "betti0_error_framed": "beta0 err framed",
           "betti1_error_framed": "beta1 err framed", "betti_matching_error": "BM err",
           "are": "ARE", "voi": "VOI", "betti2_error": "beta2 err",
           "betti2_signed": "beta2 signed", "betti2_error_framed": "beta2 err framed"}
#: Direction of improvement; the signed differences have none (None: not scored better/worse).
HIGHER_IS_BETTER = {"dice": True, "cldice": True, "betti0_error": False, "betti1_error": False,
                    "betti0_signed": None, "betti1_signed": None, "betti0_error_framed": False,
                    "betti1_error_framed": False, "betti_matching_error": False,
                    "are": False, "voi": False, "betti2_error": False, "betti2_signed": None,
                    "betti2_error_framed": False}


@dataclass
class Plan:
    """Sizes of the experiment (recorded in summary.json)."""

    datasets: Tuple[str, ...] = ("vessels", "roads", "retina")
    losses: Tuple[str, ...] = LOSSES
    seeds: Tuple[int, ...] = (0, 1, 2, 3, 4)
    size: int = 96                 # synthetic image side (train, val)
    test_size: int = 128           # synthetic test image side (larger than the crops)
    n_train: int = 48
    n_val: int = 4
    n_test: int = 16
    retina_tile: int = 96
    retina_fractions: Tuple[float, float] = (0.7, 0.06)
    crop: Optional[int] = 64
    epochs: int = 40               # total, the warm-up included
    warmup_epochs: int = 20        # BCE alone, shared by every arm of a dataset and seed
    ramp_epochs: int = 2           # linear ramp of the second term after the warm-up
    lr_decay_epoch: int = 32
    batch_size: int = 8
    lr: float = 3e-3
    wd: float = 1e-4
    weights: Dict[str, float] = field(default_factory=lambda: {
        "bce": 0.0, "bce+topo": 1e-2, "bce+sat": 1e-2, "bce+sat-noframe": 1e-2,
        "bce+sat-predtie": 1e-2, "bce+sat-noframe-predtie": 1e-2, "bce+cldice": 0.5})
    sweep_dataset: str = "vessels"
    sweep_weights: Tuple[float, ...] = (1e-3, 1e-2, 3e-2, 1e-1)
    figure_images: int = 2


def plan_for(mode: str) -> Plan:
    """The CPU plan (``default``), the smoke plan (``quick``) or the GPU plan (``full``)."""
    if mode == "quick":
        # one synthetic set and the retina tiles: the code paths of the default plan, < 1 min
        return Plan(datasets=("vessels", "retina"), seeds=(0,), size=32, test_size=40,
                    n_train=4, n_val=1, n_test=2, retina_tile=160, retina_fractions=(0.5, 0.2),
                    crop=24, epochs=2, warmup_epochs=1, ramp_epochs=1, lr_decay_epoch=2,
                    batch_size=4, sweep_weights=(1e-3, 1e-2), figure_images=1)
    if mode == "full":
        return Plan(size=256, test_size=384, n_train=200, n_val=16, n_test=50, retina_tile=192,
                    retina_fractions=(0.7, 0.1), crop=128, epochs=60, warmup_epochs=30,
                    ramp_epochs=3, lr_decay_epoch=45, batch_size=16,
                    sweep_weights=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1))
    return Plan()


# --------------------------------------------------------------------------- data
def make_data(plan: Plan, root: Path) -> Dict[str, Path]:
    """Generate every dataset of ``plan`` under ``root`` (skipped when present)."""
    from satloss_gpu.training.synthetic import KINDS, make_dataset, make_retina_dataset

    paths = {}
    for name in plan.datasets:
        path = root / name
        if not (path / "dataset.json").exists():
            if name == "retina":
                make_retina_dataset(root, name, tile=plan.retina_tile, scale=0.5, seed=0,
                                    fractions=plan.retina_fractions)
            elif name in KINDS:
                make_dataset(root, name, kind=name, n_train=plan.n_train, n_val=plan.n_val,
                             n_test=0, size=(plan.size, plan.size), seed=0)
                _larger_test_split(plan, root, name)
            else:
                raise ValueError(f"`datasets` must name {', '.join(KINDS)} or retina; got {name!r}")
        paths[name] = path
    return paths


def _larger_test_split(plan: Plan, root: Path, name: str) -> None:
    """Write the test split of a synthetic dataset with images ``plan.test_size`` a side."""
    from satloss_gpu.training.synthetic import make_dataset

    scratch = root / f".{name}_test"
    make_dataset(root, scratch.name, kind=name, n_train=1, n_val=0, n_test=plan.n_test,
                 size=(plan.test_size, plan.test_size), seed=0)
    for split in ("test", "test_labels"):
        shutil.rmtree(root / name / split, ignore_errors=True)
        shutil.move(str(scratch / split), str(root / name / split))
    info = json.loads((root / name / "dataset.json").read_text())
    info.update(n_test=plan.n_test, test_size=[plan.test_size, plan.test_size])
    (root / name / "dataset.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(scratch)


def _count(path: Path, split: str) -> int:
    return len(list((path / split).glob("*.png")))


# --------------------------------------------------------------------------- runs
def exp_name(plan: Plan, dataset: str, loss: str, seed: int, weight: float) -> str:
    """The run's folder under ``<out>/exp``, e.g. ``vessels/bce+sat_w0.01_s0``."""
    return f"{dataset}/{loss}_w{weight:g}_s{seed}"


def _config(plan: Plan, root: Path, dataset: str, seed: int, device: str, **settings: Any):
    from satloss_gpu.training.train import Config

    crop = plan.crop if dataset != "retina" or (plan.crop or 0) < plan.retina_tile else None
    return Config(dataset=dataset, dataroot=str(root / "data"), exp_root=str(root / "exp"),
                  model="UNet_small", batch_size=plan.batch_size, lr=plan.lr,
                  lr_decay_epoch=plan.lr_decay_epoch, lr_decay_rate=0.1, wd=plan.wd, seed=seed,
                  device=device, crop=crop, augment=True, figures=False, progress=False,
                  test_model="last", overwrite=True, **settings)


def warm_up(plan: Plan, root: Path, dataset: str, seed: int, device: str) -> Path:
    """Train (once) the BCE warm-up of ``dataset`` and ``seed``; return its ``last`` checkpoint."""
    from satloss_gpu.training.train import train

    cfg = _config(plan, root, dataset, seed, device, exp=f"{dataset}/warmup_s{seed}",
                  epoch=plan.warmup_epochs, loss="bce", tloss_w=0.0)
    path = cfg.exp_dir / "last.pth"
    if not path.exists():
        train(cfg)
    return path


def run_one(plan: Plan, root: Path, dataset: str, loss: str, seed: int, weight: float,
            device: str) -> Dict[str, Any]:
    """Continue the warm-up of ``dataset`` and ``seed`` with one arm; test it; return its row.

    Every arm, the BCE control included, resumes the same warm-up checkpoint and trains to
    ``plan.epochs`` in total; the second term starts after the warm-up with a linear ramp of
    ``plan.ramp_epochs`` epochs.
    """
    from satloss_gpu.training.train import test, train

    checkpoint = warm_up(plan, root, dataset, seed, device)
    train_loss, kwargs = ARMS[loss]
    exp = exp_name(plan, dataset, loss, seed, weight)
    cfg = _config(plan, root, dataset, seed, device, exp=exp, epoch=plan.epochs,
                  checkpoint=str(checkpoint), loss=train_loss, tloss_w=weight,
                  tloss_kwargs=kwargs, tloss_start=plan.warmup_epochs,
                  tloss_ramp=plan.ramp_epochs)
    start = time.perf_counter()
    train(cfg)
    train_s = time.perf_counter() - start
    summary = test(replace(cfg, expmode="test", checkpoint=None))
    terms = _loss_terms(cfg.exp_dir / "metrics.csv", weight)
    return {"dataset": dataset, "loss": loss, "tloss_w": weight, "seed": seed, "exp": exp,
            "sweep": False, "train_s": train_s, "total_s": time.perf_counter() - start,
            "n_test": int(summary["n_images"]), **{m: summary[m] for m in METRICS},
            "accuracy": summary["accuracy"], **terms}


def _loss_terms(metrics_csv: Path, weight: float) -> Dict[str, float]:
    """BCE and the weighted second term in the first and last epochs (their balance)."""
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    return {"bce_first": float(first["bce"]), "bce_last": float(last["bce"]),
            "wextra_first": weight * float(first["extra"]),
            "wextra_last": weight * float(last["extra"])}


def per_image(root: Path, exp: str,
              metrics: Sequence[str] = METRICS) -> Dict[str, Dict[str, float]]:
    """Per-image test metrics of one run, by image name."""
    with open(root / "exp" / exp / "test_last" / "metrics.csv", newline="", encoding="utf-8") as f:
        return {r["name"]: {m: float(r[m]) for m in metrics} for r in csv.DictReader(f)}


def load_rows(path: Path) -> Dict[str, Dict[str, Any]]:
    """Rows of an earlier ``runs.csv``, by run name (for ``--reuse``)."""
    if not path.exists():
        return {}
    rows = {}
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: Dict[str, Any] = {}
            for key, value in r.items():
                if key in ("dataset", "loss", "exp"):
                    row[key] = value
                elif key == "sweep":
                    row[key] = value == "True"
                elif key == "seed" or key == "n_test":
                    row[key] = int(value)
                else:
                    row[key] = float(value)
            rows[row["exp"]] = row
    return rows


# --------------------------------------------------------------------------- statistics
def aggregate(rows: Sequence[Dict[str, Any]], plan: Plan,
              metrics: Sequence[str] = METRICS) -> List[Dict[str, Any]]:
    """Mean and sample std over seeds of every metric, per dataset and loss."""
    out = []
    for dataset in plan.datasets:
        for loss in plan.losses:
            sel = [r for r in rows if r["dataset"] == dataset and r["loss"] == loss
                   and r["tloss_w"] == plan.weights[loss] and not r.get("sweep")]
            if not sel:
                continue
            entry: Dict[str, Any] = {"dataset": dataset, "loss": loss,
                                     "tloss_w": plan.weights[loss], "n_seeds": len(sel)}
            for m in tuple(metrics) + ("train_s",):
                values = np.array([r[m] for r in sel], dtype=np.float64)
                entry[f"{m}_mean"] = float(values.mean())
                entry[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out.append(entry)
    return out


#: Pairs of SATLoss variants compared directly (reference arm, variant), per test image.
VARIANT_PAIRS = (("bce+sat", "bce+sat-predtie"), ("bce+sat-noframe", "bce+sat-noframe-predtie"),
                 ("bce+sat", "bce+sat-noframe"))


def paired_tests(rows: Sequence[Dict[str, Any]], plan: Plan, root: Path,
                 pairs: Optional[Sequence[Tuple[str, str]]] = None,
                 metrics: Sequence[str] = METRICS) -> List[Dict[str, Any]]:
    """Arms against a reference arm on the same test images and seeds (Wilcoxon signed-rank).

    ``pairs`` lists (reference, arm); by default every loss against BCE. For every dataset,
    pair and metric: the mean per-image difference (arm - reference) pooled over seeds, the
    fraction of images where the arm is better / worse, and the two-sided Wilcoxon p-value
    (None when fewer than two differences are non-zero).
    """
    from scipy.stats import wilcoxon

    if pairs is None:
        pairs = [("bce", loss) for loss in plan.losses if loss != "bce"]
    read: Dict[str, Dict[str, Dict[str, float]]] = {}

    def by_seed(dataset: str, loss: str) -> Dict[int, Dict[str, Dict[str, float]]]:
        """Per-image metrics of one arm by seed; each run's file is read once."""
        runs = [r for r in rows
                if r["dataset"] == dataset and r["loss"] == loss and not r.get("sweep")]
        for r in runs:
            if r["exp"] not in read:
                read[r["exp"]] = per_image(root, r["exp"], metrics)
        return {r["seed"]: read[r["exp"]] for r in runs}

    out = []
    for dataset in plan.datasets:
        for reference, loss in pairs:
            if reference not in plan.losses or loss not in plan.losses:
                continue
            base, other = by_seed(dataset, reference), by_seed(dataset, loss)
            seeds = sorted(set(base) & set(other))
            if not seeds:
                continue
            entry: Dict[str, Any] = {"dataset": dataset, "reference": reference, "loss": loss,
                                     "n_pairs": 0}
            for m in metrics:
                diff = np.array([other[s][name][m] - base[s][name][m] for s in seeds
                                 for name in base[s] if name in other[s]])
                sign = {True: 1.0, False: -1.0, None: 0.0}[HIGHER_IS_BETTER[m]]
                p = None
                if np.count_nonzero(diff) > 1:
                    p = float(wilcoxon(diff, zero_method="wilcox").pvalue)
                entry["n_pairs"] = int(diff.size)
                entry[f"{m}_diff"] = float(diff.mean()) if diff.size else float("nan")
                entry[f"{m}_better"] = float(np.mean(sign * diff > 0)) if diff.size else float("nan")
                entry[f"{m}_worse"] = float(np.mean(sign * diff < 0)) if diff.size else float("nan")
                entry[f"{m}_p"] = p
            out.append(entry)
    return out


# --------------------------------------------------------------------------- output
def format_table(summary: Sequence[Dict[str, Any]], metrics: Sequence[str] = METRICS) -> str:
    """Markdown table: per dataset and loss, mean +- std over seeds of every metric."""
    head = "| dataset | loss | w | " + " | ".join(HEADERS[m] for m in metrics) + " | train s |"
    lines = [head, "|" + "---|" * (len(metrics) + 4)]
    for e in summary:
        cells = [f"{e[f'{m}_mean']:.3f} ± {e[f'{m}_std']:.3f}" if m in ("dice", "cldice", "are")
                 else f"{e[f'{m}_mean']:.2f} ± {e[f'{m}_std']:.2f}" for m in metrics]
        lines.append(f"| {e['dataset']} | {e['loss']} | {e['tloss_w']:g} | " + " | ".join(cells)
                     + f" | {e['train_s_mean']:.0f} |")
    return "\n".join(lines)


def format_paired(paired: Sequence[Dict[str, Any]], against: str = "BCE",
                  metrics: Sequence[str] = METRICS) -> str:
    """Markdown table of paired comparisons (``against``: the reference's name in the header)."""
    lines = [f"| dataset | loss vs {against} | images | " + " | ".join(
        f"Δ {HEADERS[m]} (p)" for m in metrics) + " |", "|" + "---|" * (len(metrics) + 3)]
    for e in paired:
        cells = []
        for m in metrics:
            p = e[f"{m}_p"]
            cells.append(f"{e[f'{m}_diff']:+.3f} ({'-' if p is None else f'{p:.2g}'})")
        name = e["loss"] if against == "BCE" else f"{e['loss']} vs {e['reference']}"
        lines.append(f"| {e['dataset']} | {name} | {e['n_pairs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_sweep(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown table of the SATLoss weight sweep."""
    lines = ["| tloss_w | " + " | ".join(HEADERS[m] for m in METRICS)
             + " | BCE (last epoch) | w·SATLoss (last epoch) |", "|" + "---|" * (len(METRICS) + 3)]
    for r in sorted(rows, key=lambda r: r["tloss_w"]):
        cells = [f"{r[m]:.3f}" if m in ("dice", "cldice", "are") else f"{r[m]:.2f}" for m in METRICS]
        lines.append(f"| {r['tloss_w']:g} | " + " | ".join(cells)
                     + f" | {r['bce_last']:.3f} | {r['wextra_last']:.3f} |")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Rows of dicts as CSV (the union of keys, in first-seen order)."""
    keys: List[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def quality_figure(plan: Plan, root: Path, rows: Sequence[Dict[str, Any]], path: Path) -> Path:
    """The same test images segmented by each loss (seed 0), next to the image and the label.

    Errors are colour-coded (true positives white, false positives red, false negatives blue);
    each panel is titled with its Dice and Betti numbers (beta0, beta1).
    """
    from satloss_gpu.training.data import read_image, read_label
    from satloss_gpu.metrics import betti_numbers, binarize, dice
    from satloss_gpu.training.plotting import _plt, error_map

    seed = min(plan.seeds)
    panels = []  # (dataset, name, image, label, {loss: pred})
    for dataset in plan.datasets:
        runs = {r["loss"]: r for r in rows if r["dataset"] == dataset and r["seed"] == seed
                and not r.get("sweep")}
        if "bce" not in runs:
            continue
        folder = root / "data" / dataset
        names = sorted(p.stem for p in (folder / "test").glob("*.png"))[:plan.figure_images]
        for name in names:
            preds = {}
            for loss in plan.losses:
                if loss in runs:
                    folder_bin = root / "exp" / runs[loss]["exp"] / "test_last" / "pred_bin"
                    preds[loss] = binarize(read_label(folder_bin / f"{name}.png"))
            panels.append((dataset, name, read_image(folder / "test" / f"{name}.png"),
                           read_label(folder / "test_labels" / f"{name}.png"), preds))
    plt = _plt()
    n_cols = 2 + len(plan.losses)
    fig, axes = plt.subplots(len(panels), n_cols, figsize=(1.9 * n_cols, 2.0 * len(panels)),
                             squeeze=False)
    for i, (dataset, name, image, label, preds) in enumerate(panels):
        b0, b1 = betti_numbers(label)
        axes[i, 0].imshow(image)
        axes[i, 0].set_ylabel(f"{dataset}\n{name}", fontsize=7)
        axes[i, 1].imshow(label, cmap="gray")
        axes[i, 1].set_title(f"label β=({b0},{b1})", fontsize=7)
        for j, loss in enumerate(plan.losses):
            ax = axes[i, 2 + j]
            if loss in preds:
                p = preds[loss]
                pb0, pb1 = betti_numbers(p)
                ax.imshow(error_map(p, label))
                ax.set_title(f"{loss} D={dice(p, label):.2f} β=({pb0},{pb1})", fontsize=7)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("test images, seed 0: white TP, red FP, blue FN; β = (components, holes)",
                 fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    _to_palette(path)
    return path


def _to_palette(path: Path) -> None:
    """Rewrite a PNG with a 256-colour palette (a few times smaller, for the repository)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256)
    small.save(path, optimize=True)


def machine() -> Dict[str, Any]:
    """Platform, CPU count and library versions."""
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("numpy", "numba", "gudhi", "ot", "skimage", "scipy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report and go on
            versions[mod] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "versions": versions}


# --------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny smoke run (< 1 min on a CPU)")
    mode.add_argument("--full", action="store_true", help="larger sizes, for a GPU")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (%(default)s)")
    parser.add_argument("--out", default=str(HERE / "out" / "topology"),
                        help="output folder (%(default)s)")
    parser.add_argument("--figure-dir", default=None,
                        help="folder of the PNG figure (bench/figures; <out>/figures with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="override the plan's epochs")
    parser.add_argument("--seeds", default=None, help="override the seeds, e.g. 0,1,2")
    parser.add_argument("--datasets", default=None, help="override, e.g. vessels,roads,retina")
    parser.add_argument("--sat-w", type=float, default=None, help="weight of SATLoss and TopoLoss")
    parser.add_argument("--cldice-w", type=float, default=None, help="weight of soft clDice")
    parser.add_argument("--no-sweep", action="store_true", help="skip the SATLoss weight sweep")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs already in <out>/runs.csv, run only the missing ones")
    parser.add_argument("--threads", type=int, default=None, 
                        help="torch and Numba CPU threads (1 is the most robust on a shared machine)")
    parser.add_argument("--fresh", action="store_true", help="delete <out> first")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    plan = plan_for("quick" if args.quick else "full" if args.full else "default")
    if args.epochs:
        plan.epochs = args.epochs
        plan.lr_decay_epoch = max(1, int(round(0.8 * args.epochs)))
        plan.warmup_epochs = max(1, args.epochs // 2)
    if args.seeds:
        plan.seeds = tuple(int(s) for s in args.seeds.split(","))
    if args.datasets:
        plan.datasets = tuple(args.datasets.split(","))
    if args.sat_w is not None:
        plan.weights.update({"bce+sat": args.sat_w, "bce+topo": args.sat_w})
    if args.cldice_w is not None:
        plan.weights["bce+cldice"] = args.cldice_w
    if args.no_sweep:
        plan.sweep_weights = ()
    return plan


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    plan = build_plan(args)
    if args.threads:
        import numba
        import torch

        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    root = Path(args.out)
    if args.fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    figure_dir = Path(args.figure_dir) if args.figure_dir else (
        root / "figures" if args.quick else HERE / "figures")
    start, load_before = time.perf_counter(), os.getloadavg()
    datasets = make_data(plan, root / "data")
    sizes = {name: {s: _count(p, s) for s in ("train", "val", "test")} for name, p in datasets.items()}
    print(f"datasets: {sizes}", flush=True)

    rows: List[Dict[str, Any]] = []
    done = load_rows(root / "runs.csv") if args.reuse else {}
    jobs = [(d, loss, s, plan.weights[loss], False) for d in plan.datasets
            for s in plan.seeds for loss in plan.losses]
    sweep_seed = min(plan.seeds)
    if plan.sweep_dataset in plan.datasets:
        jobs += [(plan.sweep_dataset, "bce+sat", sweep_seed, w, True)
                 for w in plan.sweep_weights if w != plan.weights["bce+sat"]]
    for k, (dataset, loss, seed, weight, sweep) in enumerate(jobs, 1):
        exp = exp_name(plan, dataset, loss, seed, weight)
        if exp in done:
            rows.append(done[exp])
            continue
        row = run_one(plan, root, dataset, loss, seed, weight, args.device)
        row["sweep"] = sweep
        rows.append(row)
        print(f"[{k}/{len(jobs)}] {dataset} {loss} w={weight:g} seed {seed}: dice {row['dice']:.3f} "
              f"cldice {row['cldice']:.3f} b0 {row['betti0_error']:.2f} b1 {row['betti1_error']:.2f} "
              f"bm {row['betti_matching_error']:.2f} are {row['are']:.3f} voi {row['voi']:.3f} ({row['total_s']:.0f} s, "
              f"{time.perf_counter() - start:.0f} s so far)", flush=True)
        write_csv(root / "runs.csv", rows)

    grid = rows
    summary = aggregate(grid, plan)
    paired = paired_tests(grid, plan, root)
    variants = paired_tests(grid, plan, root, VARIANT_PAIRS)
    sweep_rows = [r for r in grid if r["dataset"] == plan.sweep_dataset and r["loss"] == "bce+sat"
                  and r["seed"] == sweep_seed and (r["sweep"] or r["tloss_w"] in plan.sweep_weights)]
    figure = quality_figure(plan, root, grid, figure_dir / "topology_quality.png")
    table, paired_md, sweep_md = format_table(summary), format_paired(paired), format_sweep(sweep_rows)
    variants_md = format_paired(variants, against="the other variant")
    wall = time.perf_counter() - start
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "bench/topology_experiment.py"]
                            + list(argv if argv is not None else sys.argv[1:])),
        "device": args.device, "machine": machine(), "plan": plan.__dict__, "dataset_sizes": sizes,
        "wall_s": wall, "load_average_before_after": [load_before, os.getloadavg()], "runs": rows,
        "summary": summary, "paired_vs_bce": paired, "paired_variants": variants,
        "sweep": sweep_rows, "figure": str(figure), "table_md": table, "paired_md": paired_md,
        "variants_md": variants_md, "sweep_md": sweep_md,
    }
    (root / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    write_csv(root / "summary.csv", summary)
    (root / "table.md").write_text(f"{table}\n\n{paired_md}\n\n{variants_md}\n\n{sweep_md}\n")
    print(f"\nTest metrics, mean ± std over seeds {list(plan.seeds)} (last checkpoint):\n{table}")
    print(f"\nPaired with BCE, per test image (mean difference, Wilcoxon p):\n{paired_md}")
    print(f"\nSATLoss variants against each other, per test image:\n{variants_md}")
    print(f"\nSATLoss weight sweep ({plan.sweep_dataset}, seed {sweep_seed}):\n{sweep_md}")
    print(f"\nfigure {figure}; wrote {root / 'summary.json'}; wall time {wall / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
