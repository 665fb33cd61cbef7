"""Keep the losses out of ``torch.compile``'d graphs.

Persistence and matching run Numba and CUDA kernels that TorchDynamo cannot trace, so the
loss is wrapped in ``torch.compiler.disable``: a compiled training step breaks its graph
around the loss (one graph break) and compiles the model around it. The wrapper is made at
the first call, because ``torch.compiler.disable`` imports ``torch._dynamo`` (1.5 to 2 s),
which ``import satloss_gpu`` should not pay; the first call may itself happen while Dynamo
traces, which Dynamo handles like a call of an already disabled function.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

__all__ = ["outside_compiled_graph"]

F = TypeVar("F", bound=Callable[..., Any])


def outside_compiled_graph(func: F) -> F:
    """``func`` run eagerly even inside ``torch.compile`` (``torch.compiler.disable``, lazily).

    The returned function has ``func``'s name, docstring and signature.
    """
    made: dict = {}

    @functools.wraps(func)
    def eager(*args: Any, **kwargs: Any) -> Any:
        disabled = made.get("func")
        if disabled is None:
            disabled = made["func"] = torch.compiler.disable(func)
        return disabled(*args, **kwargs)

    eager._outside_graph_cache = made  # type: ignore[attr-defined]  # lets tests start afresh
    return eager  # type: ignore[return-value]
