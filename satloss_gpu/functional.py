"""The functional form of the losses, kept importable here; see :mod:`satloss_gpu.losses.functional`."""
from .losses.functional import DiagramMatching, sat_loss, sat_matching, topo_loss

__all__ = ["sat_loss", "topo_loss", "sat_matching", "DiagramMatching"]
