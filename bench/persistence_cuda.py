"""Time the GPU persistence backend per stage: 64 images of 512x512, H0 + H1 with critical pixels.

Inputs (float32, T-construction): uniform noise, noise blurred with sigma 4 (smooth), a
thin-structure likelihood map (blurred synthetic vessels with noise, as a segmentation network
outputs) and its binary mask (the loss's target). For each input: the median wall time of
``cubical_persistence(..., backend="cuda")`` over repeats after warm-up
(``torch.cuda.synchronize`` around each call), the median time of every pipeline stage (CUDA
events recorded between stages: order words, count (with the one size read-back), emit,
pointer jumping, the batched sort, the corner pass (H0), the square pass (H1), packing), the
same for the sequential one-thread-per-image pairing (the baseline), the work counts (critical
edges per pixel, halving levels), whether the result equals the CPU backend's on a few
images, and, on the noise batch, the halving stopped at several run lengths
(``CUDABackend(base_edges=...)``, to choose its default by measurement). Prints a table and writes ``bench/out/persistence_cuda.json``.

Usage::

    python bench/persistence_cuda.py [--batch 64] [--size 512] [--repeats 10]
    python bench/persistence_cuda.py --simulate   # no GPU: a tiny run in the Numba simulator

``--simulate`` only checks that the script and the pipeline run (2 images of 24x24 in the
CUDA simulator, host clock); its times mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

STAGES = ("order", "count", "emit", "jump", "sort", "corner pass", "square pass", "assemble")


def make_inputs(batch: int, size: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Named (batch, size, size) float32 batches."""
    from scipy.ndimage import gaussian_filter

    from satloss_gpu.training.synthetic import generate

    rng = np.random.default_rng(seed)
    noise = rng.random((batch, size, size)).astype(np.float32)
    smooth = np.stack([gaussian_filter(x, 4.0) for x in noise])
    labels = [generate("vessels", (size, size), seed=seed + k)[1] for k in range(min(batch, 8))]
    # At most eight distinct label maps, seen in the 8 rotations and flips of the square.
    masks = []
    for k in range(batch):
        turns, flip = divmod(k // len(labels), 4)[::-1]
        mask = np.rot90(labels[k % len(labels)], turns)
        masks.append(mask[:, ::-1] if flip % 2 else mask)
    masks = np.stack(masks)
    likelihood = np.stack([
        np.clip(gaussian_filter(m.astype(np.float64), 1.5) * 1.6
                + 0.25 * gaussian_filter(rng.random((size, size)), 1.0), 0.0, 1.0)
        for m in masks])
    return {
        "uniform noise": noise,
        "smooth (sigma 4)": smooth.astype(np.float32),
        "likelihood map": likelihood.astype(np.float32),
        "binary mask": masks.astype(np.float32),
    }


def pair_tuples(dg) -> list:
    d = dg.to_numpy()
    return sorted(zip(*(np.asarray(c).tolist()
                        for c in (d.image, d.dim, d.birth_index, d.death_index))))


def _clock(gpu: bool) -> Callable[[], Callable[[object], float]]:
    """A factory of stage marks: CUDA events on a GPU, the host clock in the simulator."""
    if gpu:
        import torch

        class Mark:
            def __init__(self):
                self.event = torch.cuda.Event(enable_timing=True)
                self.event.record()

            def until(self, later) -> float:
                return self.event.elapsed_time(later.event)

        return Mark

    class HostMark:
        def __init__(self):
            self.time = time.perf_counter()

        def until(self, later) -> float:
            return 1e3 * (later.time - self.time)

    return HostMark


def _synchronize(gpu: bool) -> None:
    if gpu:
        import torch

        torch.cuda.synchronize()


def time_backend(images, pairing: str, repeats: int, warmup: int, gpu: bool,
                 base_edges: int = 32) -> dict:
    """Median wall and stage times of one pairing on one batch (already on the device)."""
    from satloss_gpu import cubical_persistence
    from satloss_gpu.persistence import backends
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    backend = CUDABackend(pairing=pairing, base_edges=base_edges)
    saved = backends._INSTANCES.get("cuda")
    backends._INSTANCES["cuda"] = backend
    mark_type = _clock(gpu)
    marks: List[tuple] = []
    try:
        for _ in range(warmup):
            cubical_persistence(images, backend="cuda")
        _synchronize(gpu)
        walls: List[float] = []
        stage_ms: Dict[str, List[float]] = {s: [] for s in STAGES}
        backend.stage_hook = lambda name: marks.append((name, mark_type()))
        for _ in range(repeats):
            marks.clear()
            _synchronize(gpu)
            start = time.perf_counter()
            dg = cubical_persistence(images, backend="cuda")
            _synchronize(gpu)
            walls.append(time.perf_counter() - start)
            for (_, first), (name, second) in zip(marks, marks[1:]):
                if name in stage_ms:
                    stage_ms[name].append(first.until(second))
        backend.stage_hook = None
    finally:
        if saved is None:
            backends._INSTANCES.pop("cuda", None)
        else:
            backends._INSTANCES["cuda"] = saved
    return {
        "median_ms": 1e3 * statistics.median(walls),
        "min_ms": 1e3 * min(walls),
        "stage_ms": {k: statistics.median(v) for k, v in stage_ms.items() if v},
        "stats": dict(backend.last_stats),
        "pairs": len(dg),
        "diagrams": dg,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--check-images", type=int, default=4,
                        help="images per input compared with the CPU backend")
    parser.add_argument("--base-edges", type=int, default=32,
                        help="edges per thread where the halving stops (a power of two)")
    parser.add_argument("--sweep-base", default="8,32,128,512",
                        help="base_edges values also timed on the noise batch ('' for none)")
    parser.add_argument("--simulate", action="store_true",
                        help="no GPU: 2 images of 24x24 in the Numba CUDA simulator")
    args = parser.parse_args(argv)
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        args.batch, args.size, args.repeats, args.warmup = 2, 24, 1, 0
        args.check_images, args.sweep_base = 2, "4"
    else:
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0")
    import torch

    from satloss_gpu import cubical_persistence

    gpu = not args.simulate
    if gpu and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (or --simulate)")
    device = torch.cuda.get_device_name() if gpu else "Numba CUDA simulator"
    results = {"device": device, "batch": args.batch, "size": args.size,
               "repeats": args.repeats, "construction": "T", "dims": [0, 1], "inputs": {}}
    print(f"{device}: {args.batch} x {args.size}x{args.size}, H0+H1 with critical pixels, "
          "T-construction, float32")
    print(f"{'input':<18} {'cuda ms':>8} {'seq ms':>8} {'seq/cuda':>8} {'edges/px':>9} "
          f"{'levels':>6} {'pairs':>9} ok")
    for name, images in make_inputs(args.batch, args.size).items():
        device_images = torch.as_tensor(images, device="cuda") if gpu else images
        fast = time_backend(device_images, "halving", args.repeats, args.warmup, gpu,
                            args.base_edges)
        slow = time_backend(device_images, "sequential", max(1, args.repeats // 3),
                            min(args.warmup, 1), gpu)
        check = images[: args.check_images]
        expected = pair_tuples(cubical_persistence(check, backend="cpu"))
        got = pair_tuples(cubical_persistence(
            torch.as_tensor(check, device="cuda") if gpu else check, backend="cuda"))
        agrees = got == expected and pair_tuples(fast["diagrams"]) == pair_tuples(
            slow["diagrams"])
        stats = fast["stats"]
        row = {
            "cuda_median_ms": fast["median_ms"],
            "cuda_min_ms": fast["min_ms"],
            "sequential_median_ms": slow["median_ms"],
            "stage_ms": fast["stage_ms"],
            "sequential_stage_ms": slow["stage_ms"],
            "stats": stats,
            "pairs": fast["pairs"],
            "agrees_with_cpu_backend": bool(agrees),
        }
        results["inputs"][name] = row
        print(f"{name:<18} {row['cuda_median_ms']:8.2f} {row['sequential_median_ms']:8.2f} "
              f"{row['sequential_median_ms'] / row['cuda_median_ms']:8.1f} "
              f"{stats.get('critical_edges_per_pixel', 0):9.4f} "
              f"{stats.get('halving_levels', 0):6d} {row['pairs']:9d} "
              f"{'yes' if agrees else 'NO'}")
    sweep = [int(x) for x in args.sweep_base.split(",") if x.strip()]
    if sweep:
        noise = make_inputs(args.batch, args.size)["uniform noise"]
        noise = torch.as_tensor(noise, device="cuda") if gpu else noise
        results["base_edges_sweep"] = {}
        print("\nuniform noise, halving stopped at runs of base_edges edges:")
        print(f"{'base_edges':>10} {'cuda ms':>8} {'corner pass':>11} {'square pass':>11}")
        for base in sweep:
            timed = time_backend(noise, "halving", args.repeats, args.warmup, gpu, base)
            results["base_edges_sweep"][base] = {k: timed[k] for k in ("median_ms", "stage_ms")}
            print(f"{base:>10} {timed['median_ms']:8.2f} "
                  f"{timed['stage_ms'].get('corner pass', 0):11.3f} "
                  f"{timed['stage_ms'].get('square pass', 0):11.3f}")
    print("\nstage medians (ms), halving pairing | sequential pairing:")
    print(f"{'input':<18} " + " ".join(f"{s:>11}" for s in STAGES))
    for name, row in results["inputs"].items():
        print(f"{name:<18} " + " ".join(f"{row['stage_ms'].get(s, 0):11.3f}" for s in STAGES))
        print(f"{'  (sequential)':<18} "
              + " ".join(f"{row['sequential_stage_ms'].get(s, 0):11.3f}" for s in STAGES))
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    path = out / ("persistence_cuda_simulated.json" if args.simulate else "persistence_cuda.json")
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
