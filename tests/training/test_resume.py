"""Interrupted runs continued with ``--resume``, and ``--config`` reruns of a default run.

Interruptions are simulated by raising ``KeyboardInterrupt`` at chosen points: inside an
epoch, while a checkpoint is saved, while ``warmup.pth`` is copied, while ``baseline.json``
is written. A run continued with ``--resume`` after each must end with the results and the
files of an uninterrupted run.
"""
import csv
import json
from pathlib import Path

import pytest
import torch

from satloss_gpu.training import checkpoints, recipe
from satloss_gpu.training import loop as train_module
from satloss_gpu.training.checkpoints import load_checkpoint
from satloss_gpu.training.cli import main
from satloss_gpu.training.synthetic import make_dataset

#: Columns that differ between two runs of the same settings (wall-clock time).
UNSTABLE = {"time_s"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", "mixed", 4, 2, 1, (16, 16), seed=0)
    return root


def _args(data, exp_root, exp, *extra):
    """A default (quick start) run, shrunk: bce+sat with a 2-epoch warm-up and the control."""
    return ["train", "--dataroot", str(data), "--dataset", "tiny", "--exp_root", str(exp_root),
            "--exp", exp, "--epochs", "4", "--batch_size", "2", "--crop", "none",
            "--no-progress", "--no-figures", "--no-make_data", "--device", "cpu", *extra]


def _resume_args(exp_root, exp):
    """The README's resume recipe: the run's folder and --resume, nothing else."""
    return ["train", "--exp_root", str(exp_root), "--exp", exp, "--resume"]


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in UNSTABLE} for row in csv.DictReader(f)]


def _files(run: Path):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if p.is_file() and p.suffix not in (".log",))


def _assert_same_weights(a: Path, b: Path):
    wa, wb = load_checkpoint(a), load_checkpoint(b)
    assert wa["epoch"] == wb["epoch"]
    for key, value in wa["model"].items():
        torch.testing.assert_close(value, wb["model"][key], rtol=1e-5, atol=1e-6, msg=key)


def _json_tail(out: str):
    return json.loads(out[out.index("\n{") + 1:])


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """An uninterrupted default run and the JSON it printed."""
    exp_root = tmp_path_factory.mktemp("exp")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(_args(data, exp_root, "qs")) == 0
    return exp_root / "qs", _json_tail(out.getvalue())


class _Interrupt:
    """Raise KeyboardInterrupt once at each of ``points`` (in order), then never again."""

    def __init__(self, monkeypatch, points):
        self.points = list(points)
        self.hit = []
        epoch, save = train_module._train_epoch, checkpoints._save
        copy, write = recipe.copy_checkpoint, recipe._write_text

        def train_epoch(model, loader, criterion, optimizer, scaler, cfg, info, epoch_):
            self._maybe(("epoch", Path(cfg.exp).name, epoch_))
            return epoch(model, loader, criterion, optimizer, scaler, cfg, info, epoch_)

        def save_(state, path):
            self._maybe(("save", Path(path).parent.name, state["epoch"], Path(path).name))
            return save(state, path)

        def copy_(source, target):
            self._maybe(("copy",))
            return copy(source, target)

        def write_(path, text):
            self._maybe(("write", Path(path).name))
            return write(path, text)

        monkeypatch.setattr(train_module, "_train_epoch", train_epoch)
        monkeypatch.setattr(checkpoints, "_save", save_)
        monkeypatch.setattr(recipe, "copy_checkpoint", copy_)
        monkeypatch.setattr(recipe, "_write_text", write_)

    def _maybe(self, point):
        if self.points and self.points[0] == point:
            self.hit.append(self.points.pop(0))
            raise KeyboardInterrupt


def test_default_run_prints_the_topological_arm_and_records_the_settings_asked(straight):
    run, printed = straight
    assert printed["epochs"] == 4 and printed["exp_dir"] == str(run)
    assert printed["best_dice"] == load_checkpoint(run / "last.pth")["best"]["dice"]
    assert printed["baseline"]["exp_dir"] == str(run / "baseline_bce")
    assert printed["baseline"]["epochs"] == 4
    assert set(printed["comparison"]) == {"bce+sat", "bce"}
    saved = json.loads((run / "config.json").read_text())
    assert saved["loss"] == "bce+sat" and saved["baseline"] is True
    assert saved["epoch"] == 4 and saved["tloss_start"] is None and saved["start_epoch"] == 0
    assert saved["checkpoint"] is None and saved["resume"] is False
    # BCE alone logs a zero weight for the term it does not have
    assert all(float(r["tloss_w"]) == 0.0 for r in _rows(run / "baseline_bce" / "metrics.csv"))
    assert [float(r["tloss_w"]) for r in _rows(run / "metrics.csv")] == \
        pytest.approx([0.0, 0.0, 0.005, 0.01])


def test_config_file_reruns_the_default_run(straight, capsys):
    run, printed = straight
    capsys.readouterr()
    assert main(["train", "--config", str(run / "config.json"), "--exp", "rerun"]) == 0
    again = _json_tail(capsys.readouterr().out)
    rerun = run.parent / "rerun"
    assert again["comparison"] == printed["comparison"] and again["epochs"] == 4
    assert _files(rerun) == _files(run)
    _assert_same_weights(run / "baseline_bce" / "last.pth", rerun / "baseline_bce" / "last.pth")


def test_interrupted_default_run_resumes_to_the_uninterrupted_result(straight, data, tmp_path,
                                                                      monkeypatch, capsys):
    run, printed = straight
    points = [("epoch", "qs", 2),                          # inside the warm-up
              ("copy",),                                   # copying warmup.pth
              ("save", "qs", 3, "last.pth"),               # saving the topological arm
              ("epoch", "baseline_bce", 4),                # inside the control
              ("write", "baseline.json")]                  # writing the comparison
    interrupt = _Interrupt(monkeypatch, points)
    assert main(_args(data, tmp_path, "qs")) == 130
    for _ in range(len(points) - 1):
        assert main(_resume_args(tmp_path, "qs")) == 130
    capsys.readouterr()
    assert main(_resume_args(tmp_path, "qs")) == 0
    assert not interrupt.points, interrupt.points
    resumed = tmp_path / "qs"
    assert _json_tail(capsys.readouterr().out)["comparison"] == printed["comparison"]
    assert _files(resumed) == _files(run)
    for name in ("metrics.csv", "baseline_bce/metrics.csv"):
        assert _rows(resumed / name) == _rows(run / name), name
    for name in ("warmup.pth", "last.pth", "best_dice.pth", "baseline_bce/last.pth"):
        _assert_same_weights(resumed / name, run / name)
    assert json.loads((resumed / "baseline.json").read_text()) == \
        json.loads((run / "baseline.json").read_text())
    saved = json.loads((resumed / "config.json").read_text())
    assert saved == {**json.loads((run / "config.json").read_text()), "exp_root": str(tmp_path)}
    # resuming a finished run trains nothing and reports the same
    assert main(_resume_args(tmp_path, "qs")) == 0
    assert _json_tail(capsys.readouterr().out)["comparison"] == printed["comparison"]


def test_interrupted_single_run_resumes_exactly(data, tmp_path, monkeypatch):
    single = ["--loss", "bce", "--epochs", "3"]
    assert main(_args(data, tmp_path, "straight", *single)) == 0
    _Interrupt(monkeypatch, [("epoch", "run", 2)])
    assert main(_args(data, tmp_path, "run", *single)) == 130
    assert main(_resume_args(tmp_path, "run")) == 0
    _assert_same_weights(tmp_path / "run" / "last.pth", tmp_path / "straight" / "last.pth")
    assert _rows(tmp_path / "run" / "metrics.csv") == _rows(tmp_path / "straight" / "metrics.csv")


def test_a_row_lost_after_the_checkpoint_is_restored_from_it(data, tmp_path, monkeypatch):
    write_csv = train_module._write_csv

    def interrupted(path, rows, append=False):
        if Path(path).name == "metrics.csv" and rows and rows[0].get("epoch") == 2:
            raise KeyboardInterrupt
        return write_csv(path, rows, append)

    monkeypatch.setattr(train_module, "_write_csv", interrupted)
    assert main(_args(data, tmp_path, "run", "--loss", "bce", "--epochs", "3")) == 130
    monkeypatch.setattr(train_module, "_write_csv", write_csv)
    assert [r["epoch"] for r in _rows(tmp_path / "run" / "metrics.csv")] == ["1"]
    assert load_checkpoint(tmp_path / "run" / "last.pth")["epoch"] == 2
    assert main(_resume_args(tmp_path, "run")) == 0
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert not list((tmp_path / "run").glob("metrics_until_epoch_*"))


def test_start_epoch_on_a_run_with_a_baseline_points_to_resume(data, tmp_path, capsys):
    assert main(_args(data, tmp_path, "qs", "--start_epoch", "3")) == 2
    err = capsys.readouterr().err
    assert "--start_epoch 3" in err and "--resume" in err
    assert not (tmp_path / "qs").exists()


@pytest.mark.parametrize("refused", [["--model", "UNet"],                       # weights do not fit
                                     ["--no-baseline", "--start_epoch", "3"],   # epoch disagrees
                                     ["--dataset", "missing"]])                 # no such data
def test_a_refused_resume_keeps_the_run_settings(straight, tmp_path, refused, capsys):
    import shutil

    run, _ = straight
    shutil.copytree(run, tmp_path / "qs")
    before = (tmp_path / "qs" / "config.json").read_text()
    assert main(_resume_args(tmp_path, "qs") + ["--epochs", "5", *refused]) == 2
    assert "error" in capsys.readouterr().err
    assert (tmp_path / "qs" / "config.json").read_text() == before
    # so the README's recipe still continues the run as it was asked for
    assert main(_resume_args(tmp_path, "qs")) == 0
