"""Volumes for training and evaluation: a split folder of the volume layout, random patches.

:class:`VolumeDataset` is the volume counterpart of
:class:`~satloss_gpu.training.data.SegmentationDataset`, with the same interface for the
training loop: ``items`` (name first), ``load(i)``, ``check()``, ``set_epoch()``,
``as_batch()``, ``spatial_dims`` and ``channels``. Training samples are random cubic patches
of ``crop`` voxels a side, half of them centred on a random foreground voxel (with random
flips along the three axes under ``augment``);
validation and test samples are whole volumes, predicted by sliding windows.

Layout (see :mod:`satloss_gpu.training.synthetic3d`)::

    <dataroot>/<dataset>/{train,val,test}/images/NAME.npy   (D, H, W) or (C, D, H, W)
    <dataroot>/<dataset>/{train,val,test}/labels/NAME.npy   (D, H, W), 0/1 (or 0/255)
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from .data import DataError, IMAGE_EXTENSIONS, missing_dataset_error

__all__ = ["VolumeDataset", "random_patch", "volume_split_dir"]


def volume_split_dir(dataroot: str | Path, dataset: str, split: str) -> Path:
    """``<dataroot>/<dataset>/<split>`` (holding ``images/`` and ``labels/``)."""
    return Path(dataroot) / dataset / split


def _refuse_image_split(folder: Path) -> None:
    """A DataError when ``folder`` is a split of the image layout (image files, or a
    ``<split>_labels`` folder beside it) instead of a volume split."""
    flat = folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS
                                   for p in folder.iterdir() if p.is_file())
    beside = folder.with_name(f"{folder.name}_labels").is_dir()
    if (flat or beside) and not (folder / "images").is_dir():
        raise DataError(f"{folder} is a split of 2D images ({folder.name}/ and "
                        f"{folder.name}_labels/), not of volumes: train on images with "
                        f"--spatial_dims 2, or give volumes as {folder}/images/NAME.npy and "
                        f"{folder}/labels/NAME.npy")


def random_patch(image: np.ndarray, label: np.ndarray, size: int,
                 rng: np.random.Generator,
                 foreground: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """A random cube of ``size`` voxels a side of a volume and its label.

    Parameters
    ----------
    image : (C, D, H, W) ndarray
    label : (D, H, W) ndarray
    size : int
        At most each of D, H and W.
    rng : numpy.random.Generator
    foreground : float in [0, 1], default 0
        The probability that the patch is centred (as far as it fits) on a foreground voxel
        drawn at random, instead of placed uniformly: thin structures fill a small part of a
        volume, and uniform patches are then mostly background.

    Returns
    -------
    (C, size, size, size) and (size, size, size) views of ``image`` and ``label``
    """
    starts = [int(rng.integers(0, n - size + 1)) for n in label.shape]
    if foreground > 0.0 and rng.random() < foreground:
        voxels = np.flatnonzero(label)
        if voxels.size:
            centre = np.unravel_index(int(voxels[rng.integers(voxels.size)]), label.shape)
            starts = [int(min(max(c - size // 2, 0), n - size))
                      for c, n in zip(centre, label.shape)]
    box = tuple(slice(s, s + size) for s in starts)
    return image[(slice(None),) + box], label[box]


class VolumeDataset:
    """Paired volumes and binary labels of one split, with random patches and flips.

    Parameters
    ----------
    dataroot : path
    dataset : str
    split : {"train", "val", "test"}
    crop : int, optional
        Side of the random cubic training patches; every volume must be at least this
        large along each axis (:meth:`check`). None: whole volumes.
    augment : bool, default False
        Random flips along each of the three axes.
    foreground : float, default 0.5
        The fraction of training patches centred on a random foreground voxel (see
        :func:`random_patch`); the others are placed uniformly.
    seed : int, default 0
        Patches and flips of sample ``i`` in epoch ``e`` use the seed ``(seed, e, i)``.

    Notes
    -----
    The volumes are read (and checked) when the dataset is built and kept in memory. Items
    are dicts: ``image`` (C, p, p, p) float32 tensor, ``label`` (1, p, p, p) float32 tensor of
    0/1, ``name`` and ``index``.
    """

    spatial_dims = 3

    def __init__(self, dataroot: str | Path, dataset: str, split: str, crop: Optional[int] = None,
                 augment: bool = False, seed: int = 0, foreground: float = 0.5) -> None:
        from .synthetic3d import load_volume_folder

        if not 0.0 <= float(foreground) <= 1.0:
            raise ValueError(f"`foreground` must be in [0, 1]; got {foreground!r}")
        self.image_dir = volume_split_dir(dataroot, dataset, split)
        self.label_dir = self.image_dir / "labels"
        if not self.image_dir.parent.is_dir():
            raise missing_dataset_error(dataroot, dataset, split,
                                        hint="see `satloss make-data --spatial_dims 3`")
        _refuse_image_split(self.image_dir)
        if crop is not None and int(crop) < 1:
            raise ValueError(f"`crop` must be a positive int or None; got {crop}")
        folder = load_volume_folder(self.image_dir)
        self.items: List[Tuple[str, np.ndarray, np.ndarray]] = list(
            zip(folder.names, folder.images, folder.labels))
        self.foreground = float(foreground)
        self.crop = None if crop is None else int(crop)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> List[str]:
        return [name for name, _, _ in self.items]

    @property
    def channels(self) -> int:
        """Channels of the volumes (1 for a (D, H, W) file)."""
        return int(self.items[0][1].shape[0]) if self.items else 1

    def set_epoch(self, epoch: int) -> None:
        """Change the random patches and flips (call once per epoch)."""
        self.epoch = int(epoch)

    def load(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(image (C, D, H, W) float32, label (D, H, W) bool) of item ``i``."""
        _, image, label = self.items[i]
        return image, label.astype(bool)

    @staticmethod
    def as_batch(image: np.ndarray) -> torch.Tensor:
        """A volume (C, D, H, W) as the model's input batch of one, (1, C, D, H, W)."""
        return torch.from_numpy(np.ascontiguousarray(image))[None]

    def check(self, require_foreground: bool = False) -> List[Tuple[int, int, int]]:
        """The size (D, H, W) of every volume; :class:`DataError` for volumes smaller than
        the patch, or (with ``require_foreground``) when every label is empty."""
        shapes = [tuple(int(n) for n in label.shape) for _, _, label in self.items]
        if self.crop is not None:
            small = [(name, shape) for (name, _, _), shape in zip(self.items, shapes)
                     if min(shape) < self.crop]
            if small:
                name, shape = small[0]
                raise DataError(f"{len(small)} of the {len(shapes)} volumes in {self.image_dir} "
                                f"are smaller than the patch --crop {self.crop} ({name}: "
                                f"{' x '.join(map(str, shape))}); use --crop "
                                f"{min(min(s) for s in shapes)} or less")
        if self.items and not any(label.any() for _, _, label in self.items):
            message = (f"every label of the {len(self)} in {self.label_dir} is empty (no "
                       f"foreground voxel)")
            if require_foreground:
                raise DataError(message)
            import warnings

            warnings.warn(message, UserWarning, stacklevel=2)
        return shapes

    def _augment(self, image: np.ndarray, label: np.ndarray, i: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.crop is not None:
            image, label = random_patch(image, label, self.crop, rng, self.foreground)
        if self.augment:
            for axis in range(3):
                if rng.random() < 0.5:
                    image, label = np.flip(image, axis + 1), np.flip(label, axis)
        return image, label

    def __getitem__(self, i: int) -> dict:
        image, label = self._augment(*self.load(i), i)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(label[None], dtype=np.float32)),
            "name": self.items[i][0],
            "index": i,
        }
