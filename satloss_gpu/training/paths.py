"""Output folders and files: created, or refused with one line that names the option.

A path given for outputs (``--exp_root``, ``--exp``, ``--dataroot`` of ``make-data``,
``persistence --out``, the figure and test folders of a run) may run through a file, or
name a folder where a file is to be written. :func:`output_dir` and :func:`output_file`
turn that into an :class:`OutputPathError` (a ``ValueError``) naming the option and the
file in the way, instead of an ``OSError`` from deep inside.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["OutputPathError", "output_dir", "output_file"]


class OutputPathError(ValueError):
    """An output path that cannot be used; the message names the option and the path."""


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists, if it is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def output_dir(path: str | Path, option: str) -> Path:
    """Create the folder ``path`` (and its parents) if missing, and return it.

    Parameters
    ----------
    path : str or Path
    option : str
        What the user set to choose ``path`` (e.g. ``"--exp_root/--exp"``), for the message.

    Returns
    -------
    Path

    Raises
    ------
    OutputPathError
        When ``path`` or one of its parents is a file, or the folder cannot be created.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> output_dir(root / "a" / "b", "--out").is_dir()
    True
    >>> (root / "f").write_text("x")
    1
    >>> try:
    ...     output_dir(root / "f" / "b", "--out")
    ... except OutputPathError as exc:
    ...     print(str(exc).replace(str(root), "ROOT"))
    --out: cannot create the folder ROOT/f/b: ROOT/f is a file, not a folder
    """
    path = Path(path)
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise OutputPathError(f"{option}: cannot create the folder {path}: {blocker} is a file, "
                              f"not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{option}: cannot create the folder {path}: "
                              f"{exc.strerror or exc}") from None
    return path


def output_file(path: str | Path, option: str) -> Path:
    """Check that a file can be written at ``path`` (creating its folder) and return it.

    Raises
    ------
    OutputPathError
        When ``path`` is an existing folder, or its folder cannot be created
        (see :func:`output_dir`).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option}: {path} is a folder; expected the path of a file")
    output_dir(path.parent, option)
    return path
