"""satloss-gpu: batched Spatial-Aware Topological Loss and cubical persistence on the GPU.

Public API
----------
cubical_persistence
    Persistence diagrams of a batch of 2D images with the critical pixel of every value.
PersistenceDiagrams
    The packed container it returns.
SATLoss, TopoLoss
    Batched topological segmentation losses (``torch.nn.Module``).
"""
from .diagrams import PersistenceDiagrams
from .persistence import cubical_persistence
from .losses import SATLoss, TopoLoss

__all__ = ["cubical_persistence", "PersistenceDiagrams", "SATLoss", "TopoLoss"]
__version__ = "0.1.0"
