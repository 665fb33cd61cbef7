"""What does SATLoss cost in training? Throughput and scaling of the loss.

1. **Training throughput**, side by side in one run: the same model (UNet_small), the same
   batches (synthetic vessels, ``--batch`` x ``--size``), the same optimiser (Adam), three
   criteria:

   * ``bce``: BCE alone;
   * ``bce+sat``: BCE + 0.01 SATLoss from this package (``satloss_gpu.SATLoss``, on
     ``--device``);
   * ``bce+sat_reference``: BCE + 0.01 reference-style SATLoss (``reference_loss`` of
     ``bench/loss.py``: per image, gudhi + POT on the CPU, the same semantics).

   Each is timed from the same two starting points: the freshly initialised model (noisy
   predictions, the most persistence pairs) and the model after ``--pretrain-steps`` BCE
   steps (predictions that look like vessels). Images per second = batch / median step time
   over ``--steps`` steps after ``--warmup`` steps. On CUDA the GPU utilisation
   (``torch.cuda.utilization()``, when available) is sampled during the timed steps.

2. **Scaling of the loss**: ``SATLoss`` forward + backward (median of ``--repeats``) on
   "blurred" predictions (``make_batch`` of ``bench/loss.py``: target plus noise, blurred)
   against the image size (``--sizes``, batch 4) and the batch size (``--batches``, 128 x 128).

Prints tables, writes ``bench/out/training_cost.json`` and the plot
``bench/figures/training_cost.png``.

Examples::

    python bench/training_cost.py                      # CPU
    python bench/training_cost.py --device cuda        # GPU, unchanged
    python bench/training_cost.py --quick              # seconds, for a smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loss import make_batch, reference_loss  # noqa: E402  (bench/loss.py)

from satloss_gpu import SATLoss  # noqa: E402
from satloss_gpu.training.models import build_model  # noqa: E402
from satloss_gpu.training.synthetic import generate  # noqa: E402

CRITERIA = ("bce", "bce+sat", "bce+sat_reference")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _UtilisationSampler:
    """Samples ``torch.cuda.utilization()`` in a thread while active (CUDA only)."""

    def __init__(self, device: torch.device, period: float = 0.05) -> None:
        self.device, self.period, self.samples = device, period, []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.available = device.type == "cuda"
        if self.available:
            try:
                torch.cuda.utilization(device)
            except Exception:  # noqa: BLE001 - pynvml missing or unsupported: report None
                self.available = False

    def __enter__(self) -> "_UtilisationSampler":
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(float(torch.cuda.utilization(self.device)))
            time.sleep(self.period)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> Optional[float]:
        return float(np.mean(self.samples)) if self.samples else None


# --------------------------------------------------------------------------- training steps
def _data(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, 3, size, size), labels (n, 1, size, size)) float32, synthetic vessels."""
    pairs = [generate("vessels", (size, size), seed=(seed, 7, i)) for i in range(n)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].expand(-1, 3, -1, -1)
    labels = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].float()
    return images.contiguous(), labels


def _criterion(name: str, weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``BCE + weight * term`` on logits; the term is ours, the reference's, or none."""
    ours = SATLoss()

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target)
        if name == "bce":
            return bce
        probs = torch.sigmoid(logits)
        if name == "bce+sat":
            return bce + weight * ours(probs, target)
        # the reference works on the CPU, per image (gudhi + POT)
        ref = reference_loss(probs.cpu(), target.detach().cpu().double().numpy())
        return bce + weight * ref.to(bce.device, bce.dtype)

    return loss


def _step(model, optimiser, criterion, images, labels) -> float:
    optimiser.zero_grad(set_to_none=True)
    loss = criterion(model(images, logits=True), labels)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def throughput(device: torch.device, batch: int, size: int, steps: int, warmup: int,
               ref_steps: int, pretrain_steps: int, weight: float, seed: int = 0) -> Dict[str, Any]:
    """Median training-step time and images/s of every criterion, at init and pretrained."""
    images, labels = _data(4 * batch, size, seed)
    images, labels = images.to(device), labels.to(device)
    batches = [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(images), batch)]
    torch.manual_seed(seed)
    init_model = build_model("UNet_small").to(device)
    init_state = {k: v.clone() for k, v in init_model.state_dict().items()}
    pretrained = build_model("UNet_small").to(device)
    pretrained.load_state_dict(init_state)
    opt = torch.optim.Adam(pretrained.parameters(), lr=3e-3)
    bce = _criterion("bce", weight)
    for k in range(pretrain_steps):
        _step(pretrained, opt, bce, *batches[k % len(batches)])
    starts = {"init": init_state,
              "pretrained": {k: v.clone() for k, v in pretrained.state_dict().items()}}
    out: Dict[str, Any] = {}
    for stage, state in starts.items():
        for name in CRITERIA:
            n_steps = ref_steps if name == "bce+sat_reference" else steps
            model = build_model("UNet_small").to(device)
            model.load_state_dict(state)
            model.train()
            optimiser = torch.optim.Adam(model.parameters(), lr=3e-4)
            criterion = _criterion(name, weight)
            for k in range(warmup):
                _step(model, optimiser, criterion, *batches[k % len(batches)])
            times, losses = [], []
            with _UtilisationSampler(device) as sampler:
                for k in range(n_steps):
                    _sync(device)
                    t0 = time.perf_counter()
                    losses.append(_step(model, optimiser, criterion, *batches[k % len(batches)]))
                    _sync(device)
                    times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            out[f"{stage}/{name}"] = {"stage": stage, "criterion": name, "steps": n_steps,
                                      "step_s_median": median, "step_s": times,
                                      "images_per_s": batch / median, "loss_last": losses[-1],
                                      "gpu_utilisation_mean": sampler.mean}
            print(f"{stage:10s} {name:18s} {1e3 * median:9.1f} ms/step {batch / median:8.2f} img/s"
                  + (f"  GPU {sampler.mean:.0f}%" if sampler.mean is not None else ""), flush=True)
    return out


# --------------------------------------------------------------------------- scaling
def loss_time(device: torch.device, batch: int, size: int, repeats: int) -> Dict[str, float]:
    """Median SATLoss forward + backward time on a "blurred" batch; number of points."""
    pred_np, target_np = make_batch("blurred", batch, size)
    pred = torch.as_tensor(pred_np, dtype=torch.float32, device=device)
    target = torch.as_tensor(target_np, dtype=torch.float32, device=device)
    crit = SATLoss()

    def run() -> float:
        p = pred.clone().requires_grad_(True)
        loss = crit(p, target)
        loss.backward()
        return float(loss.detach())

    run()  # warm-up (compilation, caches)
    times = []
    with _UtilisationSampler(device) as sampler:
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            run()
            _sync(device)
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"batch": batch, "size": size, "seconds": median, "times": times,
            "ms_per_image": 1e3 * median / batch, "megapixels_per_s": batch * size * size / median / 1e6,
            "gpu_utilisation_mean": sampler.mean}


def scaling(device: torch.device, sizes: Sequence[int], batches: Sequence[int], size_batch: int,
            batch_size: int, repeats: int) -> Dict[str, List[Dict[str, float]]]:
    """SATLoss time against the image size (batch ``size_batch``) and the batch size."""
    out: Dict[str, List[Dict[str, float]]] = {"size": [], "batch": []}
    for size in sizes:
        out["size"].append(loss_time(device, size_batch, size, repeats))
        r = out["size"][-1]
        print(f"size  {size:5d} batch {size_batch:3d}: {1e3 * r['seconds']:9.1f} ms "
              f"({r['ms_per_image']:.1f} ms/image, {r['megapixels_per_s']:.2f} Mpx/s)", flush=True)
    for batch in batches:
        out["batch"].append(loss_time(device, batch, batch_size, repeats))
        r = out["batch"][-1]
        print(f"batch {batch:5d} size {batch_size:4d}: {1e3 * r['seconds']:9.1f} ms "
              f"({r['ms_per_image']:.1f} ms/image, {r['megapixels_per_s']:.2f} Mpx/s)", flush=True)
    return out


def plot(result: Dict[str, Any], path: Path) -> Path:
    """Throughput bars and the two scaling curves, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    tp = result["throughput"]
    stages = sorted({v["stage"] for v in tp.values()}, key=["init", "pretrained"].index)
    width = 0.8 / len(CRITERIA)
    for j, name in enumerate(CRITERIA):
        values = [tp[f"{s}/{name}"]["images_per_s"] for s in stages]
        bars = axes[0].bar(np.arange(len(stages)) + (j - 1) * width, values, width, label=name)
        axes[0].bar_label(bars, fmt="%.1f", fontsize=7)
    axes[0].set_xticks(np.arange(len(stages)), [f"from {s}" for s in stages])
    axes[0].set_ylabel("training images / s")
    cfg = result["config"]
    axes[0].set_title(f"UNet_small, batch {cfg['batch']}, {cfg['size']}², {result['device']}",
                      fontsize=9)
    axes[0].set_ylim(0, 1.3 * max(v["images_per_s"] for v in tp.values()))
    axes[0].legend(fontsize=7, loc="upper right")
    for ax, key, label in ((axes[1], "size", "image side (batch %d)" % cfg["size_batch"]),
                           (axes[2], "batch", "batch size (%d²)" % cfg["batch_size_side"])):
        rows = result["scaling"][key]
        x = [r[key] for r in rows]
        ms = [1e3 * r["seconds"] for r in rows]
        ax.loglog(x, ms, "o-", label="SATLoss fwd+bwd")
        power = 2 if key == "size" else 1
        ax.loglog(x, [ms[0] * (v / x[0]) ** power for v in x], "k:", lw=1,
                  label="linear in pixels")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(x, [str(v) for v in x])
        ax.legend(fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3, which="both")
        ax.set_title(f"SATLoss forward + backward, {result['device']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def machine(device: torch.device) -> Dict[str, Any]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("numpy", "numba", "gudhi", "ot"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "versions": versions}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K (%(default)s)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (bce, bce+sat)")
    parser.add_argument("--ref-steps", type=int, default=5, help="timed steps of the reference")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=40)
    parser.add_argument("--weight", type=float, default=1e-2)
    parser.add_argument("--sizes", default="128,256,512,1024")
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--size-batch", type=int, default=4, help="batch of the size scaling")
    parser.add_argument("--batch-size-side", type=int, default=128, help="side of the batch scaling")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", default=str(HERE / "out" / "training_cost.json"))
    parser.add_argument("--figure", default=str(HERE / "figures" / "training_cost.png"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.steps, args.ref_steps, args.warmup = 2, 32, 2, 1, 1
        args.pretrain_steps, args.sizes, args.batches, args.repeats = 2, "32,64", "1,2", 1
        args.batch_size_side = 32
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    start = time.perf_counter()
    print(f"training throughput: UNet_small, batch {args.batch}, {args.size}x{args.size}, "
          f"{device}, tloss_w {args.weight}", flush=True)
    tp = throughput(device, args.batch, args.size, args.steps, args.warmup, args.ref_steps,
                    args.pretrain_steps, args.weight)
    print("SATLoss forward + backward scaling", flush=True)
    sc = scaling(device, sizes, batches, args.size_batch, args.batch_size_side, args.repeats)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "bench/training_cost.py"]
                                  + list(argv if argv is not None else sys.argv[1:])),
              "device": str(device), "machine": machine(device),
              "config": {k: v for k, v in vars(args).items() if k not in ("out", "figure")},
              "throughput": tp, "scaling": sc, "wall_s": time.perf_counter() - start,
              "load_average_before_after": [load_before, os.getloadavg()]}
    figure = plot(result, Path(args.figure))
    result["figure"] = str(figure)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} and {figure} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
