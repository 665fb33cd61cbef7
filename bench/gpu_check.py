"""One-process GPU check of satloss-gpu: versions, correctness with real CUDA, timings.

Everything runs in one Python process with its own time budget (``--budget``, seconds): the
kernels compile once, sections run in order of value and a section that no longer fits the
remaining budget is skipped, so the summary is always printed. Sections:

1. ``environment``: versions (Python, torch, CUDA, numba, numba-cuda, CuPy, POT, gudhi,
   cripser, NumPy), the device, the imports the check needs;
2. ``compile``: first call against later calls of the persistence and matching kernels, with
   numba-cuda's on-disk kernel cache turned on (fresh processes of the same run read it);
3. ``persistence``: the ``cuda`` backend against the ``cpu`` backend, identical diagrams,
   values and critical pixels, on a varied batch (noise, smooth, thin-structure likelihood
   maps, binary masks, quantised ties, constant images), 1xN, Nx1, 1x1 and mixed sizes, T and
   V, sub- and superlevel, float32 and float64, torch and CuPy inputs, a non-default torch
   stream with a kernel still in flight, repeated runs (bit-identical) and varied threads per
   block and pairing methods;
4. ``matching``: the CUDA matching kernel against the CPU solver and ``ot.emd2`` on random,
   diagram-like and real SATLoss problems;
5. ``losses``: ``SATLoss`` and ``TopoLoss`` on CUDA tensors, value and gradient against the
   CPU path (float64 and float32);
6. ``volumes``: 3D persistence (``spatial_dims=3``): the ``cuda`` backend against the ``cpu``
   backend on batches of 8 x 64^3 and 4 x 128^3 volumes (noise and smooth, T and V),
   identical diagrams, values and critical voxels (also with the backend option
   ``h1="device"`` on the 64^3 batches, where the backend has it), then CUDA-event medians
   per volume of the ``cuda`` backend (T, float32; each H1 path) with its stages, peak GPU
   memory and, for scale, one call of
   the ``cpu`` backend on all CPU cores; a reported skip where the ``cuda`` backend has no 3D
   path;
7. ``timing_persistence``, ``timing_matching``, ``timing_loss``: CUDA-event medians after
   warm-up: persistence of 64 x 512 x 512 per stage (noise, smooth, likelihood, binary), the
   sequential-pairing baseline, matching of real problems, the loss forward + backward at
   16 x 512 x 512 and its share of a UNet training step; peak GPU memory;
8. ``compile_cached``: a fresh process's first call with the kernel cache warm;
9. ``sanitizer``: ``compute-sanitizer`` racecheck and synccheck on a tiny run, if installed.

Writes ``gpu_check.json`` and ``gpu_check.log`` to ``$OUT`` if set, else to ``--out``
(default ``bench/out/``), and prints a table (section, status, seconds, key numbers) last.
Exit status 0 when no section failed or raised.

On a GPU machine without network, first (where pip works) download the wheels it lacks into
the git-ignored ``.wheels/`` folder, for the GPU machine's Python (3.12 here)::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .wheels POT==0.9.7.post1 gudhi==3.13.0 cripser==0.0.37

then, on the GPU machine, from the repository root, with ``.wheels/`` next to it::

    python3 bench/gpu_check.py --budget 330

The script installs ``.wheels/*.whl`` (``pip install --no-index --no-deps --target``) and,
if ``satloss_gpu`` is not importable, the project itself from the working tree, into a
temporary folder put first on ``sys.path``. Without a GPU::

    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_check.py --simulate

runs every section on tiny inputs in Numba's CUDA simulator (timings by the wall clock,
marked ``simulated``; CuPy, streams, compile and sanitizer skipped). The test suite runs it.
"""
from __future__ import annotations

import argparse
import faulthandler
import importlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
CORRECTNESS = ("environment", "persistence", "matching", "losses")


# ============================================================================ internals
# Everything below the public API that this script uses, in one place, so that it can be
# retargeted when modules move. A missing internal makes the part that needs it a reported
# skip, never a crash.
INTERNALS = {
    # the CUDA persistence backend class (options ``pairing``, ``threads``, ``stage_hook``)
    "cuda_backend": ("satloss_gpu.persistence.backends.cuda", "CUDABackend"),
    # the registry that ``cubical_persistence(backend="cuda")`` takes its instance from
    "backend_registry": ("satloss_gpu.persistence.backends", "_INSTANCES"),
}
#: Package holding the Numba-CUDA kernels (walked recursively for compile timing / caching).
KERNEL_PACKAGE = "satloss_gpu.kernels"


class Skip(Exception):
    """A part of the check that cannot run here (reported, not a failure)."""


def internal(name: str) -> Any:
    """The object named ``name`` in :data:`INTERNALS`; :class:`Skip` if it moved."""
    module_name, attribute = INTERNALS[name]
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise Skip(f"internal {module_name}.{attribute} not found ({error})") from error


@contextmanager
def cuda_backend_with(**options: Any):
    """Make ``cubical_persistence(backend="cuda")`` use a CUDA backend with ``options``."""
    backend_class = internal("cuda_backend")
    registry = internal("backend_registry")
    saved = registry.get("cuda")
    backend = backend_class(**options)
    registry["cuda"] = backend
    try:
        yield backend
    finally:
        if saved is None:
            registry.pop("cuda", None)
        else:
            registry["cuda"] = saved


def cuda_kernels() -> list:
    """Every Numba-CUDA kernel dispatcher (not device functions) under the kernel package."""
    import pkgutil

    from numba.cuda.dispatcher import CUDADispatcher

    package = importlib.import_module(KERNEL_PACKAGE)
    modules = [package]
    for info in pkgutil.walk_packages(package.__path__, KERNEL_PACKAGE + "."):
        modules.append(importlib.import_module(info.name))
    found = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, CUDADispatcher) and not value.targetoptions.get("device"):
                found[id(value)] = value
    return list(found.values())
# ============================================================================ end internals


# ---------------------------------------------------------------------------- environment


def prepare_environment(wheels: Path) -> dict:
    """Install carried wheels and, if needed, the project, into a temporary site folder.

    Must run before NumPy, Numba or the project are imported.
    """
    info: dict = {"wheels": [], "project_installed": False}
    files = sorted(str(p) for p in wheels.glob("*.whl")) if wheels.is_dir() else []
    target = None

    def pip_install(*what: str) -> None:
        nonlocal target
        if target is None:
            target = tempfile.mkdtemp(prefix="satloss-check-site-")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--upgrade", "--target", target, *what], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
        if target not in sys.path:
            sys.path.insert(0, target)
        importlib.invalidate_caches()

    if files:
        pip_install(*files)
        info["wheels"] = [Path(f).name for f in files]
    if importlib.util.find_spec("satloss_gpu") is None:
        pip_install("--no-build-isolation", str(REPO))
        info["project_installed"] = True
    info["site"] = target
    return info


def version_of(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # report what is missing, go on
        return f"missing ({type(error).__name__}: {error})"
    return str(getattr(module, "__version__", "?"))


# ---------------------------------------------------------------------------- the run


class Run:
    """Budget, sections, log and JSON of one check."""

    def __init__(self, out_dir: Path, budget: float, simulate: bool) -> None:
        self.start = time.perf_counter()
        self.budget = budget
        self.simulate = simulate
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = out_dir / "gpu_check.log"
        self.json_path = out_dir / "gpu_check.json"
        self.log_file = open(self.log_path, "w", encoding="utf-8")
        self.data: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "simulate": simulate,
                           "budget_s": budget, "sections": {}}
        self.current: Optional[dict] = None

    # -- budget and log ------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.budget - self.elapsed()

    def log(self, message: str) -> None:
        line = f"[{self.elapsed():7.1f} s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    # -- checks and numbers inside a section ---------------------------------------------
    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.current["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        self.log(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
        return bool(ok)

    def skip(self, name: str, reason: str) -> None:
        self.current["skipped"].append({"name": name, "reason": reason})
        self.log(f"  skip {name}: {reason}")

    def number(self, key: str, value: Any) -> None:
        self.current["numbers"][key] = value

    def key(self, text: str) -> None:
        """One short line of key numbers for the summary table."""
        self.current["key"] = text

    def guarded(self, name: str, function: Callable[[], None]) -> None:
        """Run one part of a section: :class:`Skip` is a skip, an exception a failed check."""
        if self.remaining() < 5:
            self.skip(name, "out of budget")
            return
        try:
            function()
        except Skip as reason:
            self.skip(name, str(reason))
        except Exception as error:  # recorded as a failure; the section goes on
            self.check(name, False, f"raised {type(error).__name__}: {error}")
            self.log_file.write(traceback.format_exc())

    # -- sections --------------------------------------------------------------------------
    def section(self, name: str, function: Callable[["Run"], Optional[str]],
                needs_s: float) -> None:
        record = {"status": "", "seconds": 0.0, "checks": [], "skipped": [], "numbers": {},
                  "key": ""}
        self.data["sections"][name] = record
        if self.remaining() < needs_s:
            record["status"] = "skipped"
            record["key"] = f"needs ~{needs_s:.0f} s, {max(self.remaining(), 0):.0f} s left"
            self.log(f"== {name}: skipped ({record['key']})")
            self.write()
            return
        self.log(f"== {name}")
        self.current = record
        started = time.perf_counter()
        try:
            status = function(self)
            failed = [c for c in record["checks"] if not c["ok"]]
            record["status"] = "failed" if failed else (status or "passed")
            if record["status"] == "passed" and not record["checks"]:
                record["status"] = "skipped"  # every part of it was skipped
        except Skip as reason:
            record["status"] = "skipped"
            record["key"] = record["key"] or str(reason)
        except Exception as error:  # the summary must still be printed
            record["status"] = "error"
            record["key"] = f"{type(error).__name__}: {error}"[:120]
            self.log(traceback.format_exc())
        record["seconds"] = round(time.perf_counter() - started, 2)
        self.log(f"== {name}: {record['status']} in {record['seconds']:.1f} s")
        self.current = None
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        self.json_path.write_text(json.dumps(self.data, indent=2, default=str))

    def summary(self) -> int:
        """Print the table; return the exit status (1 if a section failed or raised)."""
        self.write()
        rows = []
        for name, record in self.data["sections"].items():
            checks = record["checks"]
            passed = sum(c["ok"] for c in checks)
            key = record["key"] or (f"{passed}/{len(checks)} checks" if checks else "")
            if checks and record["key"]:
                key = f"{passed}/{len(checks)} checks; {key}"
            rows.append((name, record["status"], f"{record['seconds']:.1f}", key))
        widths = [max(len(r[i]) for r in rows + [("section", "status", "s", "")])
                  for i in range(3)]
        lines = [f"{'section':<{widths[0]}}  {'status':<{widths[1]}}  {'s':>{widths[2]}}  key",
                 "-" * (sum(widths) + 40)]
        lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}"
                  for a, b, c, d in rows]
        lines.append(f"total {self.elapsed():.1f} s of a {self.budget:.0f} s budget; "
                     f"{'simulator' if self.simulate else self.data.get('device', '?')}; "
                     f"JSON {self.json_path}")
        self.log("summary\n" + "\n".join(lines))
        bad = [r for r in self.data["sections"].values() if r["status"] in ("failed", "error")]
        return 1 if bad else 0


# ---------------------------------------------------------------------------- inputs


def blur(images, sigma: float):
    """Gaussian blur of a (B, H, W) torch batch (separable, edges replicated)."""
    import torch
    import torch.nn.functional as F

    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = images[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x[:, 0]


def make_images(kind: str, batch: int, height: int, width: int, seed: int = 0,
                device: str = "cpu", dtype: str = "float32"):
    """(B, H, W) torch batch of one input kind, generated on ``device``.

    Kinds: ``noise`` (uniform), ``smooth`` (blurred noise), ``likelihood`` (thin curves, the
    level lines of a smooth field, plus noise: a vessel-like likelihood map), ``binary``
    (thresholded smooth field), ``ties`` (noise quantised to 4 levels), ``constant``.
    """
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand((batch, height, width), generator=generator, dtype=torch.float64)
    noise = noise.to(device)  # the same values on every device; the blurs run there
    sigma = max(0.7, min(height, width) / 128)
    if kind == "noise":
        out = noise
    elif kind == "smooth":
        out = blur(noise, sigma)
    elif kind == "likelihood":
        field = blur(noise - 0.5, 2 * sigma)
        field = field / field.flatten(1).std(1, correction=0).clamp_min(1e-12)[:, None, None]
        out = (torch.exp(-(field / 0.25) ** 2) + 0.15 * noise).clamp(0, 1)
    elif kind == "binary":
        field = blur(noise, sigma)
        out = (field > field.flatten(1).median(1).values[:, None, None]).double()
    elif kind == "ties":
        out = torch.floor(4 * noise) / 4
    elif kind == "constant":
        out = torch.full_like(noise, 0.25)
    else:
        raise ValueError(f"`kind` must be a known input kind; got {kind!r}")
    return out.to(getattr(torch, dtype)).contiguous()


# ---------------------------------------------------------------------------- comparisons


def canonical(diagrams) -> tuple:
    """(indices (K, 6) int64, values (K, 2) float64) of a diagram set, sorted.

    Values widen exactly from float32, so diagrams of a float32 batch compare exactly with
    those of its float64 copy (same values, same tie order).
    """
    import numpy as np

    d = diagrams.to_numpy()
    index = np.column_stack([np.asarray(d.image), np.asarray(d.dim),
                             np.asarray(d.birth_pixel), np.asarray(d.death_pixel)])
    order = np.lexsort(index.T[::-1]) if len(index) else np.arange(0)
    values = np.column_stack([np.asarray(d.birth), np.asarray(d.death)]).astype(np.float64)
    return index[order], values[order]


def same_diagrams(got, expected) -> tuple[bool, str]:
    """Whether two diagram sets hold the same pairs, critical pixels and values."""
    import numpy as np

    (gi, gv), (ei, ev) = canonical(got), canonical(expected)
    if gi.shape != ei.shape:
        return False, f"{len(gi)} pairs, expected {len(ei)}"
    if not np.array_equal(gi, ei):
        rows = np.nonzero((gi != ei).any(1))[0]
        return False, f"{rows.size} pairs differ, first {gi[rows[0]].tolist()} vs " \
                      f"{ei[rows[0]].tolist()}"
    if not np.array_equal(gv, ev):
        return False, "critical pixels agree but values differ"
    return True, f"{len(gi)} pairs"


# ---------------------------------------------------------------------------- sections


def section_environment(run: Run) -> str:
    names = {"numpy": "numpy", "torch": "torch", "numba": "numba", "numba_cuda": "numba_cuda",
             "cupy": "cupy", "POT": "ot", "gudhi": "gudhi", "cripser": "cripser",
             "scipy": "scipy", "scikit-image": "skimage", "satloss_gpu": "satloss_gpu"}
    versions = {label: version_of(module) for label, module in names.items()}
    versions["python"] = platform.python_version()
    run.data["versions"] = versions
    run.number("versions", versions)
    run.log("  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    import torch
    from numba import config

    run.number("torch_cuda", torch.version.cuda)
    run.number("numba_cudasim", bool(config.ENABLE_CUDASIM))
    if run.simulate:
        run.check("numba CUDA simulator active", bool(config.ENABLE_CUDASIM))
        run.data["device"] = "Numba CUDA simulator (CPU)"
    else:
        from numba import cuda

        run.check("torch sees a CUDA GPU", torch.cuda.is_available())
        run.check("numba.cuda sees a CUDA GPU", cuda.is_available())
        props = torch.cuda.get_device_properties(0)
        device = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                  "multiprocessors": props.multi_processor_count,
                  "memory_gib": round(props.total_memory / 2 ** 30, 1)}
        run.number("device", device)
        try:
            run.number("cuda_runtime_numba", ".".join(map(str, cuda.runtime.get_version())))
            run.number("cuda_driver_numba", cuda.cudadrv.driver.driver.get_version())
        except Exception as error:  # informative only
            run.number("cuda_runtime_numba", f"unknown ({error})")
        run.data["device"] = f"{props.name} (cc {props.major}.{props.minor})"
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=30)
            run.number("nvidia_smi", out.stdout.strip())
    import satloss_gpu  # noqa: F401  (the public API must import)
    from satloss_gpu import PersistenceDiagrams, SATLoss, TopoLoss, cubical_persistence  # noqa
    from satloss_gpu.matching import match_batch  # noqa: F401

    run.check("satloss_gpu public API imports", True, str(Path(satloss_gpu.__file__).parent))
    for label in ("POT", "numba_cuda"):
        run.check(f"{label} imports", not versions[label].startswith("missing"), versions[label])
    run.key(f"{run.data['device']}; torch {versions['torch']} (CUDA {torch.version.cuda}), "
            f"numba-cuda {versions['numba_cuda']}")
    return "passed"


class Backends:
    """Where the CUDA side computes: torch CUDA tensors on a GPU, NumPy under the simulator."""

    def __init__(self, simulate: bool) -> None:
        self.simulate = simulate

    def to_cuda(self, images):
        """Input for the ``cuda`` backend (a CPU torch tensor stays one under the simulator)."""
        return images if self.simulate else images.to("cuda")

    def sync(self) -> None:
        if not self.simulate:
            import torch

            torch.cuda.synchronize()


def cpu_reference(images, **options):
    """The cpu backend's diagrams of a CPU torch batch, computed on its float64 copy.

    float32 widens exactly, so the diagrams are those of the float32 batch; one dtype means
    one compilation of the CPU kernels.
    """
    from satloss_gpu import cubical_persistence

    return cubical_persistence(images.double().numpy(), backend="cpu", **options)


def persistence_pair(run: Run, label: str, images, **options) -> Any:
    """cuda backend on ``images`` (a CPU torch batch) against the cpu backend; one check."""
    from satloss_gpu import cubical_persistence

    backends = Backends(run.simulate)
    expected = cpu_reference(images, **options)
    got = cubical_persistence(backends.to_cuda(images), backend="cuda", **options)
    ok, detail = same_diagrams(got, expected)
    run.check(label, ok, detail)
    return got


def section_persistence(run: Run) -> str:
    import numpy as np
    import torch

    sim = run.simulate
    backends = Backends(sim)
    kinds = ("noise", "smooth", "likelihood", "binary", "ties", "constant")
    per_kind, height, width = (1, 7, 9) if sim else (4, 96, 128)
    base = torch.cat([make_images(k, per_kind, height, width, seed=i, dtype="float64")
                      for i, k in enumerate(kinds)])
    combos = ([("T", False, "float32"), ("T", True, "float64"), ("V", False, "float64"),
               ("V", True, "float32")] if sim else
              [(c, s, d) for c in ("T", "V") for s in (False, True)
               for d in ("float32", "float64")])
    first = None
    for construction, superlevel, dtype in combos:
        images = base.to(getattr(torch, dtype))
        label = f"varied batch {tuple(images.shape)} {construction} " \
                f"{'super' if superlevel else 'sub'} {dtype}"

        def one(images=images, label=label, construction=construction, superlevel=superlevel):
            return persistence_pair(run, label, images, construction=construction,
                                    superlevel=superlevel)

        run.guarded(label, one)
        if first is None:
            first = images
    shapes = [(1, 13), (5, 1), (1, 1)] if sim else [(1, 257), (300, 1), (1, 1), (33, 65),
                                                    (256, 256), (512, 512)]
    for index, (h, w) in enumerate(shapes):
        batch = 1 if sim or h * w < 4096 else 8
        images = make_images(kinds[index % 3], batch, h, w, seed=100 + index)
        run.guarded(f"shape {batch}x{h}x{w} T sub float32",
                    lambda images=images, h=h, w=w, batch=batch: persistence_pair(
                        run, f"shape {batch}x{h}x{w} T sub float32", images))
    # one T float32 batch as torch input (CPU torch under the simulator) and as CuPy input
    images = first

    def torch_input():
        from satloss_gpu import cubical_persistence

        got = cubical_persistence(backends.to_cuda(images), backend="cuda")
        expected = cpu_reference(images)
        ok, detail = same_diagrams(got, expected)
        run.check("torch input, results in torch", ok and got.library == "torch", detail)

    run.guarded("torch input", torch_input)

    def cupy_input():
        if sim:
            raise Skip("CuPy needs a GPU")
        import cupy

        from satloss_gpu import cubical_persistence

        got = cubical_persistence(cupy.asarray(images.numpy()), backend="cuda")
        expected = cpu_reference(images)
        ok, detail = same_diagrams(got, expected)
        run.check("CuPy input, results in CuPy", ok and got.library == "cupy", detail)

    run.guarded("cupy input", cupy_input)

    def stream_in_flight():
        if sim:
            raise Skip("streams need a GPU")
        from satloss_gpu import cubical_persistence

        big = make_images("likelihood", 16, 256, 256, seed=7)
        expected = cpu_reference(big)
        source = big.to("cuda")
        stream = torch.cuda.Stream()
        torch.cuda.synchronize()
        with torch.cuda.stream(stream):
            if hasattr(torch.cuda, "_sleep"):
                torch.cuda._sleep(200_000_000)  # a kernel still running (about 0.1 s)
            images_late = source * 1.0  # written on the stream after the sleep
            got = cubical_persistence(images_late, backend="cuda")
            stream.synchronize()
        ok, detail = same_diagrams(got, expected)
        run.check("non-default stream, input written by a kernel in flight", ok, detail)

    run.guarded("stream", stream_in_flight)

    def repeated():
        from satloss_gpu import cubical_persistence

        images = first if sim else make_images("noise", 16, 256, 256, seed=9)
        runs = 2 if sim else 5
        reference = canonical(cubical_persistence(backends.to_cuda(images), backend="cuda"))
        identical = 0
        for _ in range(runs - 1):
            again = canonical(cubical_persistence(backends.to_cuda(images), backend="cuda"))
            identical += all(np.array_equal(a, b) for a, b in zip(again, reference))
        run.check(f"{runs} repeated runs bit-identical {tuple(images.shape)}",
                  identical == runs - 1, f"{identical + 1}/{runs} identical")

    run.guarded("repeated runs", repeated)

    threads = (8,) if sim else (32, 128, 1024)
    for option in [{"threads": t} for t in threads] + [{"pairing": "sequential"}]:
        name = ", ".join(f"{k}={v}" for k, v in option.items())

        def varied(option=option, name=name):
            with cuda_backend_with(**option):
                persistence_pair(run, f"backend option {name}", first)

        run.guarded(f"backend option {name}", varied)
    return "passed"


def matching_problems(kind: str, batch: int, n_pad: int, m_pad: int, seed: int):
    """(cost, diag_pred, diag_target, n, m) NumPy float64 padded batch of one kind."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = rng.integers(0, n_pad + 1, batch)
    m = rng.integers(0, m_pad + 1, batch)
    n[0], m[0] = n_pad, m_pad
    if kind == "uniform":
        return (rng.random((batch, n_pad, m_pad)), 0.3 * rng.random((batch, n_pad)),
                0.3 * rng.random((batch, m_pad)), n, m)
    # diagram-like: a few prediction points close to the target points, the rest noise
    target_pos = rng.random((batch, m_pad, 2))
    pred_pos = rng.random((batch, n_pad, 2))
    birth = 0.8 * rng.random((batch, n_pad))
    death = birth + rng.exponential(0.02, (batch, n_pad))
    close = min(n_pad, m_pad)
    pred_pos[:, :close] = target_pos[:, :close] + rng.normal(0, 0.01, (batch, close, 2))
    birth[:, :close] = 0.2 * rng.random((batch, close))
    death[:, :close] = 1 - 0.2 * rng.random((batch, close))
    spatial = np.clip(np.linalg.norm(pred_pos[:, :, None] - target_pos[:, None], axis=-1),
                      0.05, 1)
    cost = spatial * np.hypot(birth, 1 - death)[:, :, None]
    return cost, (death - birth) / np.sqrt(2), np.full((batch, m_pad), 1 / np.sqrt(2)), n, m


def real_problems(pairs: int, size: int, seed: int):
    """SATLoss matching problems (H0 and H1) of ``pairs`` (prediction, target) images."""
    import numpy as np

    from satloss_gpu import cubical_persistence

    target = make_images("binary", pairs, size, size, seed=seed, dtype="float64")
    noisy = (target + 0.35 * make_images("noise", pairs, size, size, seed=seed + 1,
                                         dtype="float64") - 0.17)
    pred = blur(noisy, 1.0).clamp(0, 1)
    problems = []
    for image in range(pairs):
        both = 1.0 - np.pad(np.stack([pred[image].numpy(), target[image].numpy()]),
                            ((0, 0), (1, 1), (1, 1)), constant_values=1.0)
        dg = cubical_persistence(both, backend="cpu")
        for dim in (0, 1):
            sides = []
            for side in (0, 1):
                keep = (dg.image == side) & (dg.dim == dim)
                birth, death = dg.birth[keep], dg.death[keep]
                death = np.where(np.isinf(death), both[side].max(), death)
                sides.append((birth, death, dg.birth_pixel[keep]))
            (b1, d1, p1), (b2, d2, p2) = sides
            offset = (p1[:, None, :] - p2[None, :, :]) / float(size)
            spatial = np.clip(np.sqrt((offset ** 2).sum(-1)), 0.05, 1.0)
            distance = np.hypot(b1[:, None] - b2[None], d1[:, None] - d2[None])
            problems.append((spatial * distance, np.abs(d1 - b1) / np.sqrt(2),
                             np.abs(d2 - b2) / np.sqrt(2)))
    n = np.array([p[1].size for p in problems])
    m = np.array([p[2].size for p in problems])
    cost = np.zeros((len(problems), max(n.max(), 1), max(m.max(), 1)))
    diag_pred = np.zeros((len(problems), cost.shape[1]))
    diag_target = np.zeros((len(problems), cost.shape[2]))
    for b, (c, dp, dt) in enumerate(problems):
        cost[b, :n[b], :m[b]], diag_pred[b, :n[b]], diag_target[b, :m[b]] = c, dp, dt
    return cost, diag_pred, diag_target, n, m


def emd2_totals(cost, diag_pred, diag_target, n, m):
    """Optimal totals by ``ot.emd2`` on the augmented (n+1) x (m+1) problems (independent)."""
    import numpy as np
    import ot

    totals = np.zeros(len(n))
    for b in range(len(n)):
        nb, mb = int(n[b]), int(m[b])
        big = np.zeros((nb + 1, mb + 1))
        big[:nb, :mb] = cost[b, :nb, :mb]
        big[:nb, mb] = diag_pred[b, :nb]
        big[nb, :mb] = diag_target[b, :mb]
        a = np.ones(nb + 1)
        a[nb] = mb
        w = np.ones(mb + 1)
        w[mb] = nb
        if nb == 0 or mb == 0:
            totals[b] = diag_pred[b, :nb].sum() + diag_target[b, :mb].sum()
        else:
            totals[b] = ot.emd2(a, w, big, numItermax=10 ** 7)
    return totals


def check_matching(run: Run, label: str, problem) -> None:
    import numpy as np
    import torch

    from satloss_gpu.matching import assignment_cost, match_batch

    cost, diag_pred, diag_target, n, m = problem
    if run.simulate:
        args = (cost, diag_pred, diag_target)
    else:
        args = tuple(torch.as_tensor(a, device="cuda") for a in (cost, diag_pred, diag_target))
    got = match_batch(*args, n, m, solver="cuda")
    total = np.asarray(got.total.cpu() if hasattr(got.total, "cpu") else got.total)
    assignment = np.asarray(got.assignment.cpu() if hasattr(got.assignment, "cpu")
                            else got.assignment)
    cpu = match_batch(cost, diag_pred, diag_target, n, m, solver="cpu")
    reference = emd2_totals(cost, diag_pred, diag_target, n, m)
    rebuilt = assignment_cost(cost, diag_pred, diag_target, n, m, assignment)
    scale = max(1.0, float(np.abs(reference).max()))
    error_emd = float(np.abs(total - reference).max()) / scale
    error_cpu = float(np.abs(total - cpu.total).max()) / scale
    error_plan = float(np.abs(rebuilt - total).max()) / scale
    used = [row[(row >= 0)] for row in assignment]
    one_to_one = all(len(set(r.tolist())) == len(r) for r in used)
    run.check(f"{label} {cost.shape}: cuda = ot.emd2 = cpu, assignment valid",
              max(error_emd, error_cpu, error_plan) <= 1e-9 and one_to_one,
              f"max rel. error vs emd2 {error_emd:.1e}, vs cpu {error_cpu:.1e}, "
              f"assignment cost {error_plan:.1e}")


def section_matching(run: Run) -> str:
    sim = run.simulate
    sizes = [(4, 9, 6), (4, 5, 8)] if sim else [(64, 300, 120), (64, 80, 400)]
    for kind in ("uniform", "diagrams"):
        for index, (batch, n_pad, m_pad) in enumerate(sizes):
            label = f"{kind} problems"
            run.guarded(label, lambda kind=kind, batch=batch, n_pad=n_pad, m_pad=m_pad,
                        index=index, label=label: check_matching(
                            run, label, matching_problems(kind, batch, n_pad, m_pad, index)))
    pairs, size = (1, 10) if sim else (16, 128)
    run.guarded("real problems", lambda: check_matching(
        run, f"real SATLoss problems ({pairs} image pairs {size}x{size})",
        real_problems(pairs, size, seed=3)))
    return "passed"


def loss_inputs(batch: int, size: int, seed: int, target_kind: str = "binary"):
    """(pred (B, 1, H, W) float64 in [0, 1], target of ``target_kind``) on the CPU."""
    target = make_images(target_kind, batch, size, size, seed=seed, dtype="float64")
    noise = make_images("noise", batch, size, size, seed=seed + 1, dtype="float64")
    pred = blur(target + 0.4 * (noise - 0.5), 1.0).clamp(0, 1)
    return pred[:, None].contiguous(), target[:, None].contiguous()


def section_losses(run: Run) -> str:
    import torch

    from satloss_gpu import SATLoss, TopoLoss

    sim = run.simulate
    batch, size = (2, 6) if sim else (4, 64)
    # Targets are binary masks (the losses require it). The gradient reaches only the
    # prediction's critical values, so optimal matchings that differ only among tied target
    # points give the same gradient.
    cases = [("binary", "float64")] if sim else [("binary", "float64"), ("binary", "float32")]
    for cls in (SATLoss, TopoLoss):
        for target_kind, dtype in cases:
            pred, target = loss_inputs(batch, size, seed=11, target_kind=target_kind)

            def one(cls=cls, dtype=dtype, pred=pred, target=target, target_kind=target_kind):
                # The CPU path runs on the float64 copy of the rounded prediction (same
                # diagrams; one dtype compiles the CPU kernels once); float32 on the GPU
                # then differs only by the rounding of the costs.
                rounded = pred.to(getattr(torch, dtype))
                # Two independent leaves: ``.double()`` and ``.to`` may return ``rounded``
                # itself, and one shared leaf would compare a gradient with itself.
                p_cpu = rounded.detach().double().clone().requires_grad_(True)
                loss_cpu = cls(backend="cpu", solver="emd")(p_cpu, target)
                loss_cpu.backward()
                device = "cpu" if sim else "cuda"
                p_gpu = rounded.detach().to(device).clone().requires_grad_(True)
                loss_gpu = cls(backend="cuda", solver="cuda")(
                    p_gpu, target.to(rounded.dtype).to(device))
                loss_gpu.backward()
                rtol = 1e-9 if dtype == "float64" else 1e-4
                value_cpu, value_gpu = loss_cpu.item(), loss_gpu.item()
                value_error = abs(value_gpu - value_cpu) / max(abs(value_cpu), 1e-12)
                grad_gpu, grad_cpu = p_gpu.grad.cpu().double(), p_cpu.grad.double()
                scale = max(float(grad_cpu.abs().max()), 1e-12)
                grad_error = float((grad_gpu - grad_cpu).abs().max()) / scale
                on_device = sim or (loss_gpu.is_cuda and p_gpu.grad.is_cuda)
                grad_ok = grad_error <= 10 * rtol
                run.check(f"{cls.__name__} {dtype} {tuple(pred.shape)} {target_kind} target: "
                          f"cuda = cpu", value_error <= rtol and grad_ok and on_device
                          and value_cpu > 0,
                          f"loss {value_cpu:.6g}, rel. error value {value_error:.1e}, "
                          f"gradient {grad_error:.1e}")

            run.guarded(f"{cls.__name__} {dtype} {target_kind}", one)
    return "passed"


# ---------------------------------------------------------------------------- volumes


def blur3d(volumes, sigma: float):
    """Gaussian blur of a (B, D, H, W) torch batch (separable, edges replicated)."""
    import torch
    import torch.nn.functional as F

    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=volumes.dtype, device=volumes.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = volumes[:, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius  # F.pad counts from the last axis
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.view(shape))
    return x[:, 0]


def make_volumes(kind: str, batch: int, size: int, seed: int = 0, dtype: str = "float32"):
    """(B, size, size, size) CPU torch batch: ``noise`` (uniform) or ``smooth`` (blurred noise,
    sigma 4 as in ``bench/persistence3d.py``, less on tiny volumes)."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand((batch, size, size, size), generator=generator, dtype=torch.float64)
    if kind == "noise":
        out = noise
    elif kind == "smooth":
        out = blur3d(noise, min(4.0, max(0.7, size / 8)))
    else:
        raise ValueError(f"`kind` must be 'noise' or 'smooth'; got {kind!r}")
    return out.to(getattr(torch, dtype)).contiguous()


def volumes_supported() -> None:
    """:class:`Skip` unless the public API and the ``cuda`` backend take volumes."""
    import inspect

    from satloss_gpu import cubical_persistence

    if "spatial_dims" not in inspect.signature(cubical_persistence).parameters:
        raise Skip("cubical_persistence has no `spatial_dims` argument")
    if not getattr(internal("cuda_backend"), "supports_volumes", False):
        raise Skip("the cuda backend does not compute volumes (supports_volumes is False)")


def section_volumes(run: Run) -> str:
    import inspect

    volumes_supported()
    sim = run.simulate
    shapes = [(2, 4), (1, 5)] if sim else [(8, 64), (4, 128)]
    batches = {(b, n, kind): make_volumes(kind, b, n, seed=40 + i)
               for i, (b, n) in enumerate(shapes) for kind in ("noise", "smooth")}
    for (b, n, kind), volumes in batches.items():
        for construction in ("T", "V"):
            label = f"volumes {b}x{n}^3 {kind} {construction} float32"
            if run.remaining() < (10 if sim else 30):
                run.skip(label, "out of budget")
                continue
            run.guarded(label, lambda volumes=volumes, label=label, construction=construction:
                        persistence_pair(run, label, volumes, spatial_dims=3,
                                         construction=construction))
    device_h1 = "h1" in inspect.signature(internal("cuda_backend").__init__).parameters
    (b, n), variants = shapes[0], ({"h1": "device"},) if device_h1 else ()
    for option in variants:  # the backend's other H1 path, on the smaller batches
        for kind in ("noise", "smooth"):
            for construction in ("T", "V"):
                label = f"volumes {b}x{n}^3 {kind} {construction} float32, h1=device"

                def one(kind=kind, construction=construction, label=label, option=option):
                    with cuda_backend_with(**option):
                        persistence_pair(run, label, batches[(b, n, kind)], spatial_dims=3,
                                         construction=construction)

                run.guarded(label, one)
    table = {}
    for (b, n, kind), volumes in batches.items():
        name = f"{b}x{n}^3 {kind}"
        if run.remaining() < (10 if sim else 30):
            run.skip(f"timing {name}", "out of budget")
            continue
        run.guarded(f"timing {name}", lambda volumes=volumes, name=name:
                    table.update({name: time_volumes(run, volumes, variants)}))
    run.number("timing_per_volume", table)
    parts = [f"{k} {v['cuda']['per_volume_ms']:.1f}" for k, v in table.items() if "cuda" in v]
    run.key("ms per volume (cuda, T): " + ", ".join(parts) if parts else "no timing")
    return "passed"


def time_volumes(run: Run, volumes, variants: tuple = ()) -> dict:
    """cuda backend medians on one batch (per call and per volume), its stages, its peak GPU
    memory, the same with each backend option of ``variants``, and one call of the cpu
    backend on every CPU core for scale."""
    sim = run.simulate
    batch = int(volumes.shape[0])
    device_volumes = Backends(sim).to_cuda(volumes)
    row = {"cuda": time_cuda_volumes(run, device_volumes, {})}
    for option in variants:
        name = "cuda " + ", ".join(f"{k}={v}" for k, v in option.items())
        row[name] = time_cuda_volumes(run, device_volumes, option)
    if not sim:
        import numba

        from satloss_gpu import cubical_persistence

        host = volumes.numpy()
        started = time.perf_counter()
        cubical_persistence(host, spatial_dims=3, backend="cpu")
        seconds = time.perf_counter() - started
        row["cpu_one_call"] = {"ms": round(1e3 * seconds, 1),
                               "per_volume_ms": round(1e3 * seconds / batch, 1),
                               "threads": numba.get_num_threads()}
    run.log(f"  {tuple(volumes.shape)}: " + ", ".join(
        f"{k} {v['median_ms']} ms ({v['per_volume_ms']} ms per volume)"
        for k, v in row.items() if k.startswith("cuda"))
        + f", stages {row['cuda']['stage_ms']}"
        + (f", cpu {row['cpu_one_call']['ms']} ms" if "cpu_one_call" in row else ""))
    return row


def time_cuda_volumes(run: Run, device_volumes, option: dict) -> dict:
    """Timer medians of the cuda backend with ``option`` on one batch, per volume, stages,
    peak GPU memory and the backend's ``last_stats``."""
    from satloss_gpu import cubical_persistence

    sim = run.simulate
    batch = int(device_volumes.shape[0])
    repeats, warmup = (1, 0) if sim else (5, 1)
    with cuda_backend_with(**option) as backend:
        def call():
            return cubical_persistence(device_volumes, spatial_dims=3, backend="cuda")

        reset_peak()
        cuda = Timer(sim)(call, repeats, warmup)
        cuda["per_volume_ms"] = round(cuda["median_ms"] / batch, 3)
        cuda["peak_mib"] = peak_mib()
        cuda["stage_ms"] = stage_times(backend, call, sim)
        cuda["stats"] = dict(getattr(backend, "last_stats", {}))
    return cuda


# ---------------------------------------------------------------------------- timings


class Timer:
    """Median milliseconds of a callable: CUDA events on a GPU, the wall clock simulated."""

    def __init__(self, simulate: bool) -> None:
        self.simulate = simulate

    def __call__(self, function: Callable[[], Any], repeats: int, warmup: int) -> dict:
        for _ in range(warmup):
            function()
        times = []
        if self.simulate:
            for _ in range(repeats):
                start = time.perf_counter()
                function()
                times.append(1e3 * (time.perf_counter() - start))
        else:
            import torch

            torch.cuda.synchronize()
            for _ in range(repeats):
                begin, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                begin.record()
                function()
                end.record()
                torch.cuda.synchronize()
                times.append(begin.elapsed_time(end))
        return {"median_ms": round(statistics.median(times), 3),
                "min_ms": round(min(times), 3), "repeats": repeats}


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> Optional[float]:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)


def section_timing_persistence(run: Run) -> str:
    from satloss_gpu import cubical_persistence

    sim = run.simulate
    timer = Timer(sim)
    batch, size = (1, 8) if sim else (64, 512)
    repeats, warmup = (1, 0) if sim else (5, 2)
    table = {}
    for kind in ("noise", "smooth", "likelihood", "binary"):
        if run.remaining() < (10 if sim else 25):
            run.skip(kind, "out of budget")
            continue
        images = make_images(kind, batch, size, size, seed=21, device="cpu" if sim else "cuda")
        row: dict = {}
        for pairing, reps in (("halving", repeats), ("sequential", max(1, repeats // 2))):
            try:
                context = cuda_backend_with(pairing=pairing)
                backend = context.__enter__()
            except Skip as reason:
                run.skip(f"{kind} {pairing}", str(reason))
                continue
            try:
                reset_peak()
                result = timer(lambda: cubical_persistence(images, backend="cuda"), reps,
                               warmup if pairing == "halving" else 1)
                result["peak_mib"] = peak_mib()
                result["stage_ms"] = stage_times(backend, lambda: cubical_persistence(
                    images, backend="cuda"), sim)
                result["stats"] = dict(getattr(backend, "last_stats", {}))
                row[pairing] = result
            finally:
                context.__exit__(None, None, None)
        table[kind] = row
        halving = row.get("halving", {}).get("median_ms")
        sequential = row.get("sequential", {}).get("median_ms")
        run.log(f"  {kind}: {batch}x{size}x{size} halving {halving} ms, sequential "
                f"{sequential} ms, stages {row.get('halving', {}).get('stage_ms')}")
    run.number("persistence", table)
    run.number("shape", [batch, size, size])
    if not table:
        raise Skip("nothing fitted the budget")
    parts = [f"{k} {v['halving']['median_ms']:.1f}" for k, v in table.items() if "halving" in v]
    run.key(f"{batch}x{size}^2 ms: " + ", ".join(parts))
    return "simulated" if sim else "measured"


def stage_times(backend, function: Callable[[], Any], simulate: bool) -> Optional[dict]:
    """Per-stage milliseconds of one call through the backend's ``stage_hook`` (if any)."""
    if simulate or not hasattr(backend, "stage_hook"):
        return None
    import torch

    events: list = []

    def hook(name: str) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        events.append((name, event))

    backend.stage_hook = hook
    try:
        function()
        torch.cuda.synchronize()
    finally:
        backend.stage_hook = None
    return {name: round(first.elapsed_time(second), 3)
            for (_, first), (name, second) in zip(events, events[1:])}


def section_timing_matching(run: Run) -> str:
    import torch

    from satloss_gpu.matching import match_batch

    sim = run.simulate
    timer = Timer(sim)
    pairs, size = (1, 10) if sim else (32, 256)
    cost, diag_pred, diag_target, n, m = real_problems(pairs, size, seed=5)
    if sim:
        args = (cost, diag_pred, diag_target)
    else:
        args = tuple(torch.as_tensor(a, device="cuda") for a in (cost, diag_pred, diag_target))
    reset_peak()
    cuda_ms = timer(lambda: match_batch(*args, n, m, solver="cuda"), 1 if sim else 5,
                    0 if sim else 1)
    cuda_ms["peak_mib"] = peak_mib()
    started = time.perf_counter()
    match_batch(cost, diag_pred, diag_target, n, m, solver="cpu")
    cpu_ms = 1e3 * (time.perf_counter() - started)
    started = time.perf_counter()
    match_batch(cost, diag_pred, diag_target, n, m, solver="emd")
    emd_ms = 1e3 * (time.perf_counter() - started)
    run.number("problems", {"batch": int(len(n)), "n_max": int(n.max()), "m_max": int(m.max())})
    run.number("cuda", cuda_ms)
    run.number("cpu_ms_one_run", round(cpu_ms, 2))
    run.number("emd_ms_one_run", round(emd_ms, 2))
    run.key(f"{len(n)} problems (n<={n.max()}, m<={m.max()}): cuda "
            f"{cuda_ms['median_ms']:.1f} ms, cpu {cpu_ms:.0f} ms, emd {emd_ms:.0f} ms")
    return "simulated" if sim else "measured"


def section_timing_loss(run: Run) -> str:
    import torch
    import torch.nn.functional as F

    from satloss_gpu import SATLoss

    sim = run.simulate
    timer = Timer(sim)
    batch, size = (2, 8) if sim else (16, 512)
    device = "cpu" if sim else "cuda"
    pred, target = loss_inputs(batch, size, seed=31)
    pred = pred.float().to(device)
    target = target.float().to(device)
    criterion = SATLoss(backend="cuda", solver="cuda")

    def loss_step():
        p = pred.clone().requires_grad_(True)
        criterion(p, target).backward()

    reset_peak()
    loss = timer(loss_step, 1 if sim else 5, 0 if sim else 1)
    loss["peak_mib"] = peak_mib()
    run.number("loss_forward_backward", loss)
    try:
        from satloss_gpu.training.models import build_model
    except ImportError as error:
        raise Skip(f"no UNet model ({error})") from error
    model = build_model("UNet_small" if sim else "UNet").to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = pred.expand(-1, 3, -1, -1).contiguous()

    def train_step():
        optimiser.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(images, logits=True), target).backward()
        optimiser.step()

    reset_peak()
    step = timer(train_step, 1 if sim else 5, 0 if sim else 2)
    step["peak_mib"] = peak_mib()
    share = loss["median_ms"] / (loss["median_ms"] + step["median_ms"])
    run.number("unet_bce_step", step)
    run.number("loss_share_of_step", round(share, 4))
    run.key(f"{batch}x{size}^2: loss fwd+bwd {loss['median_ms']:.1f} ms, UNet step "
            f"{step['median_ms']:.1f} ms, loss share {100 * share:.0f}%")
    return "simulated" if sim else "measured"


# ---------------------------------------------------------------------------- compile


def probe_workload() -> dict:
    """Small calls that use every kernel once; milliseconds of each (first call compiles)."""
    import torch

    from satloss_gpu import cubical_persistence
    from satloss_gpu.matching import match_batch

    times = {}
    images = make_images("smooth", 2, 24, 24, seed=1).to("cuda")

    def timed(name: str, function: Callable[[], Any]) -> None:
        torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times[name] = round(1e3 * (time.perf_counter() - start), 1)

    timed("persistence_float32_first", lambda: cubical_persistence(images, backend="cuda"))
    timed("persistence_float32_second", lambda: cubical_persistence(images, backend="cuda"))
    timed("persistence_float64_first",
          lambda: cubical_persistence(images.double(), backend="cuda", construction="V"))
    cost, dp, dt, n, m = matching_problems("uniform", 4, 12, 9, 0)
    args = tuple(torch.as_tensor(a, device="cuda") for a in (cost, dp, dt))
    timed("matching_first", lambda: match_batch(*args, n, m, solver="cuda"))
    timed("matching_second", lambda: match_batch(*args, n, m, solver="cuda"))
    return times


def enable_kernel_cache() -> int:
    """Turn on numba-cuda's on-disk cache for every kernel; return how many."""
    kernels = cuda_kernels()
    for kernel in kernels:
        kernel.enable_caching()
    return len(kernels)


def section_compile(run: Run) -> str:
    if run.simulate:
        raise Skip("the simulator compiles nothing")
    try:
        count = enable_kernel_cache()
        run.number("kernels_cached", count)
    except Exception as error:  # caching is an optimisation: report and go on
        run.number("kernel_cache_error", f"{type(error).__name__}: {error}")
        count = 0
    times = probe_workload()
    run.number("first_call_ms", times)
    run.check("first calls ran", True, ", ".join(f"{k} {v} ms" for k, v in times.items()))
    run.key(f"first persistence call {times['persistence_float32_first'] / 1e3:.1f} s "
            f"(second {times['persistence_float32_second']:.0f} ms), first matching "
            f"{times['matching_first'] / 1e3:.1f} s; cache on {count} kernels")
    return "measured"


def run_probe(run: Run, arguments: list, timeout: float, prefix: list = ()) -> tuple:
    """Run this script as ``--probe`` in a fresh process; (return code, output, JSON or None)."""
    # the parent's sys.path (carried wheels, installed project) goes along in PYTHONPATH
    command = [*prefix, sys.executable, str(Path(__file__).resolve()), *arguments,
               "--wheels", os.devnull]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as expired:
        return None, str(expired.stdout or "")[-2000:], None
    result = None
    for line in done.stdout.splitlines():
        if line.startswith("PROBE "):
            result = json.loads(line[6:])
    return done.returncode, (done.stdout + done.stderr)[-4000:], result


def section_compile_cached(run: Run) -> str:
    if run.simulate:
        raise Skip("the simulator compiles nothing")
    code, output, result = run_probe(run, ["--probe", "compile"], max(20, run.remaining() - 15))
    run.log_file.write(output + "\n")
    if result is None:
        run.check("fresh process ran the probe", False, f"exit {code}: {output[-300:]}")
        return "failed"
    run.number("first_call_ms_fresh_process", result)
    first = run.data["sections"].get("compile", {}).get("numbers", {}).get("first_call_ms", {})
    run.key(f"fresh process, cache warm: first persistence call "
            f"{result['persistence_float32_first'] / 1e3:.1f} s (cold "
            f"{first.get('persistence_float32_first', float('nan')) / 1e3:.1f} s), first "
            f"matching {result['matching_first'] / 1e3:.1f} s")
    return "measured"


def section_sanitizer(run: Run) -> str:
    if run.simulate:
        raise Skip("needs a GPU")
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        raise Skip("compute-sanitizer not found")
    for check in ("racecheck", "synccheck"):
        if run.remaining() < 40:
            run.skip(check, "out of budget")
            continue
        code, output, result = run_probe(
            run, ["--probe", "sanitizer"], run.remaining() - 15,
            prefix=[tool, "--tool", check, "--error-exitcode", "9"])
        run.log_file.write(output + "\n")
        summary = [line for line in output.splitlines() if "ERROR SUMMARY" in line]
        run.check(f"compute-sanitizer {check}", code == 0 and result is not None,
                  (summary[-1].strip() if summary else f"exit {code}") + ("" if result else
                                                                          ", probe unfinished"))
    return "passed"


def probe_main(kind: str) -> int:
    """Entry point of ``--probe``: a fresh process for compile timing or the sanitizer."""
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0")
    if kind == "compile":
        enable_kernel_cache()
    print("PROBE " + json.dumps(probe_workload()), flush=True)
    return 0


# ---------------------------------------------------------------------------- main


SECTIONS = [  # (name, function, seconds it needs at least: real GPU, simulator)
    ("environment", section_environment, (5, 5)),
    ("compile", section_compile, (60, 1)),
    ("persistence", section_persistence, (40, 20)),
    ("matching", section_matching, (20, 10)),
    ("losses", section_losses, (20, 10)),
    ("volumes", section_volumes, (60, 20)),
    ("timing_persistence", section_timing_persistence, (40, 10)),
    ("timing_matching", section_timing_matching, (20, 5)),
    ("timing_loss", section_timing_loss, (30, 5)),
    ("compile_cached", section_compile_cached, (60, 1)),
    ("sanitizer", section_sanitizer, (60, 1)),
]


def parse_args(argv: Optional[list]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check (default 420; 170 simulated)")
    parser.add_argument("--simulate", action="store_true",
                        help="run in Numba's CUDA simulator on tiny inputs (no GPU)")
    parser.add_argument("--out", default=None,
                        help="folder for gpu_check.json and gpu_check.log (default $OUT, "
                             "else bench/out)")
    parser.add_argument("--wheels", default=str(REPO / ".wheels"),
                        help="folder of wheels to install first (default .wheels/)")
    parser.add_argument("--only", default=None,
                        help="comma-separated section names to run (default all)")
    parser.add_argument("--probe", choices=["compile", "sanitizer"], default=None,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    if args.simulate:
        if "numba" in sys.modules and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            raise SystemExit("--simulate: numba was imported before NUMBA_ENABLE_CUDASIM=1")
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0")
    prepared = prepare_environment(Path(args.wheels))
    if args.probe:
        return probe_main(args.probe)
    budget = args.budget if args.budget is not None else (170.0 if args.simulate else 420.0)
    out_dir = Path(args.out or os.environ.get("OUT") or REPO / "bench" / "out")
    run = Run(out_dir, budget, args.simulate)
    run.data["environment"] = prepared
    # Last resort if a kernel hangs: dump every thread's stack to the log and exit.
    faulthandler.dump_traceback_later(budget + 60, exit=True, file=run.log_file)
    run.log(f"satloss-gpu GPU check, budget {budget:.0f} s, "
            f"{'simulator' if args.simulate else 'real CUDA'}; wheels installed: "
            f"{len(prepared['wheels'])}, project installed: {prepared['project_installed']}")
    only = set(args.only.split(",")) if args.only else None
    for name, function, needs in SECTIONS:
        if only is None or name in only:
            run.section(name, function, needs[1] if args.simulate else needs[0])
    faulthandler.cancel_dump_traceback_later()
    return run.summary()


if __name__ == "__main__":
    sys.exit(main())
