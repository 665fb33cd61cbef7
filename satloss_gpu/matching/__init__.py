"""Exact batched matching of persistence diagrams.

The public face of the subpackage: :func:`match_batch` (exact solvers: POT's network simplex,
the compiled CPU solver, the CUDA kernel), :func:`assignment_cost` (the differentiable total of
a given matching) and :class:`MatchResult`. The entropic solver is in
:mod:`satloss_gpu.matching.sinkhorn`.
"""
from ._api import MATCHING_SOLVERS, MatchResult, assignment_cost, match_batch

__all__ = ["MatchResult", "match_batch", "assignment_cost", "MATCHING_SOLVERS"]
