"""Topological segmentation losses.

The functional (:mod:`satloss_gpu.losses.functional`: :func:`sat_loss`, :func:`topo_loss`,
:func:`sat_matching`) does the work; the Modules (:class:`SATLoss`, :class:`TopoLoss`) store
settings and forward to it. :mod:`satloss_gpu.losses.costs` builds the cost matrices of a batch,
:mod:`satloss_gpu.losses.cldice` holds the soft clDice and Dice baselines;
:class:`TargetCache` keeps target diagrams per sample id (``keys=``), checked against the target.
"""
from ._cache import TargetCache
from ._options import LossOptions
from .functional import DiagramMatching, sat_loss, sat_matching, topo_loss
from .modules import SATLoss, TopoLoss

__all__ = ["SATLoss", "TopoLoss", "sat_loss", "topo_loss", "sat_matching", "DiagramMatching",
           "LossOptions", "TargetCache"]
