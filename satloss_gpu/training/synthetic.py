"""Deterministic synthetic datasets of thin structures whose topology matters.

Four kinds of structures, each drawn as exact binary labels and rendered as a grey image
with the difficulties topology-aware losses are meant for: noise, blur, uneven contrast and
illumination, and small gaps (short stretches where the structure fades into the background
in the image while the label stays connected):

- ``vessels``: branching trees of curved, tapering vessels (dark on a bright background,
  as in the green channel of fundus photographs);
- ``roads``: networks of long, gently curved roads with connectors that close loops;
- ``cracks``: thin, tortuous, branching dark cracks on a textured surface;
- ``membranes``: cell boundaries, the edges of a Voronoi diagram (closed loops everywhere).

Branches drawn close together enclose tiny background regions that are artefacts of the
drawing, not structure: every hole (a 4-connected background region not touching the image
border) of at most :data:`MIN_HOLE_AREA` pixels is filled, so the labels' own beta1 counts
only real loops (:func:`fill_small_holes`).

``make_dataset`` writes them in the reference layout
``<root>/<name>/{train,train_labels,val,val_labels,test,test_labels}/NNNN.png`` (8-bit grey
images, labels 0/255). ``make_retina_dataset`` writes tiles of the fundus photograph shipped
with scikit-image, with pseudo-labels from a vesselness filter. Both are deterministic: the
same seed gives the same files, and image ``i`` of a split does not depend on how many
images are generated.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

__all__ = ["KINDS", "SPLITS", "BUILTIN_DATASETS", "MIN_HOLE_AREA", "fill_small_holes", "generate",
           "make_dataset", "make_retina_dataset", "retina_pseudo_labels", "dataset_to_generate"]

KINDS = ("vessels", "roads", "cracks", "membranes")
SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
#: The dataset names a training run may generate when their folder is missing, and the kind
#: each one holds (see :func:`dataset_to_generate`).
BUILTIN_DATASETS = {"synthetic": "mixed", **{kind: kind for kind in KINDS}}


# --------------------------------------------------------------------------- drawing helpers
def _draw_segment(canvas: np.ndarray, p0: np.ndarray, p1: np.ndarray, radius: float) -> None:
    """Write ``radius`` (max) along the discrete line from ``p0`` to ``p1`` (row, col)."""
    from skimage.draw import line

    h, w = canvas.shape
    r0, c0 = int(round(p0[0])), int(round(p0[1]))
    r1, c1 = int(round(p1[0])), int(round(p1[1]))
    rr, cc = line(r0, c0, r1, c1)
    keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    rr, cc = rr[keep], cc[keep]
    canvas[rr, cc] = np.maximum(canvas[rr, cc], radius)


def _thicken(radii: np.ndarray) -> np.ndarray:
    """Binary mask of every pixel within the radius stored on some centreline pixel."""
    mask = np.zeros(radii.shape, bool)
    for r in np.unique(radii[radii > 0]):
        dist = ndi.distance_transform_edt(radii != r)
        mask |= dist <= r
    return mask


def _walk(rng: np.random.Generator, start: np.ndarray, angle: float, length: float, step: float,
          wiggle: float) -> np.ndarray:
    """Points of a random walk with smoothly drifting direction, (N, 2) (row, col)."""
    n = max(2, int(length / step))
    turns = np.cumsum(rng.normal(0.0, wiggle, n))
    angles = angle + turns
    steps = step * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    return start + np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def _polyline(canvas: np.ndarray, points: np.ndarray, radius) -> None:
    radii = np.broadcast_to(np.asarray(radius, dtype=float), (len(points),))
    for a, b, r in zip(points[:-1], points[1:], radii[:-1]):
        _draw_segment(canvas, a, b, r)


# --------------------------------------------------------------------------- structures
def _vessels(rng: np.random.Generator, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    canvas = np.zeros(size, np.float32)
    scale = min(h, w)

    def branch(start, angle, length, radius, depth):
        pts = _walk(rng, start, angle, length, 2.0, 0.12)
        taper = np.linspace(radius, max(0.5, radius * 0.6), len(pts))
        _polyline(canvas, pts, np.round(taper * 2) / 2)
        if depth == 0:
            return
        for _ in range(rng.integers(1, 3)):
            k = int(rng.integers(len(pts) // 4, max(len(pts) // 4 + 1, len(pts) - 1)))
            side = rng.choice([-1.0, 1.0])
            branch(pts[k], angle + side * rng.uniform(0.4, 1.1), length * rng.uniform(0.5, 0.75),
                   max(0.5, radius * 0.7), depth - 1)

    for _ in range(rng.integers(1, 3)):
        edge = rng.integers(4)
        pos = rng.uniform(0.2, 0.8)
        start, angle = {0: ((0.0, pos * w), np.pi / 2), 1: ((h - 1.0, pos * w), -np.pi / 2),
                        2: ((pos * h, 0.0), 0.0), 3: ((pos * h, w - 1.0), np.pi)}[int(edge)]
        branch(np.array(start), angle + rng.normal(0, 0.3), scale * rng.uniform(0.7, 1.0),
               rng.uniform(1.5, 2.5) * scale / 128 + 0.5, 3)
    return _thicken(canvas)


def _roads(rng: np.random.Generator, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    canvas = np.zeros(size, np.float32)
    radius = max(1.0, round(2 * min(h, w) / 96) / 2)
    roads = []
    for i in range(int(rng.integers(3, 6))):
        horizontal = i % 2 == 0
        pos = rng.uniform(0.1, 0.9)
        start = np.array([pos * h, -2.0]) if horizontal else np.array([-2.0, pos * w])
        angle = (0.0 if horizontal else np.pi / 2) + rng.normal(0, 0.25)
        pts = _walk(rng, start, angle, 1.6 * max(h, w), 2.0, 0.02)
        roads.append(pts)
        _polyline(canvas, pts, radius)
    for _ in range(int(rng.integers(1, 4))):
        a, b = rng.choice(len(roads), 2, replace=False)
        pa = roads[a][rng.integers(len(roads[a]))]
        inside = [p for p in roads[b] if 0 <= p[0] < h and 0 <= p[1] < w]
        if inside:
            pb = inside[rng.integers(len(inside))]
            _draw_segment(canvas, pa, pb, max(1.0, radius - 0.5))
    return _thicken(canvas)


def _cracks(rng: np.random.Generator, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    canvas = np.zeros(size, np.float32)

    def crack(start, angle, length, radius, depth):
        pts = _walk(rng, start, angle, length, 1.5, 0.35)
        _polyline(canvas, pts, radius)
        if depth and len(pts) > 4:
            for _ in range(int(rng.integers(0, 3))):
                k = int(rng.integers(1, len(pts) - 1))
                crack(pts[k], angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2),
                      length * 0.5, max(0.5, radius - 0.5), depth - 1)

    for _ in range(int(rng.integers(1, 3))):
        start = np.array([rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w])
        angle = rng.uniform(0, 2 * np.pi)
        crack(start, angle, 0.8 * max(h, w), 1.0, 2)
        crack(start, angle + np.pi, 0.5 * max(h, w), 1.0, 2)
    return _thicken(canvas)


def _membranes(rng: np.random.Generator, size: Tuple[int, int]) -> np.ndarray:
    from scipy.spatial import cKDTree

    h, w = size
    n_cells = max(4, int(h * w / rng.uniform(300, 600)))
    seeds = rng.uniform(0, 1, (n_cells, 2)) * [h, w]
    rows, cols = np.mgrid[0:h, 0:w]
    grid = np.stack([rows.ravel(), cols.ravel()], axis=1)
    dist, _ = cKDTree(seeds).query(grid, k=2)
    width = rng.uniform(1.0, 2.0)
    return (dist[:, 1] - dist[:, 0] < width).reshape(h, w)


_STRUCTURES: Dict[str, Callable[[np.random.Generator, Tuple[int, int]], np.ndarray]] = {
    "vessels": _vessels, "roads": _roads, "cracks": _cracks, "membranes": _membranes,
}
# Polarity of the structure in the image: +1 bright on dark, -1 dark on bright.
_POLARITY = {"vessels": -1.0, "roads": 1.0, "cracks": -1.0, "membranes": -1.0}


# --------------------------------------------------------------------------- rendering
def _smooth_field(rng: np.random.Generator, size: Tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random field in [0, 1]."""
    field = ndi.gaussian_filter(rng.normal(size=size), sigma, mode="wrap")
    field -= field.min()
    return field / max(field.max(), 1e-12)


def _gaps(rng: np.random.Generator, label: np.ndarray, n_gaps: int) -> np.ndarray:
    """Attenuation map in [0, 1]: 0 inside a few small discs centred on the structure."""
    atten = np.ones(label.shape, np.float32)
    skeleton_pixels = np.argwhere(label)
    if len(skeleton_pixels) == 0:
        return atten
    rows, cols = np.mgrid[0:label.shape[0], 0:label.shape[1]]
    for _ in range(n_gaps):
        r, c = skeleton_pixels[rng.integers(len(skeleton_pixels))]
        radius = rng.uniform(1.5, 3.0)
        atten[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = rng.uniform(0.0, 0.3)
    return atten


def _render(rng: np.random.Generator, label: np.ndarray, kind: str) -> np.ndarray:
    """Grey image in [0, 1] of ``label``, with texture, gaps, blur, illumination and noise."""
    size = label.shape
    background = 0.45 + 0.2 * _smooth_field(rng, size, 2.0 if kind == "cracks" else 6.0)
    contrast = rng.uniform(0.2, 0.4) * (0.35 + 0.65 * _smooth_field(rng, size, max(size) / 6))
    n_gaps = int(rng.integers(1, 4 + label.size // 8192))
    structure = label.astype(np.float32) * _gaps(rng, label, n_gaps)
    image = background + _POLARITY[kind] * contrast * structure
    image = ndi.gaussian_filter(image, rng.uniform(0.6, 1.2))
    ramp = np.linspace(-1, 1, size[1])[None, :] * np.cos(rng.uniform(0, np.pi))
    ramp = ramp + np.linspace(-1, 1, size[0])[:, None] * np.sin(rng.uniform(0, np.pi))
    image = image * (1.0 + 0.25 * ramp)
    image = image + rng.normal(0.0, rng.uniform(0.02, 0.06), size)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


#: Holes of the drawn labels of at most this many pixels are filled (see the module notes).
MIN_HOLE_AREA = 16


def fill_small_holes(label: np.ndarray, max_area: int = MIN_HOLE_AREA) -> np.ndarray:
    """``label`` with every hole of at most ``max_area`` pixels filled.

    Parameters
    ----------
    label : (H, W) bool ndarray
    max_area : int
        Holes are 4-connected background components not touching the image border (the
        holes the metrics count, unpadded).

    Returns
    -------
    (H, W) bool ndarray
    """
    from scipy import ndimage

    regions, n = ndimage.label(~label, structure=ndimage.generate_binary_structure(2, 1))
    if n == 0:
        return label.copy()
    areas = np.bincount(regions.ravel(), minlength=n + 1)
    small = areas <= int(max_area)
    small[0] = False
    border = np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]])
    small[np.unique(border)] = False
    return label | small[regions]


def generate(kind: str, size: Tuple[int, int] = (128, 128),
             seed: Optional[int | Sequence[int]] = 0) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its exact label.

    Parameters
    ----------
    kind : {"vessels", "roads", "cracks", "membranes"}
    size : tuple of int, default (128, 128)
        (H, W).
    seed : int or sequence of int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    image : (H, W) float32 ndarray in [0, 1]
    label : (H, W) bool ndarray

    Examples
    --------
    >>> image, label = generate("membranes", (32, 32), seed=1)
    >>> image.shape, label.dtype.name, bool(label.any())
    ((32, 32), 'bool', True)
    """
    from .._validation import check_choice

    check_choice("kind", kind, KINDS)
    size = (int(size[0]), int(size[1]))
    if min(size) < 8:
        raise ValueError(f"`size` must be at least (8, 8); got {size}")
    rng = np.random.default_rng(seed)
    label = fill_small_holes(_STRUCTURES[kind](rng, size))
    return _render(rng, label, kind), label


# --------------------------------------------------------------------------- datasets on disk
def _write_png(path: Path, array: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, array)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


#: The record of a dataset written here: its parameters and the files written.
DATASET_RECORD = "dataset.json"


def _written_files(base: Path) -> set:
    """The files (relative paths) that :data:`DATASET_RECORD` of ``base`` says were written
    here, the record included; empty without a readable record."""
    try:
        files = json.loads((base / DATASET_RECORD).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(files, list):
        return set()
    return {Path(f) for f in files if isinstance(f, str)} | {Path(DATASET_RECORD)}


def _clear_target(base: Path, overwrite: bool,
                  folders: Optional[Sequence[str]] = None) -> None:
    """Make ``base`` ready for a new dataset without losing anything a user wrote.

    An empty or missing folder is used as is. A non-empty one is refused unless
    ``overwrite``; with it, the files its record lists are removed (then the empty
    ``folders``, relative to ``base``, innermost first; default: the image layout's split
    folders), and only if the folder holds nothing else.
    """
    present = {p.relative_to(base) for p in base.rglob("*") if not p.is_dir()} \
        if base.is_dir() else set()
    if not present:
        return
    if not overwrite:
        raise ValueError(f"dataset folder {base} is not empty ({len(present)} files); pass "
                         f"overwrite=True (make-data --overwrite) to replace a dataset written "
                         f"here, or choose another name or root")
    foreign = sorted(str(p) for p in present - _written_files(base))
    if foreign:
        raise ValueError(f"dataset folder {base} holds {len(foreign)} file(s) that its "
                         f"{DATASET_RECORD} does not list as written by make-data ("
                         f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): not "
                         f"replacing it; move them away or choose another name or root")
    for relative in present:
        (base / relative).unlink()
    if folders is None:
        folders = [name for split in SPLITS for name in (split, f"{split}_labels")]
    for name in folders:
        folder = base / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _write_dataset(base: Path, items: Sequence[Tuple[str, str]],
                   draw: Callable[[int], Tuple[np.ndarray, np.ndarray]], info: Dict[str, Any],
                   overwrite: bool) -> Path:
    """Write the pairs ``draw(k)`` = (uint8 image, bool label) of ``items[k]`` = (split, file
    name) under ``base``, after :func:`_clear_target`.

    The record (``info`` and the list of files) is written first, so that a run cut short
    can be replaced with ``overwrite``. Only the folders of splits with items are created.
    """
    from .paths import output_dir

    output_dir(base.parent, "the dataset root (--dataroot)")
    _clear_target(base, overwrite)
    files = [f"{split}{suffix}/{file}" for split, file in items for suffix in ("", "_labels")]
    for split in dict.fromkeys(split for split, _ in items):
        for suffix in ("", "_labels"):
            output_dir(base / f"{split}{suffix}", "the dataset folder (--dataroot, --name)")
    (base / DATASET_RECORD).write_text(json.dumps({**info, "files": files}, indent=2))
    for k, (split, file) in enumerate(items):
        image, label = draw(k)
        _write_png(base / split / file, image)
        _write_png(base / f"{split}_labels" / file, label.astype(np.uint8) * 255)
    return base


def make_dataset(root: str | Path = "data", name: str = "synthetic", kind: str = "mixed",
                 n_train: int = 32, n_val: int = 8, n_test: int = 8,
                 size: Tuple[int, int] = (96, 96), seed: int = 0, overwrite: bool = False) -> Path:
    """Write a synthetic dataset in the reference layout.

    Parameters
    ----------
    root : path, default "data"
        The ``--dataroot``.
    name : str, default "synthetic"
        The ``--dataset``: files go to ``root/name/<split>`` and ``root/name/<split>_labels``.
    kind : {"mixed", "vessels", "roads", "cracks", "membranes"}, default "mixed"
        "mixed" cycles through the four kinds.
    n_train, n_val, n_test : int
        Images per split; a split of 0 images gets no folder (training then holds out
        validation images from ``train``).
    size : tuple of int, default (96, 96)
    seed : int, default 0
        Image ``i`` of split ``s`` uses the seed ``(seed, s, i)``.
    overwrite : bool, default False
        Replace a dataset that make-data wrote in ``root/name`` before. Without it a
        non-empty ``root/name`` is refused; with it, only the files its ``dataset.json``
        lists are removed, and a folder holding any other file is refused.

    Returns
    -------
    Path
        ``root/name``; a ``dataset.json`` there records the parameters and the files.

    Raises
    ------
    ValueError
        Bad counts, a non-empty target (see ``overwrite``), or an output path through a file.
    """
    from .._validation import check_choice

    check_choice("kind", kind, ("mixed",) + KINDS)
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if min(counts.values()) < 0 or counts["train"] < 1:
        raise ValueError(f"image counts must be >= 0 (train >= 1); got {counts}")
    plan = [(split, i) for split, count in counts.items() for i in range(count)]

    def draw(k: int) -> Tuple[np.ndarray, np.ndarray]:
        split, i = plan[k]
        this_kind = KINDS[i % len(KINDS)] if kind == "mixed" else kind
        image, label = generate(this_kind, size, seed=(int(seed), _SPLIT_CODES[split], i))
        return _to_uint8(image), label

    info = {"kind": kind, "size": list(size), "seed": int(seed), **{f"n_{k}": v for k, v in counts.items()},
            "labels": "exact; 0 background, 255 foreground"}
    items = [(split, f"{i:04d}.png") for split, i in plan]
    return _write_dataset(Path(root) / name, items, draw, info, overwrite)


def dataset_to_generate(root: str | Path, name: str, make_data: bool) -> Optional[str]:
    """The kind of synthetic dataset to generate for ``root/name``, or None if it exists.

    A missing folder is generated only when ``make_data`` and ``name`` is one of
    :data:`BUILTIN_DATASETS`: a mistyped ``--dataroot`` or ``--dataset`` is an error, never
    a run on data nobody asked for.

    Raises
    ------
    DataError
        ``root/name`` is missing and may not be generated; the message names ``--dataroot``
        and ``--dataset`` and what was looked for.
    """
    from .data import missing_dataset_error

    if (Path(root) / name).is_dir():
        return None
    if make_data and name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name]
    builtin = ", ".join(BUILTIN_DATASETS)
    hint = (f"with --make_data a missing dataset is generated only for the names {builtin}"
            if make_data else f"pass --make_data to generate one of {builtin}")
    raise missing_dataset_error(root, name, hint=f"{hint}; write others with `satloss make-data`")


def retina_pseudo_labels(scale: float = 0.5, low: float = 0.15, high: float = 0.35,
                         sigmas: Sequence[float] = (1.0, 1.5, 2.0, 3.0)) -> Tuple[np.ndarray, np.ndarray]:
    """The scikit-image fundus photograph and vessel pseudo-labels from a vesselness filter.

    The green channel (where vessels are darkest) is filtered with
    :func:`skimage.filters.sato` (dark ridges), the response is normalised by its 99.5th
    percentile inside the field of view, and :func:`skimage.filters.apply_hysteresis_threshold`
    with ``low`` and ``high`` keeps the connected ridges. Small components are removed.
    These labels are approximations, not expert annotations.

    Returns
    -------
    image : (H, W, 3) uint8 ndarray
        The photograph resized by ``scale``.
    label : (H, W) bool ndarray
    """
    from skimage import data, filters, morphology, transform

    rgb = data.retina()
    if scale != 1.0:
        rgb = _to_uint8(transform.rescale(rgb, scale, channel_axis=2, anti_aliasing=True))
    green = rgb[..., 1].astype(np.float32) / 255.0
    fov = ndi.binary_erosion(rgb.mean(axis=2) > 20, iterations=int(12 * scale) + 2)
    vesselness = filters.sato(green, sigmas=sigmas, black_ridges=True) * fov
    norm = vesselness / max(np.percentile(vesselness[fov], 99.5), 1e-12)
    label = filters.apply_hysteresis_threshold(norm, low, high) & fov
    label = morphology.remove_small_objects(label, max_size=int(30 * scale * scale) + 10)
    return rgb, label


def make_retina_dataset(root: str | Path = "data", name: str = "retina", tile: int = 128,
                        scale: float = 0.5, seed: int = 0,
                        fractions: Tuple[float, float] = (0.7, 0.15), overwrite: bool = False) -> Path:
    """Tiles of ``skimage.data.retina()`` with vesselness pseudo-labels, in the reference layout.

    The photograph (1411 x 1411) is resized by ``scale``, cut into non-overlapping
    ``tile`` x ``tile`` tiles whose centre lies inside the field of view, and the tiles are
    shuffled with ``seed`` and split ``fractions`` (train, val; the rest is test). Labels
    come from :func:`retina_pseudo_labels` (documented there): they are pseudo-labels.
    ``overwrite``: as in :func:`make_dataset`.

    Returns
    -------
    Path
        ``root/name``.
    """
    import imageio.v3 as iio  # noqa: F401  (fail early if missing)

    rgb, label = retina_pseudo_labels(scale)
    h, w = label.shape
    fov = rgb.mean(axis=2) > 20
    tiles = [(r, c) for r in range(0, h - tile + 1, tile) for c in range(0, w - tile + 1, tile)
             if fov[r + tile // 2, c + tile // 2]]
    if len(tiles) < 3:
        raise ValueError(f"`tile` ({tile}) is too large for the image at `scale` {scale}")
    order = np.random.default_rng(seed).permutation(len(tiles))
    n_train = max(1, int(round(fractions[0] * len(tiles))))
    n_val = max(1, int(round(fractions[1] * len(tiles))))
    splits = ["train" if rank < n_train else "val" if rank < n_train + n_val else "test"
              for rank in range(len(tiles))]
    corners = [tiles[k] for k in order]
    items = [(split, f"retina_r{r:04d}_c{c:04d}.png") for split, (r, c) in zip(splits, corners)]

    def draw(k: int) -> Tuple[np.ndarray, np.ndarray]:
        r, c = corners[k]
        return rgb[r:r + tile, c:c + tile], label[r:r + tile, c:c + tile]

    info = {"source": "skimage.data.retina()", "scale": scale, "tile": tile, "seed": seed,
            "labels": "pseudo-labels: sato vesselness + hysteresis threshold (not expert annotations)"}
    return _write_dataset(Path(root) / name, items, draw, info, overwrite)
