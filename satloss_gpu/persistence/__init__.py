"""Cubical persistence of batches of 2D images and 3D volumes, with the critical pixel (voxel)
of every value.

The public face of the subpackage: :func:`cubical_persistence` validates, picks a backend
(:mod:`satloss_gpu.persistence.backends`: ``cpu``, ``cuda``, ``gudhi``) and returns a
:class:`PersistenceDiagrams` in the caller's array library. The NumPy model of the GPU pipeline
is :mod:`satloss_gpu.persistence.parallel_model`.
"""
from ._cubical import CONSTRUCTIONS, cubical_persistence
from ._diagrams import PersistenceDiagrams
from .backends import BACKEND_NAMES, PairIndices, PersistenceBackend, get_backend

__all__ = ["cubical_persistence", "PersistenceDiagrams", "CONSTRUCTIONS", "BACKEND_NAMES",
           "PairIndices", "PersistenceBackend", "get_backend"]
