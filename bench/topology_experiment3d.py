"""Does SATLoss improve topology in 3D? The vessel-volume experiment with a BCE control.

UNet3D_small is trained on generated vessel volumes
(:func:`satloss_gpu.training.synthetic3d.make_volume_dataset`: branching tubes with gaps,
touching branches and noise, exact labels) on random cubic patches, 3 seeds. For every seed
one BCE warm-up of ``warmup_epochs`` epochs is trained; every arm continues from its ``last``
checkpoint to the same ``epochs`` in total (the topological term ramps in over
``ramp_epochs`` after the warm-up):

* ``bce``: BCE alone (the control);
* ``bce+topo``: BCE + w * TopoLoss (no spatial factor);
* ``bce+sat``: BCE + w * SATLoss (with the loss's one-voxel foreground frame, the default);
* ``bce+sat-noframe``: BCE + w * SATLoss without the frame (``pad=False``).

Every run is tested with its ``last`` checkpoint on whole test volumes, predicted by sliding
windows of the patch size (:func:`satloss_gpu.training.train.test` with
``spatial_dims=3``): Dice, clDice, Betti errors in H0, H1 and H2 (absolute, signed, framed),
the Betti matching error, ARE and VOI; means and stds over seeds and paired Wilcoxon tests
per test volume against BCE (and between the SATLoss variants), with the tables and tests of
``bench/topology_experiment.py``.

Outputs under ``--out`` (default ``bench/out/topology3d``): ``data/``, ``exp/``, ``runs.csv``,
``summary.json``, ``summary.csv``, ``table.md``; the figure ``topology_quality3d.png``
(maximum-intensity projections of test volumes segmented by each arm) in ``--figure-dir``
(default ``bench/results``; ``<out>/figures`` with ``--quick``). Examples::

    python bench/topology_experiment3d.py --threads 2      # CPU plan (see ``plan_for``)
    python bench/topology_experiment3d.py --quick          # a smoke run (about a minute)
    python bench/topology_experiment3d.py --full --device cuda   # larger, for a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import topology_experiment as shared  # noqa: E402  (the 2D experiment's tables and tests)

DATASET = "vessels3d"
LOSSES = ("bce", "bce+topo", "bce+sat", "bce+sat-noframe")
ARMS = {name: shared.ARMS[name] for name in LOSSES}
METRICS = ("dice", "cldice", "betti0_error", "betti1_error", "betti2_error", "betti0_signed",
           "betti1_signed", "betti2_signed", "betti0_error_framed", "betti1_error_framed",
           "betti2_error_framed", "betti_matching_error", "are", "voi")
#: The SATLoss variants compared directly (reference arm, variant), per test volume.
VARIANT_PAIRS = (("bce+sat", "bce+sat-noframe"), ("bce+topo", "bce+sat"))


@dataclass
class Plan:
    """Sizes of the experiment (recorded in summary.json)."""

    datasets: Tuple[str, ...] = (DATASET,)
    losses: Tuple[str, ...] = LOSSES
    seeds: Tuple[int, ...] = (0, 1, 2)
    size: int = 48                 # training and validation volumes, voxels a side
    test_size: int = 64            # test volumes (larger than the patches)
    n_train: int = 16
    n_val: int = 2
    n_test: int = 6
    patch: int = 32                # random training patches and sliding windows
    epochs: int = 14               # total, the warm-up included
    warmup_epochs: int = 8
    ramp_epochs: int = 1
    lr_decay_epoch: int = 12
    batch_size: int = 2
    lr: float = 3e-3
    wd: float = 1e-4
    weights: Dict[str, float] = field(default_factory=lambda: {
        "bce": 0.0, "bce+topo": 1e-2, "bce+sat": 1e-2, "bce+sat-noframe": 1e-2})
    figure_volumes: int = 2


def plan_for(mode: str) -> Plan:
    """The CPU plan (``default``), the smoke plan (``quick``) or the GPU plan (``full``)."""
    if mode == "quick":
        return Plan(seeds=(0,), size=16, test_size=24, n_train=3, n_val=1, n_test=2, patch=16,
                    epochs=2, warmup_epochs=1, lr_decay_epoch=2, figure_volumes=1)
    if mode == "full":
        return Plan(seeds=(0, 1, 2), size=96, test_size=128, n_train=48, n_val=4, n_test=12,
                    patch=64, epochs=60, warmup_epochs=30, ramp_epochs=3, lr_decay_epoch=45,
                    batch_size=4)
    return Plan()


# --------------------------------------------------------------------------- data and runs
def make_data(plan: Plan, root: Path) -> Path:
    """The vessel volumes (skipped when present): train and val of ``plan.size``, the test
    split of ``plan.test_size`` voxels a side, with seeds of their own."""
    from satloss_gpu.training.synthetic3d import make_volume_dataset

    path = root / DATASET
    if (path / "dataset.json").exists():
        return path
    make_volume_dataset(root, DATASET, plan.n_train, plan.n_val, 0, (plan.size,) * 3, seed=0)
    scratch = make_volume_dataset(root, f".{DATASET}_test", 1, 0, plan.n_test,
                                  (plan.test_size,) * 3, seed=1)
    shutil.move(str(scratch / "test"), str(path / "test"))
    info = json.loads((path / "dataset.json").read_text())
    info.update(n_test=plan.n_test, test_size=[plan.test_size] * 3, test_seed=1)
    (path / "dataset.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(scratch)
    return path


def _config(plan: Plan, root: Path, seed: int, device: str, **settings: Any):
    from satloss_gpu.training.train import Config

    return Config(dataset=DATASET, dataroot=str(root / "data"), exp_root=str(root / "exp"),
                  model="UNet3D_small", spatial_dims=3, batch_size=plan.batch_size, lr=plan.lr,
                  lr_decay_epoch=plan.lr_decay_epoch, lr_decay_rate=0.1, wd=plan.wd, seed=seed,
                  device=device, crop=plan.patch, tile=plan.patch, augment=True, figures=False,
                  progress=False, test_model="last", overwrite=True, **settings)


def warm_up(plan: Plan, root: Path, seed: int, device: str) -> Path:
    """Train (once) the BCE warm-up of ``seed``; return its ``last`` checkpoint."""
    from satloss_gpu.training.train import train

    cfg = _config(plan, root, seed, device, exp=f"{DATASET}/warmup_s{seed}",
                  epoch=plan.warmup_epochs, loss="bce", tloss_w=0.0)
    path = cfg.exp_dir / "last.pth"
    if not path.exists():
        train(cfg)
    return path


def run_one(plan: Plan, root: Path, loss: str, seed: int, device: str) -> Dict[str, Any]:
    """Continue the warm-up of ``seed`` with one arm, test it on whole volumes; its row."""
    from satloss_gpu.training.train import test, train

    checkpoint = warm_up(plan, root, seed, device)
    train_loss, kwargs = ARMS[loss]
    weight = plan.weights[loss]
    exp = shared.exp_name(plan, DATASET, loss, seed, weight)
    cfg = _config(plan, root, seed, device, exp=exp, epoch=plan.epochs,
                  checkpoint=str(checkpoint), loss=train_loss, tloss_w=weight,
                  tloss_kwargs=kwargs, tloss_start=plan.warmup_epochs,
                  tloss_ramp=plan.ramp_epochs)
    start, cpu = time.perf_counter(), time.process_time()
    train(cfg)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    summary = test(replace(cfg, expmode="test", checkpoint=None))
    terms = shared._loss_terms(cfg.exp_dir / "metrics.csv", weight)
    return {"dataset": DATASET, "loss": loss, "tloss_w": weight, "seed": seed, "exp": exp,
            "sweep": False, "train_s": train_s, "train_cpu_s": train_cpu_s,
            "total_s": time.perf_counter() - start, "n_test": int(summary["n_images"]),
            **{m: summary[m] for m in METRICS}, "accuracy": summary["accuracy"], **terms}


# --------------------------------------------------------------------------- figure
def quality_figure(plan: Plan, root: Path, rows: Sequence[Dict[str, Any]], path: Path) -> Path:
    """Test volumes of seed 0 segmented by each arm: maximum-intensity projections along z
    of the image, the label and each arm's errors (white both, red prediction only, blue
    label only), titled with Dice and the Betti numbers (b0, b1, b2) of the volumes."""
    from satloss_gpu.metrics import betti_numbers, dice
    from satloss_gpu.training.plotting import _plt, error_map
    from satloss_gpu.training.synthetic3d import load_volume_folder

    seed = min(plan.seeds)
    runs = {r["loss"]: r for r in rows if r["seed"] == seed}
    test = load_volume_folder(root / "data" / DATASET / "test")
    count = min(plan.figure_volumes, len(test.names))
    plt = _plt()
    n_cols = 2 + len(plan.losses)
    fig, axes = plt.subplots(count, n_cols, figsize=(2.2 * n_cols, 2.4 * count), squeeze=False)
    for i in range(count):
        name, image, label = test.names[i], test.images[i][0], test.labels[i].astype(bool)
        b = betti_numbers(label, spatial_dims=3)
        axes[i, 0].imshow(image.max(axis=0), cmap="gray")
        axes[i, 0].set_ylabel(name, fontsize=7)
        axes[i, 1].imshow(label.max(axis=0), cmap="gray")
        axes[i, 1].set_title(f"label β=({b[0]},{b[1]},{b[2]})", fontsize=7)
        for j, loss in enumerate(plan.losses):
            if loss not in runs:
                continue
            pred = np.load(root / "exp" / runs[loss]["exp"] / "test_last" / "pred_bin"
                           / f"{name}.npy").astype(bool)
            pb = betti_numbers(pred, spatial_dims=3)
            axes[i, 2 + j].imshow(error_map(pred.max(axis=0), label.max(axis=0)))
            axes[i, 2 + j].set_title(f"{loss} D={dice(pred, label, spatial_dims=3):.2f}\n"
                                     f"β=({pb[0]},{pb[1]},{pb[2]})", fontsize=7)
        if i == 0:
            axes[i, 0].set_title("image (MIP)", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("test volumes, seed 0, projections along z: white both, red FP, blue FN",
                 fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    shared._to_palette(path)
    return path


# --------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny smoke run")
    mode.add_argument("--full", action="store_true", help="larger sizes, for a GPU")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (%(default)s)")
    parser.add_argument("--out", default=str(HERE / "out" / "topology3d"),
                        help="output folder (%(default)s)")
    parser.add_argument("--figure-dir", default=None,
                        help="folder of the PNG figure (bench/results; <out>/figures with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the plan's epochs (the warm-up: a bit over half)")
    parser.add_argument("--seeds", default=None, help="override the seeds, e.g. 0,1,2")
    parser.add_argument("--n-train", type=int, default=None, help="override the training volumes")
    parser.add_argument("--size", type=int, default=None,
                        help="override the side of the training and validation volumes")
    parser.add_argument("--test-size", type=int, default=None, help="override the test volumes' side")
    parser.add_argument("--patch", type=int, default=None,
                        help="override the training patch and sliding window side (a multiple of 8)")
    parser.add_argument("--sat-w", type=float, default=None, help="weight of SATLoss and TopoLoss")
    parser.add_argument("--lr", type=float, default=None, help="override the learning rate")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs already in <out>/runs.csv, run only the missing ones")
    parser.add_argument("--threads", type=int, default=None, help="torch and Numba CPU threads")
    parser.add_argument("--fresh", action="store_true", help="delete <out> first")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    plan = plan_for("quick" if args.quick else "full" if args.full else "default")
    if args.epochs:
        plan.epochs = args.epochs
        plan.warmup_epochs = max(1, (args.epochs + 1) // 2 + 1 if args.epochs > 3 else args.epochs // 2)
        plan.lr_decay_epoch = max(1, int(round(0.85 * args.epochs)))
    if args.seeds:
        plan.seeds = tuple(int(s) for s in args.seeds.split(","))
    for name in ("n_train", "size", "test_size", "patch", "lr"):
        if getattr(args, name):
            setattr(plan, name, getattr(args, name))
    if args.sat_w is not None:
        plan.weights.update({"bce+sat": args.sat_w, "bce+sat-noframe": args.sat_w,
                             "bce+topo": args.sat_w})
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
        root / "figures" if args.quick else HERE / "results")
    start, cpu0, load_before = time.perf_counter(), time.process_time(), os.getloadavg()
    make_data(plan, root / "data")
    done = shared.load_rows(root / "runs.csv") if args.reuse else {}
    rows: List[Dict[str, Any]] = []
    jobs = [(loss, seed) for seed in plan.seeds for loss in plan.losses]
    for k, (loss, seed) in enumerate(jobs, 1):
        exp = shared.exp_name(plan, DATASET, loss, seed, plan.weights[loss])
        row = done.get(exp) or run_one(plan, root, loss, seed, args.device)
        rows.append(row)
        print(f"[{k}/{len(jobs)}] {loss} seed {seed}: dice {row['dice']:.3f} cldice "
              f"{row['cldice']:.3f} b0 {row['betti0_error']:.2f} b1 {row['betti1_error']:.2f} "
              f"b2 {row['betti2_error']:.2f} bm {row['betti_matching_error']:.2f} "
              f"({row['total_s']:.0f} s, {time.perf_counter() - start:.0f} s so far)", flush=True)
        shared.write_csv(root / "runs.csv", rows)
    summary = shared.aggregate(rows, plan, METRICS)
    paired = shared.paired_tests(rows, plan, root, metrics=METRICS)
    variants = shared.paired_tests(rows, plan, root, VARIANT_PAIRS, metrics=METRICS)
    figure = quality_figure(plan, root, rows, figure_dir / "topology_quality3d.png")
    table = shared.format_table(summary, METRICS)
    paired_md = shared.format_paired(paired, metrics=METRICS)
    variants_md = shared.format_paired(variants, against="the other arm", metrics=METRICS)
    wall = time.perf_counter() - start
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "bench/topology_experiment3d.py"]
                            + list(argv if argv is not None else sys.argv[1:])),
        "device": args.device, "machine": shared.machine(), "plan": plan.__dict__,
        "wall_s": wall, "cpu_s": time.process_time() - cpu0,
        "load_average_before_after": [load_before, os.getloadavg()], "runs": rows,
        "summary": summary, "paired_vs_bce": paired, "paired_variants": variants,
        "figure": str(figure), "table_md": table, "paired_md": paired_md,
        "variants_md": variants_md,
    }
    (root / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    shared.write_csv(root / "summary.csv", summary)
    (root / "table.md").write_text(f"{table}\n\n{paired_md}\n\n{variants_md}\n")
    print(f"\nTest metrics (whole volumes), mean ± std over seeds {list(plan.seeds)}:\n{table}")
    print(f"\nPaired with BCE, per test volume (mean difference, Wilcoxon p):\n{paired_md}")
    print(f"\nArms against each other, per test volume:\n{variants_md}")
    print(f"\nfigure {figure}; wrote {root / 'summary.json'}; wall time {wall / 60:.1f} min, "
          f"CPU {result['cpu_s'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
