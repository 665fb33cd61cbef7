"""Where the compiled kernels are cached: a read-only install compiles once, not per process.

Each test copies the package into a temporary folder laid out as a regular (non-editable)
install, ``satloss_gpu/kernels`` included, makes it read-only, and runs fresh Python
processes on it that compile one small kernel. The second process must load it from the cache
(Numba's dispatcher counts cache hits and misses), and nothing may be written into the
package folder.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import satloss_gpu
import satloss_gpu.kernels
from satloss_gpu._numba_cache import install_cache_locator

CHILD = textwrap.dedent("""
    import json, sys, warnings
    sys.path.insert(0, sys.argv[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import numpy as np
        import satloss_gpu
        from satloss_gpu.kernels.common.scalar import find_root
    assert satloss_gpu.__file__.startswith(sys.argv[1]), satloss_gpu.__file__
    root = find_root(np.array([1, 2, 2], dtype=np.int64), 0)
    stats = find_root.stats
    print(json.dumps({"root": int(root), "hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()),
                      "cache_path": find_root._cache._cache_path,
                      "warnings": [str(w.message) for w in caught
                                   if "satloss-gpu" in str(w.message)]}))
""")


def _install_copy(tmp_path: Path) -> Path:
    """A read-only copy of the package laid out as an installed one; returns its parent."""
    site = tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(satloss_gpu.__file__).parent, site / "satloss_gpu", ignore=ignore)
    kernels = site / "satloss_gpu" / "kernels"
    if not kernels.exists():  # an editable checkout: kernels/ lives beside the package
        shutil.copytree(Path(satloss_gpu.kernels.__file__).parent, kernels, ignore=ignore)
    for path in [site, *site.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return site


def _make_writable(site: Path) -> None:
    for path in [site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def installed(tmp_path):
    site = _install_copy(tmp_path)
    yield site
    _make_writable(site)


def _run(site: Path, env_changes: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NUMBA_CACHE_LOCATOR_CLASSES", "XDG_CACHE_HOME")}
    env.update(env_changes)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run([sys.executable, "-c", CHILD, str(site)], env=env, cwd=site,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cache_files(folder: Path) -> list:
    return sorted(p.name for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_read_only_install_caches_in_the_user_cache_folder(installed, tmp_path):
    cache_home = tmp_path / "xdg"
    env = {"XDG_CACHE_HOME": str(cache_home), "HOME": str(tmp_path / "home")}
    first = _run(installed, env)
    second = _run(installed, env)
    assert first["root"] == 2 == second["root"]
    assert first["misses"] == 1 and first["hits"] == 0
    # The second process compiles nothing: it loads the first one's code.
    assert second["misses"] == 0 and second["hits"] == 1
    assert Path(first["cache_path"]).is_relative_to(cache_home / "satloss-gpu")
    assert any(name.startswith("scalar.find_root") for name in _cache_files(cache_home))
    assert _cache_files(installed) == []
    assert first["warnings"] == [] == second["warnings"]


def test_numba_cache_dir_takes_precedence(installed, tmp_path):
    chosen = tmp_path / "chosen"
    env = {"NUMBA_CACHE_DIR": str(chosen), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    first = _run(installed, env)
    second = _run(installed, env)
    assert (first["misses"], second["misses"], second["hits"]) == (1, 0, 1)
    assert Path(first["cache_path"]).is_relative_to(chosen)
    assert _cache_files(chosen) != []
    assert not (tmp_path / "xdg").exists()


def test_unwritable_cache_folder_warns_and_still_runs(installed, tmp_path):
    # A regular file where the cache folder should be: no user (root included) can create it.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = _run(installed, {"XDG_CACHE_HOME": str(blocker)})
    assert result["root"] == 2
    assert len(result["warnings"]) == 1
    assert "NUMBA_CACHE_DIR" in result["warnings"][0]
    assert _cache_files(installed) == []


def test_install_cache_locator_is_idempotent():
    from numba.core import caching

    before = list(caching.CacheImpl._locator_classes)
    install_cache_locator()
    assert caching.CacheImpl._locator_classes == before
    # Numba's locator of NUMBA_CACHE_DIR stays first, the package's comes right after.
    assert before[0] is caching.UserProvidedCacheLocator
    assert before[1].__name__ == "PackageCacheLocator"
