"""Reliability of runs: refused mismatches, kept history, run folders, checkpoints, splits."""
import csv
import shutil

import pytest
import torch

from satloss_gpu.training.cli import build_parser, main
from satloss_gpu.training.config import Config
from satloss_gpu.training.synthetic import make_dataset
from satloss_gpu.training.train import build_criterion, load_checkpoint, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", "mixed", 4, 1, 1, (16, 16), seed=0)
    return root


def _args(data, exp_root, *extra):
    return ["train", "--dataroot", str(data), "--dataset", "tiny", "--exp_root", str(exp_root),
            "--exp", "run", "--batch_size", "2", "--loss", "bce", "--no-progress",
            "--no-figures", "--crop", "none", "--no-make_data", "--device", "cpu", *extra]


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("satloss: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def _epochs(path):
    with open(path, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_start_epoch_disagreeing_with_the_checkpoint_is_refused(data, tmp_path, capsys):
    assert main(_args(data, tmp_path, "--epochs", "2")) == 0
    before = (tmp_path / "run" / "metrics.csv").read_text()
    capsys.readouterr()
    assert main(_args(data, tmp_path, "--epochs", "4", "--start_epoch", "1")) == 2
    _one_error_line(capsys, "--start_epoch 1", "epoch 2")
    assert (tmp_path / "run" / "metrics.csv").read_text() == before
    assert main(_args(data, tmp_path, "--epochs", "3", "--start_epoch", "2")) == 0
    assert _epochs(tmp_path / "run" / "metrics.csv") == [1, 2, 3]


def test_resuming_from_an_older_checkpoint_keeps_the_logged_history(data, tmp_path):
    assert main(_args(data, tmp_path, "--epochs", "1")) == 0
    shutil.copy(tmp_path / "run" / "last.pth", tmp_path / "epoch1.pth")
    assert main(_args(data, tmp_path, "--epochs", "2", "--start_epoch", "1")) == 0
    assert main(_args(data, tmp_path, "--epochs", "3", "--checkpoint",
                      str(tmp_path / "epoch1.pth"))) == 0
    assert _epochs(tmp_path / "run" / "metrics.csv") == [1, 2, 3]
    assert _epochs(tmp_path / "run" / "metrics_until_epoch_0002.csv") == [1, 2]


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "npu"])
def test_unknown_device_is_one_line_and_status_2(data, tmp_path, device, capsys):
    assert main(_args(data, tmp_path, "--device", device)) == 2
    _one_error_line(capsys, "`device` must be", repr(device))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="device"):
        Config(device=device)


def test_unavailable_device_is_one_line_and_status_2(data, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available")
    assert main(_args(data, tmp_path, "--device", "cuda")) == 2
    _one_error_line(capsys, "cuda", "no CUDA GPU")


def test_negative_tloss_w_is_rejected(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_args(data, tmp_path, "--tloss_w", "-0.1"))
    assert exc.value.code == 2
    assert "--tloss_w" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tloss_w"):
        build_criterion("bce+sat", -1.0)
    with pytest.raises(ValueError, match="tloss_w"):
        Config(tloss_w=-1.0)


def test_model_is_checked_against_the_checkpoint_in_test_mode(data, tmp_path, capsys):
    assert main(_args(data, tmp_path, "--epochs", "1", "--model", "UNet_small")) == 0
    test_args = ["test", "--dataroot", str(data), "--dataset", "tiny", "--exp_root",
                 str(tmp_path), "--exp", "run", "--no-progress", "--no-figures",
                 "--test_model", "last"]
    capsys.readouterr()
    assert main(test_args + ["--model", "UNet"]) == 2
    _one_error_line(capsys, "UNet_small", "--model UNet")
    assert main(test_args) == 0
    assert main(test_args + ["--model", "UNet_small", "--overwrite"]) == 0


def test_a_second_run_into_a_run_folder_is_refused_unless_asked(data, tmp_path, capsys):
    assert main(_args(data, tmp_path, "--epochs", "1")) == 0
    before = (tmp_path / "run" / "last.pth").read_bytes()
    capsys.readouterr()
    assert main(_args(data, tmp_path, "--epochs", "1")) == 2
    _one_error_line(capsys, "already holds a run", "--overwrite")
    assert (tmp_path / "run" / "last.pth").read_bytes() == before
    assert main(_args(data, tmp_path, "--epochs", "1", "--overwrite")) == 0
    assert _epochs(tmp_path / "run" / "metrics.csv") == [1]
    assert _epochs(tmp_path / "run" / "metrics_until_epoch_0001.csv") == [1]


def test_only_the_last_checkpoint_holds_the_optimizer(data, tmp_path):
    assert main(_args(data, tmp_path, "--epochs", "1", "--save_every", "1")) == 0
    last = load_checkpoint(tmp_path / "run" / "last.pth")
    assert {"optimizer", "scheduler", "scaler"} <= set(last)
    for name in ("best_dice", "best_acc", "epoch_0001"):
        state = load_checkpoint(tmp_path / "run" / f"{name}.pth")
        assert "optimizer" not in state and "scheduler" not in state, name
        assert state["epoch"] == 1 and state["model_name"] == last["model_name"]
        for key, value in state["model"].items():
            assert torch.equal(value, last["model"][key]), key


def test_weights_only_checkpoint_continues_with_the_schedule_advanced(data, tmp_path):
    assert main(_args(data, tmp_path, "--epochs", "2", "--lr_decay_epoch", "1",
                      "--lr_decay_rate", "0.5")) == 0
    assert main(_args(data, tmp_path, "--exp", "next", "--epochs", "3", "--lr_decay_epoch",
                      "1", "--lr_decay_rate", "0.5", "--checkpoint",
                      str(tmp_path / "run" / "best_dice.pth"))) == 0
    with open(tmp_path / "next" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    done = load_checkpoint(tmp_path / "run" / "best_dice.pth")["epoch"]
    assert [int(r["epoch"]) for r in rows] == list(range(done + 1, 4))
    assert float(rows[0]["lr"]) == pytest.approx(3e-3 * 0.5 ** done)


def test_epochs_is_an_alias_of_epoch():
    assert build_parser().parse_args(["train", "--epochs", "7"]).epoch == 7
    assert build_parser().parse_args(["train", "--epoch", "7"]).epoch == 7


def test_validation_is_held_out_of_training_without_a_val_folder(tmp_path):
    make_dataset(tmp_path, "noval", "mixed", 8, 0, 1, (16, 16), seed=0)
    shutil.rmtree(tmp_path / "noval" / "val", ignore_errors=True)
    shutil.rmtree(tmp_path / "noval" / "val_labels", ignore_errors=True)
    cfg = Config(dataset="noval", dataroot=str(tmp_path), exp_root=str(tmp_path / "exp"),
                 exp="run", model="UNet_small", epoch=1, batch_size=4, loss="bce",
                 device="cpu", progress=False, figures=False, val_fraction=0.25)
    train(cfg)
    log = (tmp_path / "exp" / "run" / "train.log").read_text()
    assert "6 train / 2 val images" in log


@pytest.mark.parametrize("kwargs,fragments", [
    ('{"bogus": 1}', ("--tloss_kwargs", "bogus")),
    ('{"reduction": "none"}', ("--tloss_kwargs", "`reduction`", "mean")),
    ('{"softmax": true}', ("--tloss_kwargs", "`softmax`")),
])
def test_term_options_are_checked_before_the_warm_up(data, tmp_path, capsys, kwargs, fragments):
    """A default run (warm-up, then the term) refuses them before anything is trained."""
    args = _args(data, tmp_path, "--epochs", "2", "--loss", "bce+sat", "--baseline",
                 "--tloss_kwargs", kwargs)
    assert main(args) == 2
    _one_error_line(capsys, *fragments)
    assert not (tmp_path / "run").exists()
    assert main(_args(data, tmp_path, "--epochs", "2", "--loss", "bce+sat", "--no-baseline",
                      "--tloss_start", "0", "--tloss_kwargs", kwargs)) == 2
    assert not (tmp_path / "run").exists()


def test_term_options_refused_only_when_called_stop_before_the_warm_up(data, tmp_path, capsys):
    """``channel_weights`` for two channels pass the term's construction; the trainer's
    model has one logit map, which the term refuses only when called: that call comes
    before the first epoch (not after the warm-up, as it did)."""
    args = _args(data, tmp_path, "--epochs", "2", "--loss", "bce+sat", "--baseline",
                 "--tloss_kwargs", '{"channel_weights": [1, 2]}')
    assert main(args) == 2
    _one_error_line(capsys, "--tloss_kwargs", "channel_weights", "one weight per channel")
    assert not list((tmp_path / "run").rglob("*.pth"))
    assert not (tmp_path / "run" / "metrics.csv").exists()


BAD_MODELS = '''
import torch


class NeedsMask(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x, mask):
        return self.conv(x) * mask


class OneChannel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.conv(x)


class Frozen(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1).requires_grad_(False)

    def forward(self, x):
        return self.conv(x)


class NaNOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return self.conv(x) * float("nan")
'''


@pytest.mark.parametrize("name,fragment", [("NeedsMask", "mask"), ("OneChannel", "channels")])
def test_a_model_that_cannot_be_called_on_the_images_is_named_at_start(data, tmp_path, capsys,
                                                                     monkeypatch, name, fragment):
    (tmp_path / "bad_models_reliability.py").write_text(BAD_MODELS)
    monkeypatch.chdir(tmp_path)
    spec = f"bad_models_reliability:{name}"
    assert main(_args(data, tmp_path, "--epochs", "1", "--model", spec)) == 2
    _one_error_line(capsys, f"--model {spec}", "(B, C, H, W)", fragment)
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("loss", ["bce", "bce+sat"])
def test_a_diverged_training_says_so(data, tmp_path, capsys, monkeypatch, loss):
    """NaN logits stopped the run with "`pred` must be finite" from a loss term or a
    metric, naming an argument the user never passed."""
    (tmp_path / "bad_models_reliability.py").write_text(BAD_MODELS)
    monkeypatch.chdir(tmp_path)
    spec = "bad_models_reliability:NaNOut"
    assert main(_args(data, tmp_path, "--epochs", "2", "--model", spec, "--loss", loss,
                      "--tloss_start", "0", "--no-baseline")) == 2
    _one_error_line(capsys, "training diverged at epoch 1, batch 1", f"--model {spec}", "--lr")


def test_a_model_with_nothing_to_train_is_named(data, tmp_path, capsys, monkeypatch):
    """It failed with torch's "optimizer got an empty parameter list" (no option named)."""
    (tmp_path / "bad_models_reliability.py").write_text(BAD_MODELS)
    monkeypatch.chdir(tmp_path)
    assert main(_args(data, tmp_path, "--epochs", "1", "--model",
                      "bad_models_reliability:Frozen")) == 2
    _one_error_line(capsys, "--model bad_models_reliability:Frozen", "no trainable parameters")


def test_a_checkpoint_that_does_not_fit_names_every_mismatch(tmp_path):
    from satloss_gpu.training.checkpoints import CheckpointError, load_weights
    from satloss_gpu.training.models import UNet, UNet_small

    state = {"model": UNet(widths=(8, 16, 32, 64)).state_dict()}
    state["model"]["extra.weight"] = torch.zeros(1)
    del state["model"][next(iter(state["model"]))]
    with pytest.raises(CheckpointError) as exc:
        load_weights(UNet_small(), state, tmp_path / "x.pth", "UNet_small")
    message = str(exc.value)
    assert len(message.splitlines()) == 1
    for fragment in ("x.pth", "1 missing key(s)", "1 unexpected key(s): extra.weight",
                     "shape(s) differ", "instead of"):
        assert fragment in message, message


def test_bce_runs_log_a_zero_term_weight(data, tmp_path):
    assert main(_args(data, tmp_path, "--epochs", "1", "--tloss_w", "0.5")) == 0
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        assert [float(r["tloss_w"]) for r in csv.DictReader(f)] == [0.0]


def test_a_test_never_replaces_earlier_results_unasked(data, tmp_path, capsys):
    assert main(_args(data, tmp_path, "--epochs", "1")) == 0
    test_args = ["test", "--dataroot", str(data), "--dataset", "tiny", "--exp_root",
                 str(tmp_path), "--exp", "run", "--no-progress", "--no-figures"]
    assert main(test_args) == 0
    out = tmp_path / "run" / "test_best_dice"
    summary = (out / "summary.json").read_bytes()
    assert (out / "config_test.json").is_file()
    capsys.readouterr()
    assert main(test_args) == 2
    _one_error_line(capsys, str(out), "already holds results", "--overwrite")
    assert (out / "summary.json").read_bytes() == summary
    assert main(test_args + ["--test_model", "last"]) == 0      # another folder
    assert main(test_args + ["--overwrite"]) == 0
    assert main(test_args + ["--resume"]) == 2


def test_a_test_overwritten_on_other_images_keeps_none_of_the_earlier_ones(data, tmp_path):
    """--overwrite replaced the files of the images tested again and kept the others'
    predictions, which metrics.csv and summary.json no longer listed."""
    assert main(_args(data, tmp_path, "--epochs", "1")) == 0
    test_args = ["test", "--dataroot", str(data), "--dataset", "tiny", "--exp_root",
                 str(tmp_path), "--exp", "run", "--no-progress"]
    assert main(test_args) == 0
    out = tmp_path / "run" / "test_best_dice"
    (out / "notes.txt").write_text("mine")
    for folder in ("test", "test_labels"):                      # the test set renamed
        for path in (data / "tiny" / folder).glob("*.png"):
            path.rename(path.with_name("renamed_" + path.name))
    try:
        assert main(test_args + ["--overwrite"]) == 0
    finally:
        for folder in ("test", "test_labels"):
            for path in (data / "tiny" / folder).glob("renamed_*.png"):
                path.rename(path.with_name(path.name[len("renamed_"):]))
    for sub in ("pred_bin", "pred_grey"):
        assert all(p.name.startswith("renamed_") for p in (out / sub).iterdir()), sub
    assert all(p.name.startswith(("renamed_", "matching")) for p in (out / "figures").iterdir())
    assert (out / "notes.txt").read_text() == "mine"


def test_sliding_window_inference_is_exported_lazily():
    import satloss_gpu
    from satloss_gpu.training.sliding_window import sliding_window_inference

    assert "sliding_window_inference" in satloss_gpu.__all__
    assert satloss_gpu.sliding_window_inference is sliding_window_inference
