"""Argument types of the command line and the values of --config files: clear messages that
name the flag (or the file and key) and say what was expected and what was found."""
import json

import pytest

from satloss_gpu.training.cli import build_parser, main
from satloss_gpu.training.synthetic import make_dataset


@pytest.mark.parametrize("argv, message", [
    (["--epoch", "0"], "argument --epoch/--epochs: must be a positive integer; got '0'"),
    (["--epoch", "two"], "argument --epoch/--epochs: must be a positive integer; got 'two'"),
    (["--batch_size", "1.5"], "argument --batch_size: must be a positive integer; got '1.5'"),
    (["--tile", "0"], "argument --tile: must be a positive integer or none or off; got '0'"),
    (["--crop", "-2"], "argument --crop: must be a positive integer or none or 0 or off; got '-2'"),
    (["--lr", "nan"], "argument --lr: must be a number > 0; got 'nan'"),
    (["--wd", "-1"], "argument --wd: must be a number >= 0; got '-1'"),
    (["--threshold", "1.5"], "argument --threshold: must be a number in [0, 1); got '1.5'"),
    (["--seed", "-3"], "argument --seed: must be an integer >= 0; got '-3'"),
    (["--dataset", "a/b"], "argument --dataset: must be a folder name"),
    (["--exp", "../elsewhere"], "argument --exp: must be a folder name relative to --exp_root"),
])
def test_bad_flags_say_what_was_expected(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "_positive_int" not in err and "_tile" not in err and "invalid" not in err


def test_make_data_flags_say_what_was_expected(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["make-data", "--n_val", "-1"])
    assert "argument --n_val: must be an integer >= 0; got '-1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["make-data", "--name", ".."])
    assert "argument --name: must be a folder name" in capsys.readouterr().err


def test_good_flags_are_converted():
    args = build_parser().parse_args(["train", "--crop", "0", "--tile", "off", "--lr", "1e-2",
                                      "--seed", "7", "--exp", "group/run", "--threshold", "0"])
    assert (args.crop, args.tile, args.lr, args.seed, args.exp, args.threshold) == \
        (None, None, 0.01, 7, "group/run", 0.0)


# --------------------------------------------------------------------------- output paths
def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("satloss: error: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture()
def tiny(tmp_path):
    make_dataset(tmp_path, "tiny", "mixed", 2, 1, 1, (16, 16), seed=0)
    (tmp_path / "afile").write_text("mine")
    return tmp_path


def _train_args(root, *extra):
    return ["--dataroot", str(root), "--dataset", "tiny", "--epoch", "1", "--batch_size", "2",
            "--loss", "bce", "--no-progress", "--no-figures", "--crop", "none",
            "--no-make_data", *extra]


@pytest.mark.parametrize("extra", [["--exp_root", "afile"], ["--exp_root", "afile/runs"],
                                   ["--exp_root", ".", "--exp", "afile"]])
def test_run_folders_through_a_file_give_one_line(tiny, capsys, monkeypatch, extra):
    monkeypatch.chdir(tiny)
    assert main(["train", *_train_args(tiny, *extra)]) == 2
    _one_error_line(capsys, "--exp_root/--exp: cannot create the folder", "afile is a file")
    assert (tiny / "afile").read_text() == "mine"


def test_test_output_folder_that_is_a_file_gives_one_line(tiny, capsys):
    args = _train_args(tiny, "--exp_root", str(tiny / "exp"), "--exp", "run")
    assert main(["train", *args]) == 0
    (tiny / "exp" / "run" / "test_last").write_text("mine")
    assert main(["test", *args, "--test_model", "last"]) == 2
    _one_error_line(capsys, "--exp_root/--exp", "test_last is a file")


def test_training_on_labels_that_are_all_empty_is_refused(tiny, capsys):
    import imageio.v3 as iio
    import numpy as np

    for label in (tiny / "tiny" / "train_labels").iterdir():
        iio.imwrite(label, np.zeros((16, 16), np.uint8))
    assert main(["train", *_train_args(tiny, "--exp_root", str(tiny / "exp"))]) == 2
    _one_error_line(capsys, "every label of the 2 in", "train_labels is empty")


def test_make_data_root_that_is_a_file_names_the_option(tiny, capsys):
    assert main(["make-data", "--dataroot", str(tiny / "afile"), "--n_train", "1",
                 "--size", "16"]) == 2
    _one_error_line(capsys, "--dataroot", "afile is a file, not a folder")


def test_persistence_out_that_cannot_be_written_names_the_option(tiny, capsys):
    image = str(tiny / "tiny" / "train" / "0000.png")
    assert main(["persistence", image, "--out", str(tiny / "afile" / "pd.png")]) == 2
    _one_error_line(capsys, "--out", "afile is a file, not a folder")
    assert main(["persistence", image, "--out", str(tiny)]) == 2
    _one_error_line(capsys, "--out", "is a folder; expected the path of a file")


# --------------------------------------------------------------------------- config files
@pytest.mark.parametrize("setting, message", [
    ({"seed": None}, "`seed` must be an integer; got null"),
    ({"seed": -1}, "`seed` must be an integer >= 0; got '-1'"),
    ({"dataset": 5}, "`dataset` must be a string; got 5"),
    ({"dataset": "a/b"}, "`dataset` must be a folder name"),
    ({"max_figures": "many"}, "`max_figures` must be an integer >= 0; got \"many\""),
    ({"max_figures": -2}, "`max_figures` must be an integer >= 0; got -2"),
    ({"epoch": 2.5}, "`epoch` must be an integer; got 2.5"),
    ({"lr": "fast"}, "`lr` must be a number; got \"fast\""),
    ({"crop": -1}, "`crop` must be a positive integer or none or 0 or off; got '-1'"),
    ({"device": "gpu"}, '`device` must be auto, cpu, cuda, cuda:K or mps; got "gpu"'),
    ({"extra": [1]}, "`extra` must be a JSON object; got [1]"),
    ({"split": "dev"}, "`split` must be one of train, val, test; got \"dev\""),
])
def test_config_values_are_checked_like_their_flags(tmp_path, capsys, setting, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(setting))
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"satloss: error: config file {path}: {message}"), err
    assert len(err.splitlines()) == 1


def test_config_values_are_converted_like_their_flags(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"crop": 0, "tile": None, "lr": 1, "seed": 3, "max_figures": 0,
                                "device": "cpu", "model_kwargs": {"width": 8}}))
    args = build_parser(str(path)).parse_args(["train", "--config", str(path)])
    assert (args.crop, args.tile, args.lr, args.seed, args.max_figures, args.device,
            args.model_kwargs) == (None, None, 1.0, 3, 0, "cpu", {"width": 8})
    assert isinstance(args.lr, float)
