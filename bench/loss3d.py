"""Benchmark of SATLoss on volumes (B, 1, D, H, W), forward + backward, one CPU thread.

Targets are generated vessel volumes (:func:`satloss_gpu.training.synthetic3d.generate_volume`,
branching tubes of radius 1-3 voxels). Two kinds of predictions:

* ``noisy``: early in training, ``sigmoid`` of standard Gaussian logits (noise everywhere:
  about 0.33 persistence pairs per voxel);
* ``smooth``: late in training, the target plus a little Gaussian noise (0.2), blurred
  (sigma 1) and clipped to [0, 1] (soft edges, weak spurious blobs, about 0.025 pairs per
  voxel).

Timed, interleaved (ours, reference, ours, ...), CPU time (``time.process_time``) on one
thread (``NUMBA_NUM_THREADS=1``, ``torch.set_num_threads(1)``), medians of the repeats:

* ``ours``: ``SATLoss()(pred, target)`` then ``backward()`` (persistence of both sides by the
  CPU backend, exact reduced matching, the loss in torch);
* ``reference``: the same semantics per volume, the plain way: the one-voxel frame, gudhi's
  ``CubicalComplex`` (T-construction) with ``cofaces_of_persistence_pairs`` on the rank
  volume, the dense cost matrix in torch, POT's ``ot.emd2`` per homology dimension (H0, H1,
  H2), mean over the batch, ``backward()``.

The loss values of the two are compared (relative difference printed), and the loss's own
stages are timed (diagrams of both sides, matching, loss + backward). ``--memory`` adds the
peak resident memory one call of ours adds, in a fresh process per batch. Prints a table and
writes JSON (default ``bench/results/loss3d_cpu2.json``).

Examples::

    python bench/loss3d.py                               # 4 x 64^3 (repeats) and 2 x 128^3
    python bench/loss3d.py --cases 4x32 --repeats 3      # quick
    python bench/loss3d.py --cases 2x128 --ref-repeats 0 --memory
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported: one thread

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from satloss_gpu import SATLoss  # noqa: E402
from satloss_gpu.training.synthetic3d import generate_volume  # noqa: E402

KINDS = ("noisy", "smooth")


# ----------------------------------------------------------------------------- inputs

def make_batch(kind: str, batch: int, size: int, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target), both (B, 1, size, size, size) float32, pred in [0, 1], target 0/1."""
    rng = np.random.default_rng(seed)
    target = np.stack([generate_volume("vessels", (size,) * 3, seed=seed + b)[1]
                       for b in range(batch)])[:, None].astype(np.float32)
    if kind == "noisy":
        pred = 1.0 / (1.0 + np.exp(-rng.standard_normal(target.shape)))
    else:
        noisy = target + 0.2 * rng.standard_normal(target.shape)
        pred = np.clip(gaussian_filter(noisy, (0, 0, 1.0, 1.0, 1.0)), 0.0, 1.0)
    return torch.as_tensor(pred.astype(np.float32)), torch.as_tensor(target)


# ----------------------------------------------------------------------------- the reference

def _pairs(volume: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per dimension 0, 1, 2: (birth voxels, death voxels) (K, 3), from one gudhi
    T-construction complex of the rank volume; the essential class dies at the last voxel
    of the order; pairs of zero persistence dropped."""
    import gudhi

    order = np.argsort(volume.ravel(), kind="stable")
    ranks = np.empty(order.size)
    ranks[order] = np.arange(order.size)
    ranks = ranks.reshape(volume.shape)
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=ranks)
    # Z/2 coefficients, as every backend: gudhi's default Z/11 pairs some 3D H1 classes differently
    complex_.compute_persistence(homology_coeff_field=2, min_persistence=0)
    regular, essential = complex_.cofaces_of_persistence_pairs()

    def voxels(flat_f) -> np.ndarray:
        flat = np.asarray(flat_f, dtype=np.int64).ravel()
        return np.stack(np.unravel_index(flat, volume.shape, order="F"), axis=1)

    out = []
    for dim in (0, 1, 2):
        births, deaths = [np.zeros((0, 3), np.int64)], [np.zeros((0, 3), np.int64)]
        if dim < len(regular) and len(regular[dim]):
            cells = np.asarray(regular[dim]).reshape(-1, 2)
            births.append(voxels(cells[:, 0]))
            deaths.append(voxels(cells[:, 1]))
        if dim == 0 and len(essential) and len(essential[0]):
            last = np.array(np.unravel_index(int(order[-1]), volume.shape))
            births.append(voxels(essential[0]))
            deaths.append(np.repeat(last[None], len(np.ravel(essential[0])), axis=0))
        birth, death = np.concatenate(births), np.concatenate(deaths)
        keep = volume[tuple(birth.T)] != volume[tuple(death.T)]
        out.append((birth[keep], death[keep]))
    return out


def reference_loss(pred: torch.Tensor, target: torch.Tensor,
                   clamp: tuple[float, float] = (0.05, 1.0)) -> torch.Tensor:
    """SATLoss of (B, 1, D, H, W) volumes, one volume and dimension at a time (gudhi + POT)."""
    import ot

    size = torch.tensor(pred.shape[2:], dtype=pred.dtype)
    per_volume = []
    for b in range(pred.shape[0]):
        x = 1.0 - F.pad(pred[b:b + 1], (1, 1) * 3, value=1.0)[0, 0]
        y = 1.0 - F.pad(target[b:b + 1], (1, 1) * 3, value=1.0)[0, 0]
        x_np, y_np = x.detach().numpy(), y.numpy()
        loss = x.sum() * 0.0
        for (bp, dp), (bt, dt) in zip(_pairs(x_np), _pairs(y_np)):
            n, m = len(bp), len(bt)
            if n + m == 0:
                continue
            pb, pd = x[tuple(bp.T)], x[tuple(dp.T)]
            tb, td = y[tuple(bt.T)], y[tuple(dt.T)]
            distance = torch.sqrt((pb[:, None] - tb[None]) ** 2 + (pd[:, None] - td[None]) ** 2)
            offset = torch.as_tensor(bp[:, None] - bt[None], dtype=x.dtype)
            factor = torch.sqrt(((offset / size) ** 2).sum(-1)).clamp(*clamp)
            cost = x.new_zeros((n + 1, m + 1))
            cost[:n, :m] = factor * distance
            cost[:n, m] = (pd - pb).abs() / math.sqrt(2)
            cost[n, :m] = (td - tb).abs() / math.sqrt(2)
            a = torch.tensor([1.0] * n + [float(m)], dtype=x.dtype)
            bb = torch.tensor([1.0] * m + [float(n)], dtype=x.dtype)
            loss = loss + ot.emd2(a, bb, cost, numItermax=10_000_000)
        per_volume.append(loss)
    return torch.stack(per_volume).mean()


# ----------------------------------------------------------------------------- timing

def _ours(pred: torch.Tensor, target: torch.Tensor) -> float:
    p = pred.clone().requires_grad_(True)
    loss = SATLoss()(p, target)
    loss.backward()
    return float(loss.detach())


def _reference(pred: torch.Tensor, target: torch.Tensor) -> float:
    p = pred.clone().requires_grad_(True)
    loss = reference_loss(p, target)
    loss.backward()
    return float(loss.detach())


def _cpu_time(fn, *args) -> tuple[float, float]:
    """(CPU seconds, value) of one call."""
    start = time.process_time()
    value = fn(*args)
    return time.process_time() - start, value


def _stages(pred: torch.Tensor, target: torch.Tensor, repeats: int) -> dict:
    """Median CPU seconds of the loss's stages: diagrams of both sides (checks, frame,
    persistence, pair tables), the exact matching, the loss from the matching + backward."""
    from satloss_gpu.losses import LossOptions
    from satloss_gpu.losses.functional import _build, _loss_from_assignment, _solve

    options = LossOptions()
    times = {"diagrams_s": [], "matching_s": [], "loss_backward_s": []}
    for _ in range(repeats):
        p = pred.clone().requires_grad_(True)
        seconds, state = _cpu_time(_build, p, target, options, None, None)
        times["diagrams_s"].append(seconds)
        seconds, assignment = _cpu_time(_solve, state, options)
        times["matching_s"].append(seconds)
        seconds, _ = _cpu_time(lambda: _loss_from_assignment(state, assignment).sum().backward())
        times["loss_backward_s"].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def _points(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Median numbers of prediction and target points per volume and dimension."""
    matchings = SATLoss().match(pred, target)
    counts = {}
    for side in ("pred", "target"):
        for dim in (0, 1, 2):
            sizes = [len(getattr(m, f"{side}_birth")) for m in matchings if m.dim == dim]
            counts[f"{side}_H{dim}"] = int(statistics.median(sizes))
    return counts


def run_case(kind: str, batch: int, size: int, repeats: int, ref_repeats: int) -> dict:
    pred, target = make_batch(kind, batch, size)
    _ours(pred[:1, :, :8, :8, :8], target[:1, :, :8, :8, :8])  # compile outside the timings
    ours, reference, values = [], [], {}
    for r in range(max(repeats, ref_repeats)):
        if r < repeats:
            seconds, values["ours"] = _cpu_time(_ours, pred, target)
            ours.append(seconds)
        if r < ref_repeats:
            seconds, values["reference"] = _cpu_time(_reference, pred, target)
            reference.append(seconds)
    row = {"kind": kind, "batch": batch, "size": size, "ours_s": ours,
           "ours_median_s": statistics.median(ours), "loss": values["ours"]}
    if reference:
        row.update(reference_s=reference, reference_median_s=statistics.median(reference),
                   reference_loss=values["reference"],
                   speedup=statistics.median(reference) / statistics.median(ours),
                   relative_difference=abs(values["ours"] - values["reference"])
                   / max(abs(values["reference"]), 1e-300))
    row.update(_stages(pred, target, min(repeats, 3)))
    row.update(_points(pred, target))
    return row


def _resident_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _child_memory(path: str) -> None:
    """In a fresh process: the peak resident memory that one forward + backward adds over
    the memory before the call (sampled every millisecond; the compiled kernels, whose
    compilation can peak higher, are loaded by a first call on a small crop)."""
    data = np.load(path)
    pred, target = torch.as_tensor(data["pred"]), torch.as_tensor(data["target"])
    _ours(pred[:1, :, :8, :8, :8], target[:1, :, :8, :8, :8])
    before = _resident_bytes()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _ours(pred, target)
    done.set()
    sampler.join()
    print(json.dumps({"added_peak_bytes": peak[0] - before}))


def measure_memory(kind: str, batch: int, size: int) -> dict:
    """Peak memory added by the loss of one batch, in a fresh process (bytes, per voxel)."""
    pred, target = make_batch(kind, batch, size)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "batch.npz")
        np.savez(path, pred=pred.numpy(), target=target.numpy())
        done = subprocess.run([sys.executable, __file__, "--_child-memory", path],
                              capture_output=True, text=True, check=True)
    added = json.loads(done.stdout.strip().splitlines()[-1])["added_peak_bytes"]
    return {"added_peak_bytes": added, "bytes_per_voxel": added / (batch * size ** 3)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="4x64,2x128",
                        help="comma-separated BxSIZE batches of SIZE^3 volumes")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=3,
                        help="reference repeats (1 for volumes of 128 or more)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                                       "loss3d_cpu2.json"))
    parser.add_argument("--memory", action="store_true",
                        help="also the peak memory one loss call adds, in fresh processes")
    parser.add_argument("--_child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args._child_memory:
        return _child_memory(args._child_memory)
    rows = []
    print(f"{'kind':7} {'batch':>12} {'ours (s)':>9} {'reference (s)':>14} {'ratio':>7} "
          f"{'rel. diff':>9}  {'ours: diagrams / matching / loss+backward (s)':>45}  "
          f"points per volume pred H0/H1/H2 | target H0/H1/H2")
    for case in args.cases.split(","):
        batch, size = (int(v) for v in case.split("x"))
        for kind in args.kinds.split(","):
            ref_repeats = args.ref_repeats if size < 128 else min(args.ref_repeats, 1)
            row = run_case(kind, batch, size, args.repeats, ref_repeats)
            if args.memory:
                row.update(measure_memory(kind, batch, size))
            rows.append(row)
            ref = row.get("reference_median_s", float("nan"))
            print(f"{kind:7} {batch:>3} x {size:>3}^3 {row['ours_median_s']:9.3f} {ref:14.2f} "
                  f"{row.get('speedup', float('nan')):6.1f}x "
                  f"{row.get('relative_difference', float('nan')):9.1e}  "
                  f"{row['diagrams_s']:>22.3f} / {row['matching_s']:.3f} / "
                  f"{row['loss_backward_s']:.3f}  {row['pred_H0']}/{row['pred_H1']}/{row['pred_H2']} | "
                  f"{row['target_H0']}/{row['target_H1']}/{row['target_H2']}"
                  + (f"  peak +{row['added_peak_bytes'] / 2**20:.0f} MiB "
                     f"({row['bytes_per_voxel']:.0f} B/voxel)" if args.memory else ""),
                  flush=True)
    results = {
        "what": "SATLoss forward + backward on (B, 1, D, H, W) volumes, one CPU thread, CPU "
                "seconds (medians), against a per-volume gudhi + POT reference",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "repeats": args.repeats, "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
