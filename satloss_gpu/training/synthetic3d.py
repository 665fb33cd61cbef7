"""Generated volumes of thin branching structures, and folders of volumes on disk.

:func:`generate_volume` draws vessel-like trees in a (D, H, W) volume: random walks with a
drifting direction that branch, with a radius of 1 to 3 voxels tapering along each branch,
and a few connectors that join a branch to another one (touching branches: loops within a
tree, or two trees joined). The label is the union of balls along the centrelines; the image
renders it bright on a smooth, uneven background, with a few gaps (short stretches where a
vessel fades into the background in the image while the label stays connected), blur and
noise, as in angiography (CT/MR) or light-sheet vessel stains.

Labels have no spurious voids: background cavities enclosed by the drawing (6-connected
background components not touching the volume's faces) are filled, so that ``beta2`` of a
label is 0. Where two tubes meet at a shallow angle (at branchings and where branches touch)
their voxelised surfaces meet at a few voxels only and leave one-voxel slits, each a tiny
tunnel (``beta1``); a closing with the 6-neighbourhood fills most of them first (on seeds 0 to
9 at 64^3 it leaves 7 of 18 tunnels and adds 32 voxels per volume on average), so that
``beta1`` mostly counts the loops of touching branches. A few one-voxel tunnels remain (3 of
those 7).

:func:`make_volume_dataset` writes them in the volume layout, which is also the layout for
one's own volumes::

    <root>/<name>/dataset.json
    <root>/<name>/{train,val,test}/images/NNNN.npy   (D, H, W) or (C, D, H, W)
    <root>/<name>/{train,val,test}/labels/NNNN.npy   (D, H, W), 0 background, 1 foreground

(``.npz`` files holding one array are read too). Images are written as float32 in [0, 1] and
labels as uint8 in {0, 1}. :func:`load_volume_folder` reads and checks one split folder.
Everything is deterministic: the same seed gives the same files, and volume ``i`` of a split
does not depend on how many volumes are generated.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

__all__ = ["VOLUME_KINDS", "VOLUME_SUFFIXES", "VolumeFolder", "generate_volume",
           "close_slits", "fill_cavities", "make_volume_dataset", "load_volume_folder",
           "max_intensity_projection"]

VOLUME_KINDS = ("vessels",)
VOLUME_SUFFIXES = (".npy", ".npz")
_SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_RADIUS_STEP = 0.5
_MIN_SIZE = 8


# --------------------------------------------------------------------------- centrelines
def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _walk3d(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float,
            step: float, wiggle: float) -> np.ndarray:
    """Points (N, 3) (z, row, col) of a walk whose direction drifts smoothly."""
    n = max(2, int(length / step))
    kicks = np.cumsum(rng.normal(0.0, wiggle, (n, 3)), axis=0)
    directions = direction[None, :] + kicks
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    return start + np.vstack([np.zeros((1, 3)), np.cumsum(step * directions, axis=0)])


def _inside(points: np.ndarray, size: Tuple[int, int, int], margin: float = 0.0) -> np.ndarray:
    upper = np.asarray(size, float) - 1.0 - margin
    return np.all((points >= margin) & (points <= upper), axis=1)


def _face_start(rng: np.random.Generator,
                size: Tuple[int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """A point on a random face of the volume and the inward normal there."""
    axis = int(rng.integers(3))
    high = bool(rng.integers(2))
    start = rng.uniform(0.25, 0.75, 3) * (np.asarray(size, float) - 1.0)
    start[axis] = size[axis] - 1.0 if high else 0.0
    normal = np.zeros(3)
    normal[axis] = -1.0 if high else 1.0
    return start, normal


def _tree(rng: np.random.Generator, size: Tuple[int, int, int], start: np.ndarray,
          direction: np.ndarray, length: float, radius: float, depth: int,
          out: List[Tuple[np.ndarray, np.ndarray]]) -> None:
    """Append (points, radii) of a branch and, recursively, of its side branches."""
    points = _walk3d(rng, start, direction, length, 1.0, 0.08)
    keep = np.cumprod(_inside(points, size, -1.0)).astype(bool)  # stop where it leaves
    points = points[keep]
    if len(points) < 2:
        return
    radii = np.linspace(radius, max(1.0, 0.65 * radius), len(points))
    out.append((points, radii))
    if depth == 0 or len(points) < 8:
        return
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.integers(len(points) // 5, len(points) - 3))
        tangent = _unit(points[k + 1] - points[k])
        side = _unit(np.cross(tangent, rng.normal(size=3)))
        child = _unit(tangent + rng.uniform(0.6, 1.6) * side)
        _tree(rng, size, points[k], child, length * rng.uniform(0.45, 0.7),
              max(1.0, radii[k] * 0.75), depth - 1, out)


def _connector(rng: np.random.Generator, a: np.ndarray, b: np.ndarray,
               radius: float) -> Tuple[np.ndarray, np.ndarray]:
    """A gently bent centreline from ``a`` to ``b`` (a branch touching another one)."""
    n = max(2, int(np.ceil(np.linalg.norm(b - a))) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    span = float(np.linalg.norm(b - a))
    bend = _unit(np.cross(b - a, rng.normal(size=3))) * rng.uniform(0.1, 0.3) * span
    points = a + t * (b - a) + np.sin(np.pi * t) * bend
    return points, np.full(n, radius)


def _connectors(rng: np.random.Generator, branches: List[Tuple[np.ndarray, np.ndarray]],
                size: Tuple[int, int, int]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Up to two connectors between points of two different branches, 6 to size/2 apart."""
    out = []
    if len(branches) < 2:
        return out
    for _ in range(int(rng.integers(0, 3))):
        for _attempt in range(20):
            i, j = rng.choice(len(branches), 2, replace=False)
            a = branches[i][0][rng.integers(len(branches[i][0]))]
            b = branches[j][0][rng.integers(len(branches[j][0]))]
            if 6.0 <= np.linalg.norm(a - b) <= 0.5 * min(size):
                out.append(_connector(rng, a, b, float(rng.choice([1.0, 1.5]))))
                break
    return out


def _centrelines(rng: np.random.Generator, size: Tuple[int, int, int]
                 ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """All branches (points (N, 3), radii (N,)) of one volume."""
    scale = float(min(size))
    branches: List[Tuple[np.ndarray, np.ndarray]] = []
    for _ in range(int(rng.integers(1, 3))):
        start, normal = _face_start(rng, size)
        direction = _unit(normal + rng.normal(0.0, 0.35, 3))
        radius = float(np.clip(rng.uniform(2.0, 3.0) * scale / 64.0, 1.5, 3.0))
        _tree(rng, size, start, direction, scale * rng.uniform(0.8, 1.1), radius, 3, branches)
    return branches + _connectors(rng, branches, size)


# --------------------------------------------------------------------------- drawing
def _densify(points: np.ndarray, radii: np.ndarray, spacing: float = 0.5
             ) -> Tuple[np.ndarray, np.ndarray]:
    """Points at most ``spacing`` apart along the polyline, with interpolated radii."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    samples = np.linspace(0.0, arc[-1], max(2, int(np.ceil(arc[-1] / spacing)) + 1))
    dense = np.stack([np.interp(samples, arc, points[:, k]) for k in range(3)], axis=1)
    return dense, np.interp(samples, arc, radii)


def _draw_balls(size: Tuple[int, int, int], points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The union of the balls (centre rounded to a voxel, radius) as a bool volume.

    Radii are rounded to multiples of 0.5; one exact Euclidean distance transform per radius
    finds every voxel within that radius of a centre carrying it.
    """
    centres = np.round(points).astype(np.int64)
    keep = _inside(centres.astype(float), size)
    centres, radii = centres[keep], np.round(radii[keep] / _RADIUS_STEP) * _RADIUS_STEP
    mask = np.zeros(size, bool)
    for r in np.unique(radii):
        seeds = np.ones(size, bool)
        chosen = centres[radii == r]
        seeds[chosen[:, 0], chosen[:, 1], chosen[:, 2]] = False
        mask |= ndi.distance_transform_edt(seeds) <= r
    return mask


def close_slits(label: np.ndarray) -> np.ndarray:
    """``label`` with the one-voxel slits closed: itself or its closing with the
    6-neighbourhood (computed on an edge-padded copy, so the faces are not eroded).

    Parameters
    ----------
    label : (D, H, W) bool ndarray

    Returns
    -------
    (D, H, W) bool ndarray
    """
    padded = np.pad(label, 2, mode="edge")
    closed = ndi.binary_closing(padded, structure=ndi.generate_binary_structure(3, 1))
    return label | closed[2:-2, 2:-2, 2:-2]


def fill_cavities(label: np.ndarray) -> np.ndarray:
    """``label`` with every cavity filled: 6-connected background components that do not
    touch a face of the volume.

    Parameters
    ----------
    label : (D, H, W) bool ndarray

    Returns
    -------
    (D, H, W) bool ndarray

    Examples
    --------
    >>> shell = np.ones((5, 5, 5), bool); shell[2, 2, 2] = False
    >>> bool(fill_cavities(shell).all())
    True
    """
    return ndi.binary_fill_holes(label, structure=ndi.generate_binary_structure(3, 1))


# --------------------------------------------------------------------------- rendering
def _smooth_field3d(rng: np.random.Generator, size: Tuple[int, int, int],
                    sigma: float) -> np.ndarray:
    """A smooth random field in [0, 1], drawn coarse and zoomed (fast for large sigma)."""
    factor = max(1, int(sigma // 2))
    coarse = tuple(max(2, -(-n // factor)) for n in size)
    field = ndi.gaussian_filter(rng.normal(size=coarse), sigma / factor, mode="wrap")
    field = ndi.zoom(field, [n / c for n, c in zip(size, coarse)], order=1)
    field = field[:size[0], :size[1], :size[2]]
    field -= field.min()
    return field / max(float(field.max()), 1e-12)


def _gap_attenuation(rng: np.random.Generator, size: Tuple[int, int, int],
                     centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """1 everywhere but in a few balls on the centrelines, where the vessel fades (0 .. 0.25)."""
    atten = np.ones(size, np.float32)
    inside = _inside(centres, size)
    centres, radii = centres[inside], radii[inside]
    if len(centres) == 0:
        return atten
    n_gaps = int(rng.integers(1, 3 + int(np.prod(size)) // 65536))
    grid = np.indices(size, sparse=True)
    for k in rng.integers(len(centres), size=n_gaps):
        r = radii[k] + rng.uniform(0.5, 1.5)
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centres[k]))
        atten[dist2 <= r * r] = rng.uniform(0.0, 0.25)
    return atten


def _render_volume(rng: np.random.Generator, label: np.ndarray, atten: np.ndarray) -> np.ndarray:
    """Grey volume in [0, 1]: bright vessels on a smooth uneven background, blur, noise."""
    size = label.shape
    background = 0.2 + 0.25 * _smooth_field3d(rng, size, max(size) / 6)
    contrast = rng.uniform(0.3, 0.5) * (0.4 + 0.6 * _smooth_field3d(rng, size, max(size) / 4))
    image = background + contrast * label.astype(np.float32) * atten
    image = ndi.gaussian_filter(image, rng.uniform(0.5, 0.9))
    image = image + rng.normal(0.0, rng.uniform(0.02, 0.06), size)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _check_size(size: Any) -> Tuple[int, int, int]:
    from .._validation import describe

    try:
        values = tuple(int(n) for n in size)
    except TypeError:
        values = ()
    if len(values) != 3 or min(values) < _MIN_SIZE:
        raise ValueError(f"`size` must be (D, H, W) with every side at least {_MIN_SIZE}; got "
                         f"{describe(size)}")
    return values  # type: ignore[return-value]


def generate_volume(kind: str = "vessels", size: Sequence[int] = (64, 64, 64),
                    seed: Optional[int | Sequence[int]] = 0,
                    gaps: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """One generated volume and its exact label.

    Parameters
    ----------
    kind : {"vessels"}
        Branching vessel-like trees (see the module notes).
    size : sequence of 3 ints, default (64, 64, 64)
        (D, H, W), each at least 8.
    seed : int or sequence of int
        Seed of :func:`numpy.random.default_rng`.
    gaps : bool, default True
        Fade a few short stretches of the vessels in the image (the label is unchanged).

    Returns
    -------
    image : (D, H, W) float32 ndarray in [0, 1]
    label : (D, H, W) uint8 ndarray in {0, 1}
        Foreground 1: the union of balls along the centrelines, slits closed
        (:func:`close_slits`), no cavities (:func:`fill_cavities`).

    Examples
    --------
    >>> image, label = generate_volume(size=(16, 24, 24), seed=3)
    >>> image.shape, image.dtype.name, label.dtype.name, int(label.max())
    ((16, 24, 24), 'float32', 'uint8', 1)
    """
    from .._validation import check_bool, check_choice

    check_choice("kind", kind, VOLUME_KINDS)
    check_bool("gaps", gaps)
    size = _check_size(size)
    rng = np.random.default_rng(seed)
    dense = [_densify(points, radii) for points, radii in _centrelines(rng, size)]
    centres = np.concatenate([p for p, _ in dense]) if dense else np.zeros((0, 3))
    radii = np.concatenate([r for _, r in dense]) if dense else np.zeros(0)
    label = fill_cavities(close_slits(_draw_balls(size, centres, radii)))
    atten = _gap_attenuation(rng, size, centres, radii) if gaps else np.ones(size, np.float32)
    return _render_volume(rng, label, atten), label.astype(np.uint8)


# --------------------------------------------------------------------------- datasets on disk
def _clear_volume_target(base: Path, overwrite: bool) -> None:
    """The image datasets' rule (:func:`satloss_gpu.training.synthetic._clear_target`) on the
    volume layout: an empty or missing folder is used as is; a non-empty one only with
    ``overwrite`` and only if its record lists every file in it."""
    from .synthetic import _clear_target

    folders = [f"{split}/{kind}" for split in _SPLITS for kind in ("images", "labels")]
    _clear_target(base, overwrite, folders + list(_SPLITS))


def make_volume_dataset(root: str | Path = "data", name: str = "vessels3d", n_train: int = 16,
                        n_val: int = 4, n_test: int = 4, size: Sequence[int] = (64, 64, 64),
                        seed: int = 0, overwrite: bool = False) -> Path:
    """Write generated vessel volumes in the volume layout (see the module notes).

    Parameters
    ----------
    root : path, default "data"
    name : str, default "vessels3d"
        Files go to ``root/name/<split>/images`` and ``root/name/<split>/labels``.
    n_train, n_val, n_test : int
        Volumes per split (train >= 1); a split of 0 volumes gets no folder.
    size : sequence of 3 ints, default (64, 64, 64)
        (D, H, W).
    seed : int, default 0
        Volume ``i`` of split ``s`` uses the seed ``(seed, s, i)``.
    overwrite : bool, default False
        Replace a dataset written here before. Without it a non-empty ``root/name`` is
        refused; with it only the files its ``dataset.json`` lists are removed, and a folder
        holding any other file is refused.

    Returns
    -------
    Path
        ``root/name``; its ``dataset.json`` records the parameters and the files (written
        first, so that a run cut short can be replaced with ``overwrite``).

    Raises
    ------
    ValueError
        Bad counts or size, a non-empty target (see ``overwrite``), an output path through a
        file.
    """
    from .._validation import check_bool, check_int
    from .paths import output_dir
    from .synthetic import DATASET_RECORD

    check_bool("overwrite", overwrite)
    counts = {"train": check_int("n_train", n_train, 1), "val": check_int("n_val", n_val, 0),
              "test": check_int("n_test", n_test, 0)}
    size = _check_size(size)
    seed = check_int("seed", seed, 0)
    base = Path(root) / str(name)
    output_dir(base.parent, "the dataset root")
    _clear_volume_target(base, overwrite)
    plan = [(split, i) for split, count in counts.items() for i in range(count)]
    files = [f"{split}/{kind}/{i:04d}.npy" for split, i in plan for kind in ("images", "labels")]
    for split in dict.fromkeys(split for split, _ in plan):
        for kind in ("images", "labels"):
            output_dir(base / split / kind, "the dataset folder")
    info = {"kind": "vessels", "spatial_dims": 3, "size": list(size), "seed": seed,
            **{f"n_{k}": v for k, v in counts.items()},
            "images": "float32 (D, H, W) in [0, 1]",
            "labels": "uint8 (D, H, W); 0 background, 1 foreground",
            "files": files}
    (base / DATASET_RECORD).write_text(json.dumps(info, indent=2))
    for split, i in plan:
        image, label = generate_volume("vessels", size, seed=(seed, _SPLIT_CODES[split], i))
        np.save(base / split / "images" / f"{i:04d}.npy", image)
        np.save(base / split / "labels" / f"{i:04d}.npy", label)
    return base


# --------------------------------------------------------------------------- reading
class VolumeFolder(NamedTuple):
    """The volumes of one split folder, sorted by name.

    Attributes
    ----------
    names : list of str
        File names without suffix.
    images : list of (C, D, H, W) float32 ndarray
        A (D, H, W) file gets C = 1; integer images are scaled to [0, 1] (uint8 by 255,
        uint16 by 65535, others by their maximum), bool to {0, 1}; floats are kept as they
        are (normalise them yourself).
    labels : list of (D, H, W) uint8 ndarray in {0, 1}
    """

    names: List[str]
    images: List[np.ndarray]
    labels: List[np.ndarray]


def _data_error(message: str) -> Exception:
    from .data import DataError

    return DataError(message)


def _volume_files(folder: Path, what: str) -> dict:
    """``{stem: path}`` of the .npy/.npz files of ``folder``; clear errors for missing
    folders, duplicates and image files of 2D datasets."""
    from .data import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise _data_error(f"missing {what} folder {folder}: a volume split holds images/ and "
                          f"labels/ with .npy or .npz files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    flat = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if flat:
        raise _data_error(f"{folder} holds image files ({flat[0].name}, ...): a volume folder "
                          f"holds .npy or .npz volumes (D, H, W); is this a 2D dataset?")
    out: dict = {}
    for p in files:
        if p.suffix.lower() not in VOLUME_SUFFIXES:
            continue
        if p.stem in out:
            raise _data_error(f"{folder} holds two files named {p.stem} ({out[p.stem].name} "
                              f"and {p.name})")
        out[p.stem] = p
    return out


def _read_array(path: Path) -> np.ndarray:
    from .data import DataError

    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if len(keys) != 1:
                    raise _data_error(f"{path} must hold exactly one array; found {len(keys)} "
                                      f"({', '.join(keys[:4])})")
                return np.asarray(archive[keys[0]])
        return np.asarray(np.load(path, allow_pickle=False))
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise _data_error(f"cannot read volume {path}: {str(exc).splitlines()[0]}") from exc


def _image_volume(array: np.ndarray, path: Path) -> np.ndarray:
    """A checked image as (C, D, H, W) float32."""
    if array.ndim == 2:
        raise _data_error(f"{path} holds a 2D image {array.shape}; volumes must be (D, H, W) or "
                          f"(C, D, H, W)")
    if array.ndim not in (3, 4):
        raise _data_error(f"{path} must hold a volume (D, H, W) or (C, D, H, W); got shape "
                          f"{array.shape}")
    if array.dtype == bool:
        scaled = array.astype(np.float32)
    elif array.dtype.kind in "iu":
        top = 255.0 if array.dtype == np.uint8 else 65535.0 if array.dtype == np.uint16 else \
            float(max(int(array.max()), 1)) if array.size else 1.0
        if array.size and int(array.min()) < 0:
            raise _data_error(f"{path} holds negative integers; store such images as floats")
        scaled = array.astype(np.float32) / np.float32(top)
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise _data_error(f"{path} holds NaN or infinite values")
        scaled = array.astype(np.float32)
    else:
        raise _data_error(f"{path} must hold a bool, integer or float volume; got dtype "
                          f"{array.dtype}")
    return scaled[None] if scaled.ndim == 3 else scaled


def _label_volume(array: np.ndarray, path: Path) -> np.ndarray:
    """A checked binary label as (D, H, W) uint8 in {0, 1} (0/255 labels are accepted)."""
    if array.ndim != 3:
        kind = "a 2D label" if array.ndim == 2 else "a label"
        raise _data_error(f"{path} holds {kind} of shape {array.shape}; labels must be (D, H, W)")
    if array.dtype.kind not in "biuf":
        raise _data_error(f"{path} must hold a bool, integer or float label; got dtype "
                          f"{array.dtype}")
    values = np.unique(array)
    if array.dtype.kind == "f" and not np.isfinite(values).all():
        raise _data_error(f"{path} holds NaN or infinite values")
    if set(values.tolist()) <= {0, 1}:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and set(values.tolist()) <= {0, 255}:
        return (array == 255).astype(np.uint8)
    raise _data_error(f"{path} must be a binary label (values 0 and 1, or 0 and 255); found "
                      f"values {values[:5].tolist()}")


def load_volume_folder(path: str | Path, same_shape: bool = False) -> VolumeFolder:
    """Read and check the volumes of one split folder (``path/images``, ``path/labels``).

    Parameters
    ----------
    path : path
        A split folder of the volume layout, e.g. ``data/vessels3d/train``.
    same_shape : bool, default False
        Require every volume to have the same size (D, H, W) (to batch whole volumes; patch
        sampling does not need it).

    Returns
    -------
    VolumeFolder
        ``names``, ``images`` (C, D, H, W) float32 and ``labels`` (D, H, W) uint8, sorted by
        name.

    Raises
    ------
    DataError (a ValueError)
        Naming the file: a missing folder, no volumes, an image without a label or a label
        without an image, a 2D image or label (a 2D dataset's folder), an unreadable file, a
        dtype that is not bool, integer or float, NaN or inf, a non-binary label, a label
        whose size differs from its image's, images with different channel counts, and with
        ``same_shape`` volumes of different sizes.
    """
    from .._validation import check_bool

    check_bool("same_shape", same_shape)
    folder = Path(path)
    if not folder.is_dir():
        raise _data_error(f"volume folder {folder} does not exist")
    images = _volume_files(folder / "images", "images")
    labels = _volume_files(folder / "labels", "labels")
    if not images:
        raise _data_error(f"no .npy or .npz volumes in {folder / 'images'}")
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        side = "images" if unpaired[0] in images else "labels"
        other = "labels" if side == "images" else "images"
        raise _data_error(f"{folder / side / unpaired[0]} has no file of the same name in "
                          f"{folder / other} ({len(unpaired)} unpaired)")
    out = VolumeFolder([], [], [])
    for stem in sorted(images):
        image = _image_volume(_read_array(images[stem]), images[stem])
        label = _label_volume(_read_array(labels[stem]), labels[stem])
        if label.shape != image.shape[1:]:
            raise _data_error(f"{labels[stem]} has size {label.shape} but its image "
                              f"{images[stem].name} has size {image.shape[1:]}")
        if out.images and image.shape[0] != out.images[0].shape[0]:
            raise _data_error(f"{images[stem]} has {image.shape[0]} channel(s) but "
                              f"{out.names[0]} has {out.images[0].shape[0]}")
        if same_shape and out.images and image.shape != out.images[0].shape:
            raise _data_error(f"{images[stem]} has size {image.shape[1:]} but {out.names[0]} has "
                              f"{out.images[0].shape[1:]} (volumes of mixed sizes)")
        out.names.append(stem)
        out.images.append(image)
        out.labels.append(label)
    return out


# --------------------------------------------------------------------------- figures
def max_intensity_projection(image: Any, label: Any = None, pred: Any = None,
                             path: Optional[str | Path] = None, title: str = ""):
    """A figure of maximum-intensity projections along z, rows and columns.

    Parameters
    ----------
    image : (D, H, W) or (C, D, H, W) array_like
        The first channel is shown.
    label, pred : (D, H, W) array_like, optional
        A label and a prediction (probabilities or binary), one row each.
    path : path, optional
        Save the figure there (PNG) and close it; otherwise return it open.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .._arraylib import to_numpy

    image = to_numpy(image)
    volume = image[0] if image.ndim == 4 else image
    if volume.ndim != 3:
        raise ValueError(f"`image` must be (D, H, W) or (C, D, H, W); got shape {image.shape}")
    rows = [("image", volume.astype(np.float32))]
    for name, array in (("label", label), ("prediction", pred)):
        if array is not None:
            array = np.asarray(to_numpy(array), dtype=np.float32)
            if array.shape != volume.shape:
                raise ValueError(f"`{'pred' if name == 'prediction' else name}` must have the "
                                 f"image's size {volume.shape}; got {array.shape}")
            rows.append((name, array))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (name, array) in enumerate(rows):
        views = ("along z (H x W)", "along rows (D x W)", "along columns (D x H)")
        for axis, view in enumerate(views):
            ax = axes[r, axis]
            ax.imshow(array.max(axis=axis), cmap="gray", vmin=0.0,
                      vmax=1.0 if name != "image" else None)
            ax.set_title(f"{name}, {view}", fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig
