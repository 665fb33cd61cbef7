"""``bench/gpu_check.py --simulate`` runs end to end, so the one-call GPU check cannot rot.

The script runs in a subprocess under the Numba CUDA simulator on tiny inputs; every
correctness section must pass, no section may raise, and the timing code must have run.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def simulated_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("OUT", None)
    done = subprocess.run(
        # a generous budget: the test is about the code path, so that a slow or busy
        # machine runs every section too (the default simulated budget is 170 s)
        [sys.executable, str(SCRIPT), "--simulate", "--budget", "400", "--out", str(out),
         "--wheels", str(out / "no-wheels")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    report = json.loads((out / "gpu_check.json").read_text())
    return done, report, out


def test_simulated_check_passes(simulated_check):
    done, report, out = simulated_check
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert report["simulate"] is True
    assert (out / "gpu_check.log").stat().st_size > 0
    # the summary table is printed last
    assert done.stdout.splitlines()[-1].startswith("total ")
    assert "section" in done.stdout and "timing_persistence" in done.stdout


def test_every_correctness_section_passed(simulated_check):
    _, report, _ = simulated_check
    sections = report["sections"]
    for name in ("environment", "persistence", "matching", "losses"):
        record = sections[name]
        assert record["status"] == "passed", (name, record)
        assert record["checks"], name
        assert all(check["ok"] for check in record["checks"]), (name, record["checks"])
    # the persistence checks cover both constructions, both filtrations and both dtypes
    labels = " ".join(check["name"] for check in sections["persistence"]["checks"])
    for word in (" T ", " V ", "sub", "super", "float32", "float64", "sequential",
                 "bit-identical"):
        assert word in labels, word


def test_no_section_raised_and_timings_ran(simulated_check):
    _, report, _ = simulated_check
    sections = report["sections"]
    assert not [name for name, r in sections.items() if r["status"] in ("error", "failed")]
    for name in ("timing_persistence", "timing_matching", "timing_loss"):
        assert sections[name]["status"] == "simulated", (name, sections[name])
    timed = sections["timing_persistence"]["numbers"]["persistence"]
    assert set(timed) == {"noise", "smooth", "likelihood", "binary"}
    assert all(row["halving"]["median_ms"] > 0 for row in timed.values())
    assert sections["timing_loss"]["numbers"]["loss_share_of_step"] > 0
