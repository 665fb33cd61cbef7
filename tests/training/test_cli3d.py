"""``satloss make-data/train/test --spatial_dims 3`` end to end on tiny volumes, and bad input."""
import csv
import json

import numpy as np
import pytest
import torch

from satloss_gpu.metrics import METRIC_NAMES_3D, segmentation_metrics
from satloss_gpu.training.cli import main
from satloss_gpu.training.synthetic3d import load_volume_folder


def _run_args(root, exp, *extra):
    return ["train", "--spatial_dims", "3", "--dataroot", str(root / "data"), "--dataset", "v",
            "--exp_root", str(root / "exp"), "--exp", exp, "--epochs", "2", "--crop", "16",
            "--batch_size", "2", "--no-progress", "--no-make_data", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny generated volumes, a BCE warm-up of one epoch, then both arms (SATLoss and BCE)."""
    root = tmp_path_factory.mktemp("cli3d")
    assert main(["make-data", "--spatial_dims", "3", "--dataroot", str(root / "data"), "--name",
                 "v", "--n_train", "3", "--n_val", "1", "--n_test", "2", "--size", "20"]) == 0
    assert main(_run_args(root, "run")) == 0
    return root


def test_make_data_writes_the_volume_layout(trained):
    folder = load_volume_folder(trained / "data" / "v" / "train")
    assert folder.names == ["0000", "0001", "0002"]
    assert folder.images[0].shape == (1, 20, 20, 20) and folder.labels[0].dtype == np.uint8
    info = json.loads((trained / "data" / "v" / "dataset.json").read_text())
    assert info["spatial_dims"] == 3 and info["n_test"] == 2


def test_train_writes_both_arms_with_volume_metrics(trained):
    run = trained / "exp" / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["spatial_dims"] == 3 and config["model"] == "UNet3D_small"
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {f"val_{k}" for k in METRIC_NAMES_3D} <= set(rows[0])
    assert float(rows[0]["tloss_w"]) == 0.0 and float(rows[1]["tloss_w"]) > 0.0
    assert float(rows[1]["extra"]) > 0.0                         # SATLoss on volumes ran
    comparison = json.loads((run / "baseline.json").read_text())
    assert set(comparison) == {"bce+sat", "bce"} and "betti2_error" in comparison["bce"]
    for name in ("curves.png", "val_0000.png", "matching_0000.png", "baseline_betti.png"):
        assert (run / "figures" / name).is_file(), name
    state = torch.load(run / "last.pth", weights_only=False)
    assert state["config"]["spatial_dims"] == 3


def test_test_writes_volume_predictions_and_metrics_that_recompute(trained):
    args = ["test", "--spatial_dims", "3", "--dataroot", str(trained / "data"), "--dataset",
            "v", "--exp_root", str(trained / "exp"), "--exp", "run", "--no-progress",
            "--test_model", "last"]
    assert main(args) == 0
    out = trained / "exp" / "run" / "test_last"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 2 and "betti2_error" in summary
    with open(out / "metrics.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    labels = load_volume_folder(trained / "data" / "v" / "test").labels
    for k, name in enumerate(("0000", "0001")):
        binary = np.load(out / "pred_bin" / f"{name}.npy")
        grey = np.load(out / "pred_grey" / f"{name}.npy")
        assert binary.shape == grey.shape == (20, 20, 20) and binary.dtype == np.uint8
        expected = segmentation_metrics(binary, labels[k], spatial_dims=3)
        for key in ("dice", "betti0_error", "betti1_error", "betti2_error", "betti_matching_error"):
            assert float(rows[name][key]) == pytest.approx(expected[key], abs=1e-5), key
    assert (out / "figures" / "0000.png").is_file()
    # a second test is refused and nothing is written over
    before = (out / "summary.json").read_text()
    assert main(args) == 2
    assert (out / "summary.json").read_text() == before


def _error(capsys):
    return capsys.readouterr().err.strip()


def test_mismatched_models_data_and_checkpoints_are_refused(trained, capsys):
    assert main(_run_args(trained, "m2d", "--model", "UNet_small")) == 2
    assert "--model UNet_small does not fit volumes" in _error(capsys)
    assert not (trained / "exp" / "m2d").exists()
    assert main(["test", "--spatial_dims", "2", "--dataroot", str(trained / "data"),
                 "--dataset", "v", "--exp_root", str(trained / "exp"), "--exp", "run",
                 "--no-progress", "--test_model", "last", "--split", "val"]) == 2
    assert "holds a volume split" in _error(capsys)


def test_bad_volume_input_ends_with_one_line_and_writes_nothing_over(trained, tmp_path, capsys):
    run = trained / "exp" / "run"
    config = (run / "config.json").read_text()
    # a 2D dataset given to a volume run
    for folder in ("train", "train_labels"):
        (tmp_path / "data" / "flat" / folder).mkdir(parents=True)
        np.save(tmp_path / "data" / "flat" / folder / "a.npy", np.zeros((8, 8)))
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "data" / "flat" / "train" / "a.png", np.zeros((8, 8), np.uint8))
    args = _run_args(tmp_path, "flat", "--dataset", "flat")
    assert main(args) == 2
    assert "split of 2D images" in _error(capsys)
    # volumes smaller than the patch, mixed channels: refused before the first epoch
    assert main(_run_args(trained, "run", "--crop", "24", "--overwrite")) == 2
    assert "smaller than the patch --crop 24" in _error(capsys)
    assert (run / "config.json").read_text() == config
    mixed = tmp_path / "data" / "mixed"
    for split, channels in (("train", 1), ("val", 2)):
        for kind in ("images", "labels"):
            (mixed / split / kind).mkdir(parents=True)
        for k in range(2):
            shape = (channels, 16, 16, 16) if channels > 1 else (16, 16, 16)
            np.save(mixed / split / "images" / f"{k}.npy", np.random.rand(*shape).astype(np.float32))
            np.save(mixed / split / "labels" / f"{k}.npy", np.ones((16, 16, 16), np.uint8))
    assert main(_run_args(tmp_path, "mixed", "--dataset", "mixed")) == 2
    assert "channel(s)" in _error(capsys)
    assert not (tmp_path / "exp" / "mixed" / "last.pth").exists()


def test_losses_without_a_volume_version_are_refused_before_anything_runs(trained, capsys):
    for loss in ("bce+cldice", "dice"):
        assert main(_run_args(trained, f"loss_{loss}", "--loss", loss)) == 2
        assert f"--loss {loss} is for images only" in _error(capsys)
        assert not (trained / "exp" / f"loss_{loss}").exists()


def test_a_missing_volume_dataset_names_the_volume_layout(tmp_path, capsys):
    args = ["train", "--spatial_dims", "3", "--dataroot", str(tmp_path / "d"), "--dataset",
            "nope", "--exp_root", str(tmp_path / "e"), "--no-progress"]
    assert main(args) == 2
    error = _error(capsys)
    assert "volume dataset folder not found" in error and "nope/train/images" in error
    assert not (tmp_path / "d").exists()
