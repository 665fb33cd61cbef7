"""satloss-gpu: batched Spatial-Aware Topological Loss and cubical persistence on the GPU.

Public API
----------
cubical_persistence
    Persistence diagrams of a batch of 2D images with the critical pixel of every value.
PersistenceDiagrams
    The packed container it returns.
"""
from .diagrams import PersistenceDiagrams
from .persistence import cubical_persistence

__all__ = ["cubical_persistence", "PersistenceDiagrams"]
__version__ = "0.1.0"
