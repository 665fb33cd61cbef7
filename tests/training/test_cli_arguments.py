"""Argument types of the command line and the values of --config files: clear messages that
name the flag (or the file and key) and say what was expected and what was found."""
import json

import pytest

from satloss_gpu.training.cli import build_parser, main


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
