"""Where the compiled kernels of satloss-gpu are cached: a user cache folder, never the install.

Numba writes the machine code of ``cache=True`` functions next to their source file
(``__pycache__``) when it can. An install is often read-only (a system or shared
environment, a container image), and writing into ``site-packages`` leaves files that no
package manager knows about. So the package's own functions are cached, in this order:

1. ``NUMBA_CACHE_DIR`` when set (Numba's own rule, for every function);
2. otherwise the user cache folder ``satloss-gpu`` (``$XDG_CACHE_HOME/satloss-gpu`` or
   ``~/.cache/satloss-gpu`` on Linux, the platform's cache folder elsewhere);
3. when that folder cannot be written (no home directory), a new private temporary folder,
   so that the package still imports and runs (compiling once per process) instead of
   failing in Numba with "cannot cache function".

Inside the folder, every source folder has its own sub-folder (Numba names it by a hash of
the folder's path) and every entry is checked against a hash of its source file, so two
installs or versions never load each other's code. Functions of other packages keep
Numba's usual locations. :func:`install_cache_locator` (run when :mod:`satloss_gpu` is
imported, before any kernel module) puts the locator in place; it must run before the
kernels are decorated, since Numba picks the location then.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Optional

__all__ = ["PACKAGE", "install_cache_locator", "user_cache_root"]

#: Top-level package whose functions this locator caches.
PACKAGE = "satloss_gpu"
_APP_NAME = "satloss-gpu"
_FALLBACK_ROOT: Optional[str] = None


def user_cache_root() -> str:
    """The user cache folder of the package (it may not exist yet).

    Returns
    -------
    str
        ``$XDG_CACHE_HOME/satloss-gpu`` (default ``~/.cache/satloss-gpu``) on Linux; the
        platform's user cache folder on macOS and Windows.
    """
    from numba.misc.appdirs import AppDirs

    return AppDirs(appname=_APP_NAME, appauthor=False).user_cache_dir


def _fallback_root() -> str:
    """A private temporary folder (created once per process) for when no cache folder works."""
    global _FALLBACK_ROOT
    if _FALLBACK_ROOT is None:
        _FALLBACK_ROOT = tempfile.mkdtemp(prefix=f"{_APP_NAME}-numba-")
        warnings.warn(
            f"satloss-gpu: the cache folder {user_cache_root()!r} cannot be written, so the "
            f"compiled kernels are kept in {_FALLBACK_ROOT!r} for this process only and "
            "compiled again in the next one; set NUMBA_CACHE_DIR to a writable folder to "
            "keep them", RuntimeWarning, stacklevel=2)
    return _FALLBACK_ROOT


def _is_package_function(py_func) -> bool:
    """Whether ``py_func`` belongs to :data:`PACKAGE`."""
    module = getattr(py_func, "__module__", None) or ""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _locator_class():
    """The Numba cache locator of the package's functions (a class, built on first use)."""
    from numba.core import caching

    class PackageCacheLocator(caching.UserWideCacheLocator):
        """Cache of a function of :data:`PACKAGE` in :func:`user_cache_root`."""

        def __init__(self, py_func, py_file, root):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(root, self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _is_package_function(py_func) or not os.path.exists(py_file):
                return None
            for root in (user_cache_root, _fallback_root):
                locator = cls(py_func, py_file, root())
                try:
                    locator.ensure_cache_path()
                except OSError:
                    continue
                return locator
            return None

    return PackageCacheLocator


_LOCATOR = None


def install_cache_locator() -> None:
    """Cache the package's compiled functions in the user cache folder (see the module).

    Idempotent. ``NUMBA_CACHE_DIR`` keeps precedence (Numba's locator for it stays first),
    and so does ``NUMBA_CACHE_LOCATOR_CLASSES`` (Numba then ignores the default list).
    """
    global _LOCATOR
    from numba.core import caching

    if _LOCATOR is None:
        _LOCATOR = _locator_class()
    classes = caching.CacheImpl._locator_classes
    if _LOCATOR in classes:
        return
    after = classes.index(caching.UserProvidedCacheLocator) + 1 \
        if caching.UserProvidedCacheLocator in classes else 0
    classes.insert(after, _LOCATOR)
