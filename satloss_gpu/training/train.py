"""Training and testing of segmentation models with topological losses, images and volumes.

The work is split by idea: :mod:`~satloss_gpu.training.criterion` (the training loss),
:mod:`~satloss_gpu.training.inference` (prediction, sliding windows, validation metrics),
:mod:`~satloss_gpu.training.loop` (the one training loop of images and volumes: epochs,
warm-up, resume, checkpoints, metric rows, figures) and :mod:`~satloss_gpu.training.testing`.
This module gathers their public functions.

Everything goes to ``<exp_root>/<exp>/``::

    config.json        the settings of the run (``--config`` reruns it)
    train.log          the log (test.log in test mode)
    metrics.csv        one row per epoch: losses, learning rate, validation metrics, time
    best_dice.pth, best_acc.pth, last.pth, epoch_NNNN.pth   checkpoints
    figures/           training curves, validation overlays, persistence matchings
    test_<model>/      pred_bin/, pred_grey/, metrics.csv, summary.json, config_test.json,
                       figures/ (an earlier test's folder is replaced with --overwrite only)
"""
from __future__ import annotations

from .checkpoints import CheckpointError, load_checkpoint
from .config import LOSSES, Config
from .criterion import TERM_LOSSES, build_criterion, term_kwargs
from .inference import evaluate, predict
from .loop import run_result, train
from .testing import test

__all__ = ["Config", "LOSSES", "TERM_LOSSES", "train", "test", "evaluate", "predict",
           "build_criterion", "term_kwargs", "run_result", "load_checkpoint", "CheckpointError"]
