"""What SATLoss gives for an all-background and an all-foreground target.

For each degenerate target (every pixel background, every pixel foreground), with and
without the foreground frame (``pad``), and for constant, saturated and noisy predictions:
the loss per image (mean over the batch) and how many pixels receive a non-zero gradient.
Prints a table and writes ``bench/out/degenerate_targets.json``. The numbers are stated in
the README; ``tests/test_loss_options.py`` checks the closed forms of the constant cases.

Example::

    python bench/degenerate_targets.py --size 32
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from satloss_gpu import SATLoss


def _predictions(shape, generator):
    noise = torch.rand(shape, generator=generator)
    return {
        "constant 0.1": torch.full(shape, 0.1),
        "constant 0.5": torch.full(shape, 0.5),
        "constant 0.9": torch.full(shape, 0.9),
        "exactly 0": torch.zeros(shape),
        "exactly 1": torch.ones(shape),
        "noise in [0, 0.2]": 0.2 * noise,
        "noise in [0.8, 1]": 1.0 - 0.2 * noise,
    }


def measure(size: int, batch: int, seed: int) -> list[dict]:
    """One row per target, padding and prediction."""
    shape = (batch, 1, size, size)
    rows = []
    for target_name, target in (("all background", torch.zeros(shape)),
                                ("all foreground", torch.ones(shape))):
        for pad in (True, False):
            generator = torch.Generator().manual_seed(seed)
            for pred_name, pred in _predictions(shape, generator).items():
                pred = pred.double().requires_grad_(True)
                loss = SATLoss(pad=pad)(pred, target.double())
                loss.backward()
                rows.append({"target": target_name, "pad": pad, "prediction": pred_name,
                             "loss": float(loss.detach()),
                             "pixels_with_gradient": int((pred.grad != 0).sum()),
                             "pixels": int(pred.numel())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = measure(args.size, args.batch, args.seed)
    print(f"{'target':16} {'pad':5} {'prediction':20} {'loss':>10} {'grad pixels':>14}")
    for r in rows:
        print(f"{r['target']:16} {str(r['pad']):5} {r['prediction']:20} {r['loss']:10.4f} "
              f"{r['pixels_with_gradient']:>6} / {r['pixels']}")
    os.makedirs(os.path.join(os.path.dirname(__file__), "out"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "out", "degenerate_targets.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"size": args.size, "batch": args.batch, "seed": args.seed, "rows": rows}, f,
                  indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
