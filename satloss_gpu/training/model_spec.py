"""Models given on the command line as ``package.module:ClassName`` with JSON keyword arguments.

``--model mypackage.nets:MyUNet --model_kwargs '{"in_channels": 3, "depth": 4}'`` imports
``mypackage.nets`` (from the installed packages or the current folder), looks up ``MyUNet``
(a class or a function) and calls it with the keyword arguments. The result must be a
``torch.nn.Module`` mapping images (B, C_in, H, W) to logits (B, K, H, W), one map per class.
"""
from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import torch

__all__ = ["is_model_spec", "parse_model_spec", "parse_model_kwargs", "model_from_spec"]

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_SPEC = re.compile(rf"^({_IDENTIFIER}(?:\.{_IDENTIFIER})*):({_IDENTIFIER}(?:\.{_IDENTIFIER})*)$")


def is_model_spec(text: str) -> bool:
    """Whether ``text`` names a model by ``module:attribute`` (it holds a colon)."""
    return isinstance(text, str) and ":" in text


def parse_model_spec(text: str) -> tuple[str, str]:
    """(module path, attribute path) of ``package.module:ClassName``.

    Raises
    ------
    ValueError
        When ``text`` is not of that form; the message names ``model``.

    Examples
    --------
    >>> parse_model_spec("torchvision.models.segmentation:fcn_resnet50")
    ('torchvision.models.segmentation', 'fcn_resnet50')
    """
    match = _SPEC.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"`model` must be a built-in name or 'package.module:ClassName'; "
                         f"got {text!r}")
    return match.group(1), match.group(2)


def parse_model_kwargs(text: Optional[str]) -> Dict[str, Any]:
    """Keyword arguments of the model from a JSON object (``None`` or "" give ``{}``)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"`model_kwargs` must be a JSON object; cannot parse {text!r}: "
                         f"{exc.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"`model_kwargs` must be a JSON object such as '{{\"name\": 1}}' "
                         f"(keyword arguments by name); got {type(value).__name__} {text!r}")
    return value


def _import_module(module_path: str, spec: str):
    """Import ``module_path``, also from the current folder (as ``python -m`` would)."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        raise ValueError(f"`model` {spec!r}: cannot import module {module_path!r} "
                         f"({exc})") from exc
    finally:
        if added:
            sys.path.remove(cwd)


def model_from_spec(spec: str, kwargs: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
    """Build the model named by ``package.module:ClassName`` with keyword arguments.

    Parameters
    ----------
    spec : str
        ``module.path:Name``, ``Name`` a class or a function (``Outer.Inner`` allowed).
    kwargs : dict, optional
        Keyword arguments of the call.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        Malformed ``spec``, a module that cannot be imported, a missing attribute, keyword
        arguments the constructor rejects, or a result that is not an ``nn.Module``.
    """
    module_path, attribute = parse_model_spec(spec)
    obj: Any = _import_module(module_path, spec)
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"`model` {spec!r}: module {module_path!r} has no attribute "
                             f"{attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"`model` {spec!r} is a {type(obj).__name__}, not a class or function")
    try:
        model = obj(**(kwargs or {}))
    except TypeError as exc:
        raise ValueError(f"`model_kwargs` {kwargs!r} do not fit {spec}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"`model` {spec!r} must build a torch.nn.Module; got "
                         f"{type(model).__name__}")
    return model
