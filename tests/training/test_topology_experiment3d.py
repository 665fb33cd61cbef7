"""Smoke test of bench/topology_experiment3d.py: the 3D experiment runs end to end (--quick)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from satloss_gpu.metrics import segmentation_metrics
from satloss_gpu.training.synthetic3d import load_volume_folder

from test_topology_experiment import _is_png, _load


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    experiment = _load("topology_experiment3d")
    out = tmp_path_factory.mktemp("topology3d")
    result = experiment.main(["--quick", "--out", str(out), "--threads", "2"])
    return experiment, out, result


def test_quick_3d_writes_every_arm_with_volume_metrics(quick_run):
    experiment, out, result = quick_run
    plan = experiment.plan_for("quick")
    saved = json.loads((out / "summary.json").read_text())
    assert {e["loss"] for e in saved["summary"]} == set(experiment.LOSSES)
    for entry in saved["summary"]:
        for metric in experiment.METRICS:
            assert not math.isnan(entry[f"{metric}_mean"]), metric
    assert {e["loss"] for e in saved["paired_vs_bce"]} == set(experiment.LOSSES) - {"bce"}
    assert {(e["reference"], e["loss"]) for e in saved["paired_variants"]} == set(
        experiment.VARIANT_PAIRS)
    assert len(experiment.plan_for("default").seeds) == 3
    with open(out / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == len(plan.losses) * len(plan.seeds)
    assert _is_png(Path(result["figure"]))
    assert "beta2 err" in (out / "table.md").read_text()


def test_quick_3d_arms_continue_the_warm_up_and_test_whole_larger_volumes(quick_run):
    experiment, out, _ = quick_run
    plan = experiment.plan_for("quick")
    test = load_volume_folder(out / "data" / experiment.DATASET / "test")
    assert all(min(label.shape) > plan.patch for label in test.labels)
    for loss in experiment.LOSSES:
        exp = experiment.shared.exp_name(plan, experiment.DATASET, loss, 0, plan.weights[loss])
        config = json.loads((out / "exp" / exp / "config.json").read_text())
        assert config["spatial_dims"] == 3 and config["tloss_start"] == plan.warmup_epochs
        assert config["checkpoint"].endswith("warmup_s0/last.pth")
        assert config["tloss_kwargs"] == experiment.ARMS[loss][1]
        with open(out / "exp" / exp / "test_last" / "metrics.csv", newline="") as f:
            rows = {r["name"]: r for r in csv.DictReader(f)}
        name = test.names[0]
        pred = np.load(out / "exp" / exp / "test_last" / "pred_bin" / f"{name}.npy")
        assert pred.shape == test.labels[0].shape
        expected = segmentation_metrics(pred, test.labels[0], spatial_dims=3)
        assert float(rows[name]["betti2_error"]) == pytest.approx(expected["betti2_error"])
        assert float(rows[name]["dice"]) == pytest.approx(expected["dice"], abs=1e-5)
