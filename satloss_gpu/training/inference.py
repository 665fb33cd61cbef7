"""Prediction and validation of images and volumes: whole or by sliding windows, with metrics.

One code path for both: a dataset says its ``spatial_dims`` (2 for images, 3 for volumes) and
turns one decoded sample into a batch of one (``as_batch``); the model's input is padded to its
divisor on every spatial axis and its output cropped back.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..metrics import segmentation_metrics
from .models import model_logits, pad_to_multiple, size_divisor

__all__ = ["predict", "evaluate", "predict_sample", "sample_metrics", "crop_to", "autocast"]


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on ``device`` when ``enabled`` (float16 on CUDA, bfloat16 on CPU)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if enabled and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x[..., :size[0], :size[1](, :size[2])]``: the trailing axes cut back to ``size``."""
    return x[(Ellipsis,) + tuple(slice(0, int(n)) for n in size)]


def predict(model: torch.nn.Module, image: torch.Tensor, amp: bool = False,
            tile: Optional[int] = None, tile_overlap: float = 0.25) -> torch.Tensor:
    """Probabilities for a batch of images or volumes of any size (reflect-padded to the
    model's divisor).

    Parameters
    ----------
    model : torch.nn.Module
        A built-in U-Net or any model returning logits (see
        :func:`~satloss_gpu.training.models.model_logits`).
    image : (B, C, H, W) or (B, C, D, H, W) float tensor, on the model's device
    amp : bool, default False
        Mixed precision.
    tile : int, optional
        Inputs larger than ``tile`` along any spatial axis are predicted by sliding windows
        of ``tile`` voxels a side blended with Gaussian weights
        (:func:`~satloss_gpu.training.sliding_window.sliding_window_inference`), so the
        network never holds the whole input's activations.
    tile_overlap : float, default 0.25
        Overlap of neighbouring windows, in [0, 1).

    Returns
    -------
    (B, K, H, W) or (B, K, D, H, W) float32 tensor in [0, 1]
    """
    spatial = tuple(int(n) for n in image.shape[2:])
    if tile is not None and max(spatial) > tile:
        from .sliding_window import sliding_window_inference

        return sliding_window_inference(lambda x: _whole(model, x, amp), image, tile,
                                        overlap=tile_overlap)
    return _whole(model, image, amp)


def _whole(model: torch.nn.Module, image: torch.Tensor, amp: bool) -> torch.Tensor:
    """Probabilities of whole inputs, padded to the model's divisor and cropped back."""
    padded, size = pad_to_multiple(image, size_divisor(model))
    with autocast(image.device, amp):
        logits = model_logits(model, padded)
    return torch.sigmoid(crop_to(logits.float(), size))


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Any, device: torch.device,
             amp: bool = False, threshold: float = 0.5, progress: bool = False,
             keep: int = 0, desc: str = "val", tile: Optional[int] = None,
             tile_overlap: float = 0.25) -> Tuple[List[Dict[str, Any]], List[Tuple]]:
    """Metrics of every sample of ``dataset``, one at a time (by windows larger than
    ``tile``, see :func:`predict`).

    The model is put in eval mode and back in the mode it was in.

    Parameters
    ----------
    dataset : SegmentationDataset or VolumeDataset
        Anything with ``items`` (name first), ``load(i)``, ``as_batch(image)`` and
        ``spatial_dims``.

    Returns
    -------
    rows : list of dict
        ``name`` and every metric of :func:`satloss_gpu.metrics.metric_names` for the
        dataset's ``spatial_dims``.
    kept : list of (name, image, probabilities, label)
        The first ``keep`` samples, for figures: images (H, W, 3) with (H, W) maps, or
        volumes (C, D, H, W) with (D, H, W) maps.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    rows, kept = [], []
    try:
        for i in tqdm(range(len(dataset)), desc=desc, leave=False, disable=not progress):
            image, label = dataset.load(i)
            prob = predict_sample(model, dataset, image, device, amp, tile, tile_overlap)
            row = {"name": dataset.items[i][0]}
            row.update(sample_metrics(prob, label, threshold, dataset.spatial_dims))
            rows.append(row)
            if len(kept) < keep:
                kept.append((dataset.items[i][0], image, prob, label))
    finally:
        model.train(was_training)
    return rows, kept


def predict_sample(model: torch.nn.Module, dataset: Any, image: np.ndarray,
                   device: torch.device, amp: bool, tile: Optional[int],
                   tile_overlap: float) -> np.ndarray:
    """Probabilities (H, W) or (D, H, W) float32 of one decoded sample of ``dataset``."""
    x = dataset.as_batch(image).to(device)
    return predict(model, x, amp, tile, tile_overlap)[0, 0].cpu().numpy()


def sample_metrics(prob: np.ndarray, label: np.ndarray, threshold: float,
                   spatial_dims: int) -> Dict[str, float]:
    """:func:`~satloss_gpu.metrics.segmentation_metrics` of one image or volume."""
    if spatial_dims == 2:  # the images' call, as it always was
        return segmentation_metrics(prob, label, threshold=threshold)
    return segmentation_metrics(prob, label, threshold=threshold, spatial_dims=spatial_dims)
