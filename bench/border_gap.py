"""Does the topological gradient close a gap in a line? Frame, no frame, and the target's tie-break.

A thin line of the target runs from one border of the image to the other (``border``
scenario) or forms a ring inside the image (``ring``, the control); the prediction is the
target, softened, with a gap of a few pixels cut into the line and noise added. The
prediction's logits are then optimised with the topological loss alone (Adam), for each
setting:

* ``frame, index``: SATLoss with its one-pixel foreground frame and the target's critical
  pixels chosen by index (the defaults, and the reference's behaviour);
* ``frame, prediction``: the frame, with ``target_tiebreak="prediction"``;
* ``no frame, index`` and ``no frame, prediction``: ``pad=False``;
* ``TopoLoss, frame``: no spatial factor (the tie-break does not matter).

The gap counts as closed when the thresholded prediction (> 0.5) joins the two ends of the
line through the gap's pixels (the line's band is one component from end to end) and stays
closed at the last step. Prints a table (closed fraction, median step of closing, Betti
errors of the thresholded prediction with and without the frame at the end) and writes
``bench/out/border_gap.json``; ``--figure`` draws one case per setting.

Example::

    python bench/border_gap.py --cases 24 --steps 200 --figure bench/figures/border_gap.png
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy import ndimage

from satloss_gpu import SATLoss, TopoLoss
from satloss_gpu.metrics import betti_numbers

SETTINGS = {
    "frame, index": dict(cls=SATLoss, pad=True, target_tiebreak="index"),
    "frame, prediction": dict(cls=SATLoss, pad=True, target_tiebreak="prediction"),
    "no frame, index": dict(cls=SATLoss, pad=False, target_tiebreak="index"),
    "no frame, prediction": dict(cls=SATLoss, pad=False, target_tiebreak="prediction"),
    "TopoLoss, frame": dict(cls=TopoLoss, pad=True, target_tiebreak="index"),
}


def make_case(scenario: str, size: int, rng: np.random.Generator
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, prediction, gap mask), each (size, size); float64 target and prediction.

    ``border``: a vertical or horizontal line, 2 or 3 pixels wide, at a random offset, from
    border to border; ``ring``: a square ring inside the image. The gap (2 to 5 pixels
    long, away from the ends) is filled with a random value in [0.15, 0.35]; the rest of
    the prediction is 0.1 + 0.8 * target plus uniform noise in [-0.08, 0.08].
    """
    target = np.zeros((size, size))
    gap = np.zeros((size, size), dtype=bool)
    width = int(rng.integers(2, 4))
    length = int(rng.integers(2, 6))
    if scenario == "border":
        offset = int(rng.integers(size // 4, 3 * size // 4 - width))
        start = int(rng.integers(size // 4, 3 * size // 4 - length))
        target[:, offset:offset + width] = 1
        gap[start:start + length, offset:offset + width] = True
        if rng.random() < 0.5:
            target, gap = target.T.copy(), gap.T.copy()
    else:
        low, high = size // 4, 3 * size // 4
        target[low:high, low:high] = 1
        target[low + width:high - width, low + width:high - width] = 0
        start = int(rng.integers(low + width + 1, high - width - length - 1))
        gap[start:start + length, low:low + width] = True
    noise = rng.uniform(-0.08, 0.08, size=(size, size))
    pred = np.clip(0.1 + 0.8 * target + noise, 0.01, 0.99)
    pred[gap] = rng.uniform(0.15, 0.35)
    return target, pred, gap


def gap_closed(binary: np.ndarray, target: np.ndarray, gap: np.ndarray) -> bool:
    """The thresholded prediction joins the gap's pixels to both sides of it inside the line."""
    inside = binary & (target > 0)
    labels, _ = ndimage.label(inside, structure=np.ones((3, 3)))
    touching = np.unique(labels[gap & inside])
    touching = touching[touching > 0]
    if touching.size == 0:
        return False
    component = np.isin(labels, touching)
    line = target > 0
    # the line's own pixels minus the gap form two pieces (border) or one (ring, which the
    # gap opens): the gap is closed when one component of the prediction meets every piece
    pieces, count = ndimage.label(line & ~gap, structure=np.ones((3, 3)))
    return all((component & (pieces == k)).any() for k in range(1, count + 1))


def betti_errors(binary: np.ndarray, target: np.ndarray, frame: bool) -> Tuple[int, int]:
    """|beta0| and |beta1| differences between prediction and target (optionally framed)."""
    b_pred = betti_numbers(binary.astype(np.float64), pad=frame)
    b_true = betti_numbers(target, pad=frame)
    return abs(b_pred[0] - b_true[0]), abs(b_pred[1] - b_true[1])


def optimise(setting: Dict, targets: np.ndarray, preds: np.ndarray, gaps: np.ndarray,
             steps: int, lr: float) -> Dict[str, np.ndarray]:
    """Adam on the logits of the batch; per case the first step from which the gap stays closed."""
    options = {k: v for k, v in setting.items() if k != "cls"}
    if setting["cls"] is TopoLoss:
        options.pop("target_tiebreak")
    criterion = setting["cls"](sigmoid=True, backend="cpu", reduction="sum", **options)
    target = torch.as_tensor(targets[:, None])
    logits = torch.logit(torch.as_tensor(preds[:, None])).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    closed_since = np.full(len(targets), -1)
    for step in range(steps + 1):
        binary = (torch.sigmoid(logits).detach().numpy()[:, 0] > 0.5)
        for i in range(len(targets)):
            if gap_closed(binary[i], targets[i], gaps[i]):
                if closed_since[i] < 0:
                    closed_since[i] = step
            else:
                closed_since[i] = -1
        if step == steps:
            break
        optimizer.zero_grad()
        criterion(logits, target).backward()
        optimizer.step()
    final = torch.sigmoid(logits).detach().numpy()[:, 0]
    return {"closed_since": closed_since, "final": final}


def run(scenario: str, cases: int, size: int, steps: int, lr: float, seed: int
        ) -> Tuple[List[dict], Dict]:
    """One row per setting for one scenario, and its first case before and after each setting
    (``target``, ``pred``, ``gap`` and ``after``: setting -> (final prediction, gap closed))."""
    rng = np.random.default_rng(seed)
    made = [make_case(scenario, size, rng) for _ in range(cases)]
    targets, preds, gaps = (np.stack(a) for a in zip(*made))
    rows = []
    example = {"target": targets[0], "pred": preds[0], "gap": gaps[0], "after": {}}
    for name, setting in SETTINGS.items():
        started = time.process_time()
        result = optimise(setting, targets, preds, gaps, steps, lr)
        closed = result["closed_since"] >= 0
        example["after"][name] = (result["final"][0], bool(closed[0]))
        binary = result["final"] > 0.5
        errors = {frame: np.array([betti_errors(binary[i], targets[i], frame)
                                   for i in range(cases)]) for frame in (False, True)}
        rows.append({
            "scenario": scenario, "setting": name, "cases": cases,
            "closed": float(closed.mean()),
            "median_step_closed": (float(np.median(result["closed_since"][closed]))
                                   if closed.any() else None),
            "beta0_error": float(errors[False][:, 0].mean()),
            "beta1_error": float(errors[False][:, 1].mean()),
            "beta0_error_framed": float(errors[True][:, 0].mean()),
            "beta1_error_framed": float(errors[True][:, 1].mean()),
            "cpu_s": time.process_time() - started,
            "closed_per_case": closed.astype(int).tolist(),
        })
        print(f"  {scenario:6s} {name:22s} closed {closed.mean():5.0%}", flush=True)
    return rows, example


def format_table(rows: List[dict]) -> str:
    lines = ["| scenario | setting | gap closed | median step | beta0 err | beta1 err | "
             "beta0 err framed | beta1 err framed |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        step = "-" if r["median_step_closed"] is None else f"{r['median_step_closed']:.0f}"
        lines.append(f"| {r['scenario']} | {r['setting']} | {r['closed']:.0%} "
                     f"({sum(r['closed_per_case'])}/{r['cases']}) | {step} | "
                     f"{r['beta0_error']:.2f} | {r['beta1_error']:.2f} | "
                     f"{r['beta0_error_framed']:.2f} | {r['beta1_error_framed']:.2f} |")
    return "\n".join(lines)


def draw(path: str, example: Dict, steps: int) -> None:
    """One border case (from :func:`run`): the prediction before, and after each setting.

    The cases of a batch are optimised independently (the loss is a sum over images and Adam
    acts per pixel), so the first case of the batch is what this case alone would give.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gap = example["gap"]
    panels = [("target", example["target"]), ("prediction before", example["pred"])]
    for name, (final, closed) in example["after"].items():
        panels.append((f"{name}\n(gap {'closed' if closed else 'open'})", final))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels), 2.5))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.contour(gap, levels=[0.5], colors="red", linewidths=0.6, linestyles="dashed")
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"a line from border to border with a gap (red), after {steps} Adam steps "
                 "on the topological loss alone", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24, help="cases per scenario")
    parser.add_argument("--size", type=int, default=48, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=200, help="Adam steps")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate on the logits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out",
                                                      "border_gap.json"))
    parser.add_argument("--figure", default=None, help="write a figure of one case here")
    args = parser.parse_args()
    for name, value in (("--cases", args.cases), ("--steps", args.steps)):
        if value < 1:
            parser.error(f"{name} must be at least 1; got {value}")
    if args.size < 16:
        parser.error(f"--size must be at least 16; got {args.size}")
    started = time.time()
    rows, examples = [], {}
    for scenario in ("border", "ring"):
        scenario_rows, examples[scenario] = run(scenario, args.cases, args.size, args.steps,
                                                args.lr, args.seed)
        rows += scenario_rows
    table = format_table(rows)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"settings": vars(args), "torch": torch.__version__, "rows": rows,
                   "table_md": table, "wall_s": time.time() - started}, f, indent=2)
    print(f"wrote {args.out} ({time.time() - started:.0f} s)")
    if args.figure:
        draw(args.figure, examples["border"], args.steps)
        print(f"figure {args.figure}")


if __name__ == "__main__":
    main()
