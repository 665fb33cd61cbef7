"""``bench/persistence3d.py --quick`` runs end to end, so the 3D benchmark cannot rot.

The script runs in a subprocess on two tiny volumes; every method that is installed must run
and give the same diagrams as satloss-gpu's CPU backend (the script's own check against
cripser, gudhi and Betti-Matching-3D), and the memory of two methods is measured in fresh
processes.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "persistence3d.py"
ALWAYS = ("ours_T", "ours_V", "ours_T_threads", "ours_V_threads", "cripser_T", "cripser_V",
          "gudhi_T", "gudhi_V")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench3d") / "persistence3d.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--sizes", "9", "--memory-methods",
         "ours_T,gudhi_T", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_every_installed_method_ran(quick_run):
    _, record = quick_run
    assert [r["volume"] for r in record["results"]] == ["noise 9^3", "smooth 9^3"]
    for entry in record["results"]:
        rows = entry["methods"]
        for key in ALWAYS:
            assert "cpu_median_s" in rows[key], (key, rows[key])
            assert rows[key]["calls"] == 1
        if importlib.util.find_spec("topolosses") is None:
            assert "topolosses" in rows["bm3d_V"]["error"]
        else:
            assert "cpu_median_s" in rows["bm3d_V"], rows["bm3d_V"]


def test_diagrams_agree_with_every_peer(quick_run):
    stdout, record = quick_run
    for entry in record["results"]:
        checked = {k: v for k, v in entry["agreement"].items() if v["agree"] is not None}
        # every method but the two references is compared with satloss-gpu's result
        assert set(checked) == set(entry["agreement"]) - {"ours_T", "ours_V"}
        for key, row in checked.items():
            assert row["reference"] == f"ours_{key.split('_')[1]}", key
            assert row["agree"] is True, (entry["volume"], key, row)
        # noise has pairs in every dimension, so the comparison is not vacuous
        if entry["kind"] == "noise":
            assert min(entry["agreement"]["ours_T"]["counts"]) > 0
    assert "DIFFER" not in stdout and " agree " in stdout


def test_memory_and_stages_reported(quick_run):
    stdout, record = quick_run
    for entry in record["results"]:
        assert set(entry["memory"]) == {"ours_T", "gudhi_T"}
        for key, memory in entry["memory"].items():
            assert memory["added_bytes"] >= 0 and memory["cpu_seconds"] >= 0, (key, memory)
    stages = record["stages"]
    assert isinstance(stages, list) and len(stages) == 4, stages
    assert all(row["stages"]["total"] > 0 for row in stages)
    assert "B/voxel" in stdout and "by stage" in stdout
