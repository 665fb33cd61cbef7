"""Smoke tests of the experiment scripts in bench/: they run end to end and write their outputs."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up there
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    experiment = _load("topology_experiment")
    out = tmp_path_factory.mktemp("topology")
    result = experiment.main(["--quick", "--out", str(out), "--threads", "2"])
    return experiment, out, result


def test_quick_writes_summary_json(quick_run):
    experiment, out, result = quick_run
    saved = json.loads((out / "summary.json").read_text())
    for key in ("date", "command", "machine", "plan", "dataset_sizes", "runs", "summary",
                "paired_vs_bce", "paired_variants", "sweep", "figure", "table_md",
                "variants_md", "wall_s"):
        assert key in saved, key
    plan = experiment.plan_for("quick")
    assert set(saved["dataset_sizes"]) == set(plan.datasets) == {"vessels", "retina"}
    assert experiment.plan_for("default").datasets == ("vessels", "roads", "retina")
    pairs = {(e["dataset"], e["loss"]) for e in saved["summary"]}
    assert pairs == {(d, loss) for d in plan.datasets for loss in experiment.LOSSES}
    for entry in saved["summary"]:
        assert entry["n_seeds"] == len(plan.seeds)
        for metric in experiment.METRICS:
            assert entry[f"{metric}_mean"] == entry[f"{metric}_mean"], metric  # not NaN
            assert entry[f"{metric}_std"] >= 0.0
        assert 0.0 <= entry["dice_mean"] <= 1.0 and entry["betti0_error_mean"] >= 0.0
    assert {e["loss"] for e in saved["paired_vs_bce"]} == {
        "bce+topo", "bce+sat", "bce+sat-noframe", "bce+sat-predtie", "bce+sat-noframe-predtie",
        "bce+cldice"}
    assert all(e["reference"] == "bce" for e in saved["paired_vs_bce"])
    assert {(e["reference"], e["loss"]) for e in saved["paired_variants"]} == set(
        experiment.VARIANT_PAIRS)
    assert all(e["n_pairs"] > 0 for e in saved["paired_variants"])
    assert sorted(r["tloss_w"] for r in saved["sweep"]) == sorted(plan.sweep_weights)
    assert all(r["loss"] == "bce+sat" for r in saved["sweep"])


def test_quick_arms_share_the_warm_up_and_the_total_epochs(quick_run):
    experiment, out, _ = quick_run
    plan = experiment.plan_for("quick")
    assert 0 < plan.warmup_epochs < plan.epochs and len(plan.seeds) >= 1
    assert len(experiment.plan_for("default").seeds) == 5
    for dataset in plan.datasets:
        warm = out / "exp" / dataset / f"warmup_s0" / "metrics.csv"
        with open(warm, newline="") as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(
                range(1, plan.warmup_epochs + 1))
        for loss in experiment.LOSSES:
            exp = experiment.exp_name(plan, dataset, loss, 0, plan.weights[loss])
            with open(out / "exp" / exp / "metrics.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            assert [int(r["epoch"]) for r in rows] == list(
                range(plan.warmup_epochs + 1, plan.epochs + 1)), (dataset, loss)
            config = json.loads((out / "exp" / exp / "config.json").read_text())
            assert config["checkpoint"].endswith(f"warmup_s0/last.pth")
            assert config["tloss_start"] == plan.warmup_epochs
            assert config["tloss_kwargs"] == experiment.ARMS[loss][1]
    assert experiment.ARMS["bce+sat-noframe"][1] == {"pad": False}
    assert experiment.ARMS["bce+sat-predtie"][1] == {"target_tiebreak": "prediction"}


def test_quick_test_images_are_larger_than_the_crops(quick_run):
    experiment, out, _ = quick_run
    from satloss_gpu.training.data import read_label

    plan = experiment.plan_for("quick")
    for dataset in plan.datasets:
        label = read_label(sorted((out / "data" / dataset / "test_labels").glob("*.png"))[0])
        assert min(label.shape) > plan.crop, dataset


def test_quick_writes_tables_and_csv(quick_run):
    experiment, out, result = quick_run
    table = (out / "table.md").read_text()
    for metric in experiment.METRICS:
        assert experiment.HEADERS[metric] in table
    for loss in experiment.LOSSES:
        assert f"| {loss} |" in table
    with open(out / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    plan = experiment.plan_for("quick")
    n_sweep = sum(w != plan.weights["bce+sat"] for w in plan.sweep_weights)
    assert len(runs) == len(plan.datasets) * len(plan.losses) * len(plan.seeds) + n_sweep
    assert {"dataset", "loss", "tloss_w", "seed", "train_s", "bce_last", "wextra_last",
            *experiment.METRICS} <= set(runs[0])
    with open(out / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(result["summary"])


def test_quick_writes_figure_in_out(quick_run):
    _, out, result = quick_run
    figure = Path(result["figure"])
    assert figure == out / "figures" / "topology_quality.png"
    assert _is_png(figure)


def test_training_cost_quick(tmp_path):
    cost = _load("training_cost")
    json_path, png_path = tmp_path / "cost.json", tmp_path / "cost.png"
    result = cost.main(["--quick", "--threads", "2", "--out", str(json_path), "--figure", str(png_path)])
    saved = json.loads(json_path.read_text())
    assert _is_png(png_path)
    keys = {f"{stage}/{name}" for stage in ("init", "pretrained") for name in cost.CRITERIA}
    assert set(saved["throughput"]) == keys
    for row in saved["throughput"].values():
        assert row["images_per_s"] > 0 and row["gpu_utilisation_mean"] is None
    assert [r["size"] for r in saved["scaling"]["size"]] == [32, 64]
    assert [r["batch"] for r in saved["scaling"]["batch"]] == [1, 2]
    assert result["device"] == "cpu"
