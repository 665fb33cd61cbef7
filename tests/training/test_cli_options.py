"""Command-line options for people with their own models: --model package.module:ClassName,
--model_kwargs, --config FILE, --tensorboard, and sliding-window testing with --tile."""
import json

import imageio.v3 as iio
import numpy as np
import pytest

from satloss_gpu.training.cli import build_parser, main
from satloss_gpu.training.synthetic import make_dataset
from satloss_gpu.training.tensorboard_log import tensorboard_available

USER_MODELS = '''
import torch


class PixelNet(torch.nn.Module):
    """A per-pixel network (1x1 convolutions): its output at a pixel sees that pixel only."""

    def __init__(self, in_channels=3, width=4):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(in_channels, width, 1), torch.nn.Tanh(),
                                        torch.nn.Conv2d(width, 1, 1))

    def forward(self, x):
        return self.body(x)


class TwoMaps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x)
'''


@pytest.fixture()
def data(tmp_path, monkeypatch):
    make_dataset(tmp_path, "tiny", "mixed", 2, 1, 2, (24, 24), seed=0)
    (tmp_path / "user_models_cli.py").write_text(USER_MODELS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _args(data, *extra):
    return ["--dataroot", str(data), "--dataset", "tiny", "--exp_root", str(data / "exp"),
            "--epoch", "1", "--batch_size", "2", "--loss", "bce+sat", "--no-progress",
            "--no-figures", "--crop", "none", "--no-make_data", *extra]


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("satloss: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_custom_model_trains_and_tests_whole_and_tiled(data, capsys):
    spec, kwargs = "user_models_cli:PixelNet", '{"width": 6}'
    assert main(["train", *_args(data, "--exp", "own", "--model", spec,
                                 "--model_kwargs", kwargs)]) == 0
    run = data / "exp" / "own"
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == spec and saved["model_kwargs"] == {"width": 6}
    capsys.readouterr()
    assert main(["test", *_args(data, "--exp", "own", "--test_model", "last")]) == 0
    whole = json.loads((run / "test_last" / "summary.json").read_text())
    grey_whole = iio.imread(run / "test_last" / "pred_grey" / "0000.png")
    assert main(["test", *_args(data, "--exp", "own", "--test_model", "last", "--tile", "8",
                                "--tile_overlap", "0.5", "--overwrite")]) == 0
    tiled = json.loads((run / "test_last" / "summary.json").read_text())
    grey_tiled = iio.imread(run / "test_last" / "pred_grey" / "0000.png")
    np.testing.assert_array_equal(grey_tiled, grey_whole)
    for key in ("dice", "accuracy", "betti0_error"):
        assert tiled[key] == pytest.approx(whole[key], abs=1e-12), key


def test_config_file_reruns_a_run(data):
    assert main(["train", *_args(data, "--exp", "first", "--model", "user_models_cli:PixelNet",
                                 "--lr", "0.005", "--seed", "3")]) == 0
    first = json.loads((data / "exp" / "first" / "config.json").read_text())
    config = data / "exp" / "first" / "config.json"
    assert main(["train", "--config", str(config), "--exp", "second", "--no-progress"]) == 0
    second = json.loads((data / "exp" / "second" / "config.json").read_text())
    assert {k: v for k, v in second.items() if k != "exp"} == \
        {k: v for k, v in first.items() if k != "exp"}
    metrics = [(data / "exp" / name / "metrics.csv").read_text().splitlines()[1].split(",")[:4]
               for name in ("first", "second")]
    assert metrics[0] == metrics[1]   # same settings, same seed: the same first epoch


@pytest.mark.parametrize("content,fragment", [
    ('{"epoch": 0}', "must be a positive integer"),
    ('{"loss": "l2"}', "`loss`"),
    ('{"no_such_setting": 1}', "unknown setting"),
    ('{"model_kwargs": [1]}', "`model_kwargs` must be a JSON object"),
    ('{"augment": "yes"}', "`augment` must be true or false"),
    ('[1, 2]', "must hold a JSON object"),
    ('{epoch: 2}', "is not valid JSON"),
])
def test_bad_config_files(data, capsys, content, fragment):
    path = data / "bad.json"
    path.write_text(content)
    assert main(["train", "--config", str(path)]) == 2
    _one_error_line(capsys, str(path), fragment)


def test_missing_config_file(data, capsys):
    assert main(["train", "--config", str(data / "missing.json")]) == 2
    _one_error_line(capsys, "config file not found", "missing.json")


def test_config_file_that_is_a_folder(data, capsys):
    assert main(["train", "--config", str(data)]) == 2
    _one_error_line(capsys, str(data), "is a folder; expected a JSON file")


@pytest.mark.parametrize("extra,fragment", [
    (["--model", "user_models_cli:Missing"], "has no attribute 'Missing'"),
    (["--model", "no_such_pkg.nets:Net"], "cannot import module 'no_such_pkg.nets'"),
    (["--model", "user_models_cli:PixelNet", "--model_kwargs", '{"depth": 2}'], "do not fit"),
    (["--model", "user_models_cli:TwoMaps"], "one logit map"),
])
def test_bad_custom_models_give_one_line(data, capsys, extra, fragment):
    assert main(["train", *_args(data, *extra)]) == 2
    _one_error_line(capsys, fragment)


@pytest.mark.parametrize("argv", [["--model", "VGG"], ["--model", "a:b:c"],
                                  ["--model_kwargs", "[1]"], ["--tile", "0"],
                                  ["--tile_overlap", "1.0"]])
def test_bad_flags_exit_with_status_2(argv):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", *argv])
    assert exc.value.code == 2


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_tensorboard_logging(data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", *_args(data, "--exp", "tb", "--epoch", "2", "--tensorboard",
                                 "--figures")]) == 0
    events = EventAccumulator(str(data / "exp" / "tb" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/bce", "train/extra", "train/lr", "val/dice",
            "val/betti0_error"} <= scalars
    assert [e.step for e in events.Scalars("val/dice")] == [1, 2]
    assert any(tag.startswith("figures/curves") for tag in events.Tags()["images"])
    assert main(["test", *_args(data, "--exp", "tb", "--tensorboard", "--figures",
                                "--test_model", "last")]) == 0
    events = EventAccumulator(str(data / "exp" / "tb" / "tensorboard"))
    events.Reload()
    assert {"test/dice", "test/betti1_error"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("test/dice")] == [2]
    assert any(tag.startswith("test/") for tag in events.Tags()["images"])


def test_tensorboard_flag_without_the_package(data, capsys, monkeypatch):
    import satloss_gpu.training.tensorboard_log as module

    monkeypatch.setattr(module, "tensorboard_available", lambda: False)
    assert main(["train", *_args(data, "--exp", "notb", "--tensorboard")]) == 2
    _one_error_line(capsys, "tensorboard")
