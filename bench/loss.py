"""Benchmark of the batched SATLoss (forward + backward) against a reference-style loop.

One batch of B images of H x W pixels (default 16 x 300 x 300), binary targets from the
synthetic vessel generator, and two kinds of realistic predictions:

* ``smooth``: Gaussian-blurred uniform noise (sigma 2), rescaled to [0, 1];
* ``blurred``: the target plus Gaussian noise, blurred (sigma 1.5) and clipped: the output of
  a partly trained network (connected structures with gaps, spurious blobs, soft edges).

Timed, side by side in one run (medians of ``--repeats``):

* ``ours``: ``SATLoss()(pred, target)`` then ``backward()``, on ``--device``; also its stages
  (persistence of both sides and cost matrices, matching, loss and backward);
* ``reference``: the reference's per-image loop on the CPU: gudhi ``CubicalComplex`` with
  ``cofaces_of_persistence_pairs`` on each padded image, the cost matrix in torch, POT's
  ``ot.emd2``, summed over H0 and H1, mean over the batch, ``backward()``;
* ``unet``: one training step of a U-Net (``--unet``, BCE, Adam) on the same batch, to report
  the loss as a share of a training step (default: the full UNet on CUDA, none on the CPU).

Optional sections, side by side in the same run:

* ``--changes``: what each change of the lean pipeline gives, on the first kind's batch, in
  CPU time (medians, the two ways interleaved): the input checks (three passes before, one
  now), the essential class's last pixel (torch before, returned by the persistence backend
  now), the matching (dense cost matrices + looped ``ot.emd`` before, the exact reduction
  now); persistence is timed as well (the same code either way);
* ``--busy``: the default threads against one thread (``NUMBA_NUM_THREADS=1``), each in
  fresh processes, alternately, with and without another process keeping one core busy;
* ``--large N``: one N x N image (B = 1) forward+backward in a fresh process: time and peak
  resident memory.

Prints tables (ms) with the speed-ups and writes JSON to ``bench/out/loss.json``.

Examples::

    python bench/loss.py --device cuda --repeats 10            # GPU machine
    NUMBA_NUM_THREADS=1 python bench/loss.py --size 512 --no-reference --kinds blurred --changes
    python bench/loss.py --no-reference --kinds blurred --repeats 3 --busy --large 4096
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from satloss_gpu import SATLoss
from satloss_gpu.losses import LossOptions
from satloss_gpu.losses.functional import _build, _loss_from_assignment, _solve
from satloss_gpu.training.synthetic import generate


# ----------------------------------------------------------------------------- inputs

def make_batch(kind: str, batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target), both (B, 1, H, W) float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    target = np.stack([generate("vessels", (size, size), seed=seed + b)[1] for b in range(batch)])
    target = target[:, None].astype(np.float64)
    if kind == "smooth":
        noise = gaussian_filter(rng.random(target.shape), (0, 0, 2.0, 2.0))
        low = noise.min(axis=(2, 3), keepdims=True)
        high = noise.max(axis=(2, 3), keepdims=True)
        pred = (noise - low) / (high - low)
    else:
        noisy = target + 0.35 * rng.standard_normal(target.shape)
        pred = np.clip(gaussian_filter(noisy, (0, 0, 1.5, 1.5)), 0.0, 1.0)
    return pred, target


# ----------------------------------------------------------------------------- reference loop

def _reference_pairs(image: np.ndarray, dim: int):
    import gudhi

    height, width = image.shape
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=image)
    complex_.compute_persistence()
    regular, essential = complex_.cofaces_of_persistence_pairs()
    pairs = []
    if dim < len(regular) and len(regular[dim]):
        cells = np.asarray(regular[dim]).reshape(-1, 2)
        b = np.unravel_index(cells[:, 0], (height, width), order="F")
        d = np.unravel_index(cells[:, 1], (height, width), order="F")
        pairs.append((np.stack(b, 1), np.stack(d, 1)))
    if dim == 0 and len(essential) and len(essential[0]):
        b = np.unravel_index(np.ravel(essential[0]), (height, width), order="F")
        last = np.array(np.unravel_index(int(np.argmax(image)), image.shape))
        pairs.append((np.stack(b, 1), np.tile(last, (len(b[0]), 1))))
    if not pairs:
        return np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64)
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def reference_loss(pred: torch.Tensor, target: np.ndarray, clamp=(0.05, 1.0)) -> torch.Tensor:
    """The reference's algorithm, one image at a time (CPU, gudhi + POT)."""
    import ot

    total = []
    height, width = pred.shape[-2:]
    for b in range(pred.shape[0]):
        x = 1.0 - F.pad(pred[b, 0][None, None], (1, 1, 1, 1), value=1.0)[0, 0]
        y = torch.as_tensor(1.0 - np.pad(target[b, 0], 1, constant_values=1.0))
        x_np = x.detach().numpy()
        image_loss = x.sum() * 0.0
        for dim in (0, 1):
            bp, dp = _reference_pairs(x_np, dim)
            bt, dt = _reference_pairs(y.numpy(), dim)
            keep_p = x_np[tuple(bp.T)] != x_np[tuple(dp.T)]
            keep_t = y.numpy()[tuple(bt.T)] != y.numpy()[tuple(dt.T)]
            bp, dp, bt, dt = bp[keep_p], dp[keep_p], bt[keep_t], dt[keep_t]
            pb, pdth = x[tuple(bp.T)], x[tuple(dp.T)]
            tb, tdth = y[tuple(bt.T)], y[tuple(dt.T)]
            n, m = len(pb), len(tb)
            if n + m == 0:
                continue
            pd = torch.sqrt((pb[:, None] - tb[None]) ** 2 + (pdth[:, None] - tdth[None]) ** 2)
            offset = torch.as_tensor(bp[:, None] - bt[None], dtype=x.dtype)
            sp = torch.sqrt((offset[..., 0] / height) ** 2 + (offset[..., 1] / width) ** 2)
            cost = x.new_zeros((n + 1, m + 1))
            cost[:n, :m] = sp.clamp(*clamp) * pd
            cost[:n, m] = (pdth - pb).abs() / math.sqrt(2)
            cost[n, :m] = (tdth - tb).abs() / math.sqrt(2)
            a = torch.tensor([1.0] * n + [float(m)], dtype=x.dtype)
            bb = torch.tensor([1.0] * m + [float(n)], dtype=x.dtype)
            image_loss = image_loss + ot.emd2(a, bb, cost, numItermax=10_000_000)
        total.append(image_loss)
    return torch.stack(total).mean()


# ----------------------------------------------------------------------------- timing

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, repeats: int, device: str, warmup: int = 1) -> tuple[float, object]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def time_ours(pred: torch.Tensor, target: torch.Tensor, repeats: int, device: str, solver: str):
    crit = SATLoss(solver=solver)

    def run():
        p = pred.clone().requires_grad_(True)
        loss = crit(p, target)
        loss.backward()
        return loss.item()

    total, value = _time(run, repeats, device)
    total_cpu = _cpu_median(run, repeats) if device == "cpu" else float("nan")
    stages = {"build": [], "match": [], "loss_backward": []}
    for _ in range(max(1, min(repeats, 3)) + 1):  # the first run is a warm-up
        p = pred.clone().requires_grad_(True)
        _sync(device)
        t0 = time.perf_counter()
        state = _build(p, target, LossOptions(solver=solver), None, None)
        _sync(device)
        t1 = time.perf_counter()
        assignment = _solve(state, LossOptions(solver=solver))
        _sync(device)
        t2 = time.perf_counter()
        _loss_from_assignment(state, assignment).sum().backward()
        _sync(device)
        t3 = time.perf_counter()
        for key, value_ in zip(stages, (t1 - t0, t2 - t1, t3 - t2)):
            stages[key].append(value_)
    sizes = {"pred_points_max": state.pred.width, "target_points_max": state.target.width,
             "pred_points_mean": float(state.pred.size.float().mean()),
             "target_points_mean": float(state.target.size.float().mean())}
    sizes["ours_cpu_s"] = total_cpu
    return total, value, {k: statistics.median(v[1:]) for k, v in stages.items()}, sizes


def time_reference(pred: torch.Tensor, target: torch.Tensor, repeats: int):
    pred_cpu = pred.detach().cpu().double()
    target_np = target.detach().cpu().double().numpy()

    def run():
        p = pred_cpu.clone().requires_grad_(True)
        loss = reference_loss(p, target_np)
        loss.backward()
        return loss.item()

    return _time(run, repeats, "cpu", warmup=0)


def time_unet(name: str, pred: torch.Tensor, target: torch.Tensor, repeats: int, device: str):
    from satloss_gpu.training.models import build_model, pad_to_multiple

    model = build_model(name, in_channels=3).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, _ = pad_to_multiple(pred.float().expand(-1, 3, -1, -1).contiguous(), model.divisor)
    labels, _ = pad_to_multiple(target.float(), model.divisor)

    def step():
        optimiser.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy(model(images), labels)
        loss.backward()
        optimiser.step()
        return loss.item()

    seconds, _ = _time(step, repeats, device, warmup=2)
    return seconds


# ----------------------------------------------------------------------------- changes

def _cpu_median(fn, repeats: int) -> float:
    """Median CPU time (s) of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _old_checks(pred: torch.Tensor, target: torch.Tensor) -> None:
    """The input checks as they were: finiteness, range and binary test in separate passes."""
    for array in (pred, target):
        if not bool(torch.isfinite(array).all()):
            raise ValueError("not finite")
    if float(pred.min()) < 0 or float(pred.max()) > 1:
        raise ValueError("range")
    if bool(((target != 0) & (target != 1)).any()):
        raise ValueError("binary")


def _old_last_pixel(flat: torch.Tensor) -> torch.Tensor:
    top = flat.max(dim=1, keepdim=True).values
    index = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    return torch.where(flat == top, index, torch.full_like(index, -1)).max(dim=1).values


def time_changes(pred: torch.Tensor, target: torch.Tensor, repeats: int) -> dict:
    """CPU time of each changed stage, before and after, on one batch (interleaved)."""
    from satloss_gpu._validation import check_pred_target
    from satloss_gpu.losses.costs import cost_matrices, diagonal_costs
    from satloss_gpu.matching import match_batch
    from satloss_gpu.persistence import cubical_persistence

    options = LossOptions()
    state = _build(pred, target, options, None, None)
    x = state.pred_padded.detach()
    flat = x.reshape(x.shape[0], -1)

    def dense_emd():
        cost = cost_matrices(state.pred, state.target, state.image_shape, True, (0.05, 1.0))
        return match_batch(cost, diagonal_costs(state.pred), diagonal_costs(state.target),
                           state.pred.size, state.target.size, solver="emd")

    pairs = {
        "input checks": (lambda: _old_checks(pred, target),
                         lambda: check_pred_target(pred, target)),
        # the persistence backend now returns the last pixel with the pairs: no pass of its own
        "essential pixel": (lambda: _old_last_pixel(flat), lambda: None),
        "matching": (dense_emd, lambda: _solve(state, options)),
    }
    rows = {}
    for name, (before, after) in pairs.items():
        runs = {"before": [], "after": []}
        for _ in range(repeats):
            runs["before"].append(_cpu_median(before, 1))
            runs["after"].append(_cpu_median(after, 1))
        rows[name] = {k: statistics.median(v) for k, v in runs.items()}
    images = np.concatenate([x.numpy(), (1.0 - F.pad(target, (1, 1, 1, 1), value=1.0))
                             .reshape(x.shape).numpy()])
    persistence = _cpu_median(lambda: cubical_persistence(images), repeats)
    rows["persistence (same code)"] = {"before": persistence, "after": persistence}
    print("\nWhat each change gives (CPU ms, medians, before and after interleaved):")
    print(f"{'stage':26s} {'before':>9s} {'after':>9s} {'gain ms':>9s} {'x':>6s}")
    for name, row in rows.items():
        gain = row["before"] - row["after"]
        print(f"{name:26s} {1e3 * row['before']:9.1f} {1e3 * row['after']:9.1f} "
              f"{1e3 * gain:9.1f} {row['before'] / max(row['after'], 1e-9):6.1f}")
    return rows


# ----------------------------------------------------------------------------- child runs

def _child(argv: list[str], threads: "int | None" = None) -> dict:
    """Run this script with ``argv`` in a fresh process; return the JSON it prints last."""
    env = dict(os.environ)
    env.pop("NUMBA_NUM_THREADS", None)
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, __file__, *argv], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_time(args) -> None:
    """Child: median wall time (s) of SATLoss fwd+bwd on the given batch; prints JSON."""
    pred_np, target_np = make_batch(args.kinds.split(",")[0], args.batch, args.size)
    pred = torch.as_tensor(pred_np, dtype=torch.float32)
    target = torch.as_tensor(target_np, dtype=torch.float32)
    seconds, _, _, _ = time_ours(pred, target, args.repeats, "cpu", args.solver)
    print(json.dumps({"seconds": seconds}))


def _child_large(args) -> None:
    """Child: one large image fwd+bwd; prints JSON with time and peak resident memory."""
    size = args.large
    tile = generate("vessels", (512, 512), seed=0)[1].astype(np.float32)
    reps = -(-size // 512)
    target = np.tile(tile, (reps, reps))[:size, :size]
    rng = np.random.default_rng(0)
    noisy = target + 0.35 * rng.standard_normal(target.shape).astype(np.float32)
    pred = np.clip(gaussian_filter(noisy, 1.5), 0.0, 1.0)
    del noisy
    pred = torch.as_tensor(pred)[None, None]
    target = torch.as_tensor(target)[None, None]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    p = pred.clone().requires_grad_(True)
    start = time.perf_counter()
    cpu = time.process_time()
    loss = SATLoss()(p, target)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": size, "seconds": seconds, "cpu_seconds": time.process_time() - cpu,
                      "loss": loss.item(), "peak_rss_bytes": peak,
                      "rss_before_loss_bytes": before}))


def time_busy(args) -> dict:
    """Default threads vs one thread, fresh processes, with and without a busy core."""
    argv = ["--_child-time", "--batch", str(args.batch), "--size", str(args.size),
            "--kinds", args.kinds.split(",")[0], "--repeats", str(args.repeats)]
    rows = {}
    for busy in (False, True):
        spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
                   if busy else None)
        try:
            runs = {"default": [], "one thread": []}
            for _ in range(args.busy_rounds):
                runs["default"].append(_child(argv)["seconds"])
                runs["one thread"].append(_child(argv, threads=1)["seconds"])
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        rows["busy core" if busy else "idle"] = {k: statistics.median(v)
                                                 for k, v in runs.items()}
    print(f"\nThreads, {args.batch} x {args.size}x{args.size} fwd+bwd (wall ms, medians of "
          f"{args.busy_rounds} fresh processes each):")
    print(f"{'machine':10s} {'default':>9s} {'1 thread':>9s} {'ratio':>7s}")
    for name, row in rows.items():
        print(f"{name:10s} {1e3 * row['default']:9.1f} {1e3 * row['one thread']:9.1f} "
              f"{row['default'] / row['one thread']:7.2f}")
    return rows


def time_large(size: int) -> dict:
    row = _child(["--_child-large", "--large", str(size)])
    print(f"\nOne {size}x{size} image fwd+bwd: {row['seconds']:.1f} s wall, "
          f"{row['cpu_seconds']:.1f} s CPU, peak resident memory "
          f"{row['peak_rss_bytes'] / 2**30:.2f} GiB "
          f"({row['rss_before_loss_bytes'] / 2**30:.2f} GiB before the loss), "
          f"loss {row['loss']:.2f}")
    return row


# ----------------------------------------------------------------------------- main

def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=1)
    parser.add_argument("--kinds", default="smooth,blurred")
    parser.add_argument("--solver", default="auto")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--unet", default=None, choices=("UNet", "UNet_small", "none"),
                        help="model for the training-step share (default: UNet on cuda)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--sinkhorn", action="store_true",
                        help="also time solver='sinkhorn' and report its error against exact")
    parser.add_argument("--changes", action="store_true",
                        help="time each changed stage before and after")
    parser.add_argument("--busy", action="store_true",
                        help="default threads vs one thread, with and without a busy core")
    parser.add_argument("--busy-rounds", type=int, default=3)
    parser.add_argument("--large", type=int, default=0,
                        help="also one LARGE x LARGE image in a fresh process")
    parser.add_argument("--_child-time", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_child-large", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out",
                                                      "loss.json"))
    args = parser.parse_args()
    if args._child_time:
        return _child_time(args)
    if args._child_large:
        return _child_large(args)
    unet = args.unet or ("UNet" if args.device == "cuda" else "none")
    dtype = getattr(torch, args.dtype)

    results = {
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"unet": unet},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None},
        "kinds": {},
    }
    header = (f"{'input':8s} {'ours ms':>9s} {'cpu ms':>8s} {'build':>8s} {'match':>8s} "
              f"{'bwd':>7s} "
              f"{'ref ms':>9s} {'speed-up':>8s} {'unet ms':>8s} {'share':>6s} "
              f"{'n_pred':>7s} {'loss':>9s} {'ref loss':>9s}")
    print(f"SATLoss forward+backward, batch {args.batch} x {args.size}x{args.size}, "
          f"{args.device}, {args.dtype}, solver={args.solver}")
    print(header)
    for kind in args.kinds.split(","):
        pred_np, target_np = make_batch(kind, args.batch, args.size)
        pred = torch.as_tensor(pred_np, dtype=dtype, device=args.device)
        target = torch.as_tensor(target_np, dtype=dtype, device=args.device)
        ours, value, stages, sizes = time_ours(pred, target, args.repeats, args.device,
                                               args.solver)
        row = {"ours_s": ours, "loss": value, "stages_s": stages, **sizes}
        if not args.no_reference:
            ref, ref_value = time_reference(pred, target, args.ref_repeats)
            row.update(reference_s=ref, reference_loss=ref_value, speedup=ref / ours)
        if args.sinkhorn:
            approx, approx_value, _, _ = time_ours(pred, target, args.repeats, args.device,
                                                   "sinkhorn")
            row.update(sinkhorn_s=approx, sinkhorn_loss=approx_value,
                       sinkhorn_rel_error=(approx_value - value) / value)
            print(f"{kind:8s} sinkhorn: {1e3 * approx:.1f} ms, loss {approx_value:.4f} "
                  f"({100 * (approx_value - value) / value:+.2f}% vs exact)")
        if unet != "none":
            step = time_unet(unet, pred, target, max(3, args.repeats), args.device)
            row.update(unet_step_s=step, loss_share_of_step=ours / (ours + step))
        results["kinds"][kind] = row
        if args.changes and "changes" not in results:
            results["changes"] = time_changes(pred.cpu(), target.cpu(), args.repeats)
        print(f"{kind:8s} {1e3 * ours:9.1f} {1e3 * sizes['ours_cpu_s']:8.1f} "
              f"{1e3 * stages['build']:8.1f} "
              f"{1e3 * stages['match']:8.1f} {1e3 * stages['loss_backward']:7.1f} "
              f"{1e3 * row.get('reference_s', float('nan')):9.1f} "
              f"{row.get('speedup', float('nan')):8.1f} "
              f"{1e3 * row.get('unet_step_s', float('nan')):8.1f} "
              f"{100 * row.get('loss_share_of_step', float('nan')):5.1f}% "
              f"{sizes['pred_points_mean']:7.0f} {value:9.4f} "
              f"{row.get('reference_loss', float('nan')):9.4f}")
    if args.busy:
        results["threads"] = time_busy(args)
    if args.large:
        results["large"] = time_large(args.large)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
