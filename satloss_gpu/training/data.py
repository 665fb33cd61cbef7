"""Datasets in the reference layout, image reading and label binarisation.

Layout: ``<dataroot>/<dataset>/{train,train_labels,val,val_labels,test,test_labels}``. An
image and its label have the same file name up to the extension (``a.jpg`` pairs with
``a.png``; identical names pair too). Any format imageio or Pillow reads is accepted
(OpenCV is used when installed and the others fail).

Images become float32 RGB in [0, 1]: grey images are repeated over three channels, alpha
is dropped; 8-bit values are divided by 255, 16-bit by 65535, floats are clipped to [0, 1].

Labels are binarised by this rule, which never guesses between encodings:

- bool: as is;
- at most two distinct values, one of them 0: every nonzero pixel is foreground (0/1, 0/255,
  class ids 0/2, 16-bit 0/255 or 0/65535, floats 0/1 all read the same way; a label of one
  value is all background if that value is 0, else all foreground);
- otherwise (more than two values, or two values neither of them 0): read as a 0 /
  full-scale mask with compression noise (JPEG) and thresholded at half the full scale
  (255 for 8-bit, 65535 for 16-bit, 1 for floats).
  It is rejected when more than 1% of its pixels lie strictly between a quarter and three
  quarters of the full scale (a grey image, or classes such as 0/128/255), when no pixel
  reaches three quarters of it (class ids such as 0/1/2: not binary), when values lie
  outside [0, full scale], or for other pixel types (32-bit integers);
- colour labels: the maximum over the colour channels first.

:meth:`SegmentationDataset.check` warns (or, for a training set, refuses) when every label of
a split is empty: a dataset whose labels were all read as background trains nothing.
``.npy`` labels are not read (convert them to PNG or TIFF). Every problem with the files raises :class:`DataError` naming the path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["DataError", "IMAGE_EXTENSIONS", "read_image", "read_label", "pair_files",
           "SegmentationDataset", "split_dirs", "same_size", "missing_dataset_error"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".webp")
_NOT_BINARY_FRACTION = 0.01


class DataError(ValueError):
    """A problem with the files of a dataset; the message names the path."""


def _imread(path: Path) -> np.ndarray:
    """Decode an image with imageio, then Pillow, then OpenCV (if installed)."""
    import warnings

    errors = []
    try:
        import imageio.v3 as iio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # legacy plugins tried on junk
            return np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - try the next reader
        errors.append(f"imageio: {exc}")
    try:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"Pillow: {exc}")
    try:
        import cv2

        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is not None:
            return array[..., ::-1] if array.ndim == 3 else array
        errors.append("OpenCV: could not decode")
    except ImportError:
        pass
    raise DataError(f"cannot read image {path}: {errors[0].splitlines()[0] if errors else 'unknown'}")


def _without_alpha(array: np.ndarray) -> np.ndarray:
    """The colour channels of a decoded image: grey + alpha (H, W, 2) gives (H, W, 1) and
    RGBA (H, W, 4) gives (H, W, 3); any other shape is returned as it is."""
    if array.ndim == 3 and array.shape[2] in (2, 4):
        return array[..., :-1]
    return array


def _scale(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.float32)
    if array.dtype.kind == "u" or array.dtype.kind == "i":
        top = 255.0 if array.dtype.itemsize == 1 else 65535.0 if array.dtype.itemsize == 2 else float(
            max(array.max(), 1))
        return array.astype(np.float32) / top
    if array.dtype.kind == "f":
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    raise DataError(f"unsupported pixel type {array.dtype} in {path}")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as float32 RGB in [0, 1].

    Returns
    -------
    (H, W, 3) float32 ndarray

    Raises
    ------
    DataError
        If the file cannot be decoded or has an unsupported shape.
    """
    path = Path(path)
    array = _without_alpha(_imread(path))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] < 3 or min(array.shape[:2]) < 1:
        raise DataError(f"image {path} must be grey or colour (H, W[, C]); got shape {array.shape}")
    return np.ascontiguousarray(_scale(array[..., :3], path))


def read_label(path: str | Path) -> np.ndarray:
    """Read a label image and binarise it by the module's rule.

    Returns
    -------
    (H, W) bool ndarray

    Raises
    ------
    DataError
        If the file cannot be read or its encoding is not a binary one of the module's rule.

    Examples
    --------
    >>> import imageio.v3 as iio, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ids.png")
    >>> iio.imwrite(path, np.array([[0, 2], [2, 0]], np.uint8))   # class ids 0/2
    >>> read_label(path).astype(int).tolist()
    [[0, 1], [1, 0]]
    """
    path = Path(path)
    array = _without_alpha(_imread(path))
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.ndim != 2:
        raise DataError(f"label {path} must be a 2D mask; got shape {array.shape}")
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "iuf":
        raise DataError(f"label {path} has unsupported pixel type {array.dtype}")
    values = np.unique(array)
    if np.isnan(values).any() or values[0] < 0:
        raise DataError(f"label {path} has negative or NaN values (min {values[0]}); expected "
                        f"0 for background and one positive value for foreground")
    if len(values) == 1 or (len(values) == 2 and values[0] == 0):
        return array != 0
    return _threshold_noisy_mask(array, values, path)


def _threshold_noisy_mask(array: np.ndarray, values: np.ndarray, path: Path) -> np.ndarray:
    """A label with values other than 0 and one foreground value, read as a 0 / full-scale
    mask with compression noise."""
    full = {("u", 1): 255.0, ("u", 2): 65535.0, ("f", 2): 1.0, ("f", 4): 1.0,
            ("f", 8): 1.0}.get((array.dtype.kind, array.dtype.itemsize))
    shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")
    if full is None or values[-1] > full:
        raise DataError(f"label {path} has {len(values)} distinct values ({shown}) of type "
                        f"{array.dtype}: expected two (0 and the foreground value), or 8-bit, "
                        f"16-bit or float [0, 1] masks with compression noise")
    scaled = array.astype(np.float32) / full
    middle = np.count_nonzero((scaled > 0.25) & (scaled < 0.75))
    if middle > _NOT_BINARY_FRACTION * scaled.size:
        raise DataError(
            f"label {path} is not binary: {100.0 * middle / scaled.size:.1f}% of its pixels are "
            f"grey (expected 0/255, 0/1 or bool)")
    if values[-1] < 0.75 * full:
        raise DataError(f"label {path} is not binary: {len(values)} distinct values ({shown}), "
                        f"none near the full scale {full:g}: class ids? Binary labels need 0 "
                        f"for background and one foreground value")
    return scaled > 0.5


def split_dirs(dataroot: str | Path, dataset: str, split: str) -> Tuple[Path, Path]:
    """``(<dataroot>/<dataset>/<split>, <dataroot>/<dataset>/<split>_labels)``."""
    base = Path(dataroot) / dataset
    return base / split, base / f"{split}_labels"


def missing_dataset_error(dataroot: str | Path, dataset: str, split: str = "train",
                          hint: str = "see `satloss make-data`") -> DataError:
    """The error for a dataset folder ``<dataroot>/<dataset>`` that does not exist.

    The one-line message names ``--dataroot`` and ``--dataset``, the folders looked for, the
    datasets that ``dataroot`` does hold (or that it is missing or a file), and ``hint``.
    """
    root = Path(dataroot)
    image_dir, label_dir = split_dirs(root, dataset, split)
    if root.is_dir():
        held = sorted(p.name for p in root.iterdir() if (p / split).is_dir())
        found = f"datasets in {root}: {', '.join(held)}" if held else f"no dataset in {root}"
    else:
        found = f"{root} is a file" if root.exists() else f"{root} does not exist"
    return DataError(f"dataset folder not found: {image_dir} (--dataroot {root}, --dataset "
                     f"{dataset}; looked for {image_dir} and {label_dir}; {found}); {hint}")


def _listing(folder: Path) -> Dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}")
    files: Dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            if f.stem in files:
                raise DataError(f"two images with the name {f.stem!r} in {folder}")
            files[f.stem] = f
    return files


def pair_files(image_dir: str | Path, label_dir: str | Path) -> List[Tuple[str, Path, Path]]:
    """Pair images and labels by file name (without extension).

    Returns
    -------
    list of (name, image_path, label_path), sorted by name

    Raises
    ------
    DataError
        If a folder is missing or empty, or a file has no partner.
    """
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    images, labels = _listing(image_dir), _listing(label_dir)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) in {image_dir}")
    lonely_images = sorted(set(images) - set(labels))
    if lonely_images:
        raise DataError(f"{len(lonely_images)} image(s) without a label in {label_dir}: "
                        f"{', '.join(images[n].name for n in lonely_images[:3])}")
    lonely_labels = sorted(set(labels) - set(images))
    if lonely_labels:
        raise DataError(f"{len(lonely_labels)} label(s) without an image in {image_dir}: "
                        f"{', '.join(labels[n].name for n in lonely_labels[:3])}")
    return [(name, images[name], labels[name]) for name in sorted(images)]


class SegmentationDataset:
    """Paired images and binary labels of one split, with optional random crops and flips.

    Parameters
    ----------
    dataroot : path
    dataset : str
    split : {"train", "val", "test"}
    crop : int, optional
        Side of random square crops (smaller images and their labels are reflect-padded
        first). None: whole images.
    augment : bool, default False
        Random horizontal and vertical flips and, for square samples, transposition.
    seed : int, default 0
        Crops and flips of sample ``i`` in epoch ``e`` use the seed ``(seed, e, i)``:
        reproducible whatever the number of loader workers.
    cache_bytes : int, default 1 GiB
        :meth:`check` keeps the decoded arrays in memory when they fit.

    Notes
    -----
    Items are dicts: ``image`` (3, H, W) float32 tensor, ``label`` (1, H, W) float32 tensor
    of 0/1, ``name`` (str) and ``index`` (int).
    """

    #: Images; :class:`~satloss_gpu.training.patches.VolumeDataset` has 3.
    spatial_dims = 2
    #: Channels of the images given to the model (grey images are repeated over three).
    channels = 3

    def __init__(self, dataroot: str | Path, dataset: str, split: str, crop: Optional[int] = None,
                 augment: bool = False, seed: int = 0, cache_bytes: int = 1 << 30) -> None:
        self.image_dir, self.label_dir = split_dirs(dataroot, dataset, split)
        if not self.image_dir.parent.is_dir():
            raise missing_dataset_error(dataroot, dataset, split)
        if (self.image_dir / "images").is_dir() and not self.label_dir.is_dir():
            raise DataError(f"{self.image_dir} holds a volume split (images/ and labels/ of "
                            f".npy volumes): train on volumes with --spatial_dims 3")
        self.items = pair_files(self.image_dir, self.label_dir)
        if crop is not None and int(crop) < 1:
            raise ValueError(f"`crop` must be a positive int or None; got {crop}")
        self.crop = None if crop is None else int(crop)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.cache_bytes = int(cache_bytes)
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> List[str]:
        return [name for name, _, _ in self.items]

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops and flips (call once per epoch)."""
        self.epoch = int(epoch)

    def load(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Decoded (image (H, W, 3) float32, label (H, W) bool) of item ``i``."""
        if i in self._cache:
            return self._cache[i]
        _, image_path, label_path = self.items[i]
        image, label = read_image(image_path), read_label(label_path)
        if image.shape[:2] != label.shape:
            raise DataError(f"label {label_path} has shape {label.shape} but its image "
                            f"{image_path} has {image.shape[:2]}")
        return image, label

    def check(self, require_foreground: bool = False) -> List[Tuple[int, int]]:
        """Read every pair once, raising :class:`DataError` on the first bad file.

        Parameters
        ----------
        require_foreground : bool, default False
            When every label is empty (no foreground pixel): raise :class:`DataError` if
            True (a training set), else warn (an empty test set can be meant).

        Returns
        -------
        list of (H, W)
            The size of every item. The arrays are cached while they fit ``cache_bytes``.
        """
        shapes, used, with_foreground = [], 0, 0
        for i in range(len(self)):
            image, label = self.load(i)
            shapes.append(label.shape)
            with_foreground += bool(label.any())
            used += image.nbytes + label.nbytes
            if used <= self.cache_bytes:
                self._cache[i] = (image, label)
        if len(self) and not with_foreground:
            self._empty_labels(require_foreground)
        self._warn_small_for_crop(shapes)
        return shapes

    def _warn_small_for_crop(self, shapes: List[Tuple[int, int]]) -> None:
        """Warn when images are smaller than the crop: they are padded, label included."""
        if self.crop is None:
            return
        small = [shape for shape in shapes if min(shape) < self.crop]
        if not small:
            return
        import warnings

        smallest = min(small, key=lambda shape: shape[0] * shape[1])
        warnings.warn(f"{len(small)} of the {len(shapes)} images in {self.image_dir} are smaller "
                      f"than the crop {self.crop} (smallest {smallest[0]} x {smallest[1]}): they "
                      f"are padded first, labels too (mirrored, or repeated edges when the image "
                      f"is under half the crop), which adds structures that are not in the data; "
                      f"use --crop {min(min(shape) for shape in shapes)} or less, or --crop 0 "
                      f"for whole images", UserWarning, stacklevel=3)

    def _empty_labels(self, refuse: bool) -> None:
        message = (f"every label of the {len(self)} in {self.label_dir} is empty (no foreground "
                   f"pixel): check their encoding (0 background, one nonzero foreground value)")
        if refuse:
            raise DataError(message)
        import warnings

        warnings.warn(message, UserWarning, stacklevel=3)

    def _augment(self, image: np.ndarray, label: np.ndarray, i: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.crop is not None:
            image, label = _random_crop(image, label, self.crop, rng)
        if self.augment:
            if rng.random() < 0.5:
                image, label = image[:, ::-1], label[:, ::-1]
            if rng.random() < 0.5:
                image, label = image[::-1], label[::-1]
            if label.shape[0] == label.shape[1] and rng.random() < 0.5:
                image, label = image.transpose(1, 0, 2), label.T
        return image, label

    @staticmethod
    def as_batch(image: np.ndarray) -> "torch.Tensor":
        """A decoded image (H, W, 3) as the model's input batch of one, (1, 3, H, W)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]

    def __getitem__(self, i: int) -> dict:
        import torch

        image, label = self._augment(*self.load(i), i)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.from_numpy(np.ascontiguousarray(label[None], dtype=np.float32)),
            "name": self.items[i][0],
            "index": i,
        }


def _random_crop(image: np.ndarray, label: np.ndarray, size: int,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    h, w = label.shape
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "edge"
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), mode=mode)
        h, w = label.shape
    r = int(rng.integers(0, h - size + 1))
    c = int(rng.integers(0, w - size + 1))
    return image[r:r + size, c:c + size], label[r:r + size, c:c + size]


def same_size(shapes: Sequence[Tuple[int, int]]) -> bool:
    """Whether all (H, W) are equal."""
    return len(set(map(tuple, shapes))) <= 1
