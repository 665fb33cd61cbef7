"""The command line: parsers, make-data, persistence, and one-line errors with exit status 2."""
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from satloss_gpu.training.cli import QUICK_START, build_parser, build_run_parser, main, run_main
from satloss_gpu.training.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[2]


def test_run_py_parser_has_the_reference_defaults():
    args = build_run_parser().parse_args([])
    expected = dict(dataset="ROADS", dataroot="./data", expmode="train", model="UNet", epoch=30,
                    start_epoch=0, batch_size=16, lr=1e-3, lr_decay_epoch=10, lr_decay_rate=0.1,
                    wd=1e-3, tloss_w=1e-2, test_model="best_dice", checkpoint=None, seed=0,
                    num_workers=0, loss="bce+sat", device="auto", amp=False, crop=None, augment=False)
    assert {k: getattr(args, k) for k in expected} == expected
    args = build_run_parser().parse_args(["--expmode", "test", "--model", "UNet_small", "--crop", "64",
                                          "--augment", "--loss", "bce+cldice", "--amp"])
    assert (args.expmode, args.model, args.crop, args.augment, args.loss, args.amp) == \
        ("test", "UNet_small", 64, True, "bce+cldice", True)


def test_satloss_train_defaults_are_the_quick_start():
    args = build_parser().parse_args(["train"])
    assert {k: getattr(args, k) for k in QUICK_START} == QUICK_START
    assert args.model == "UNet_small" and args.crop == 64 and args.make_data


@pytest.mark.parametrize("argv", [["--epoch", "0"], ["--model", "VGG"], ["--loss", "l2"],
                                  ["--expmode", "predict"], ["--batch_size", "-1"]])
def test_bad_flags_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_run_parser().parse_args(argv)
    assert exc.value.code == 2


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("satloss: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture()
def data(tmp_path):
    make_dataset(tmp_path, "tiny", "mixed", 2, 1, 1, (16, 16), seed=0)
    return tmp_path


def _args(data, *extra):
    return ["--dataroot", str(data), "--dataset", "tiny", "--exp_root", str(data / "exp"),
            "--epoch", "1", "--batch_size", "2", "--loss", "bce", "--no-progress", "--no-figures",
            "--crop", "none", "--no-make_data", *extra]


def test_missing_dataset_folder(data, capsys):
    assert run_main(_args(data, "--dataset", "ROADS")) == 2
    _one_error_line(capsys, "dataset folder not found", str(data / "ROADS" / "train"),
                    f"--dataroot {data}", "--dataset ROADS", f"datasets in {data}: tiny")


def test_a_mistyped_dataset_is_never_generated(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["--dataroot", "nodata", "--dataset", "mydata"], ["--dataset", "mydata"],
                 ["--dataroot", "nodata", "--dataset", "synthetic", "--no-make_data"]):
        assert main(["train", *argv, "--epoch", "1", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "dataset folder not found" in err and "--dataroot" in err and "--dataset" in err
    assert not (tmp_path / "nodata").exists() and not (tmp_path / "data").exists()


def test_test_mode_names_the_missing_dataset(data, capsys):
    assert main(["test", *_args(data, "--dataset", "tiyn")]) == 2
    _one_error_line(capsys, str(data / "tiyn" / "test"), "--dataset tiyn", "tiny")


def test_unpaired_names(data, capsys):
    iio.imwrite(data / "tiny" / "train" / "lonely.png", np.zeros((16, 16), np.uint8))
    assert main(["train", *_args(data)]) == 2
    _one_error_line(capsys, "without a label", "lonely.png")


def test_unreadable_image(data, capsys):
    (data / "tiny" / "val" / "0000.png").write_bytes(b"\x89PNG broken")
    assert main(["train", *_args(data)]) == 2
    _one_error_line(capsys, "cannot read image", str(data / "tiny" / "val" / "0000.png"))


def test_labels_that_are_not_binary(data, capsys):
    grey = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    iio.imwrite(data / "tiny" / "train_labels" / "0001.png", grey)
    assert main(["train", *_args(data)]) == 2
    _one_error_line(capsys, "is not binary", "0001.png")


def test_unknown_checkpoint(data, capsys):
    assert main(["test", *_args(data, "--test_model", "best_nothing")]) == 2
    _one_error_line(capsys, "checkpoint not found", str(data / "exp" / "quickstart" / "best_nothing.pth"))
    assert main(["train", *_args(data, "--start_epoch", "3")]) == 2
    _one_error_line(capsys, "checkpoint not found", "last.pth")
    junk = data / "junk.pth"
    junk.write_bytes(b"junk")
    assert run_main(_args(data, "--expmode", "test", "--checkpoint", str(junk))) == 2
    _one_error_line(capsys, "cannot read checkpoint", str(junk))


def test_train_then_test_through_the_command_line(data, capsys):
    assert main(["train", *_args(data, "--exp", "cli")]) == 0
    assert (data / "exp" / "cli" / "best_dice.pth").is_file()
    assert run_main(_args(data, "--expmode", "test", "--exp", "cli", "--test_model", "last")) == 0
    assert (data / "exp" / "cli" / "test_last" / "summary.json").is_file()
    assert '"n_images": 1.0' in capsys.readouterr().out


def test_make_data_command(tmp_path, capsys):
    assert main(["make-data", "--kind", "roads", "--dataroot", str(tmp_path), "--n_train", "2",
                 "--n_val", "1", "--n_test", "0", "--size", "24"]) == 0
    assert sorted(p.name for p in (tmp_path / "roads" / "train").iterdir()) == ["0000.png", "0001.png"]
    assert "wrote" in capsys.readouterr().out


def test_make_data_without_val_then_train(tmp_path, capsys):
    make = ["make-data", "--dataroot", str(tmp_path), "--name", "tiny", "--n_train", "3",
            "--n_val", "0", "--n_test", "0", "--size", "16"]
    assert main(make) == 0
    assert not (tmp_path / "tiny" / "val").exists() and not (tmp_path / "tiny" / "test").exists()
    assert main(["train", *_args(tmp_path)]) == 0         # validation held out of train
    assert main(make) == 2
    _one_error_line(capsys, "is not empty", "make-data --overwrite")
    assert main([*make, "--n_train", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "tiny" / "train").iterdir()) == ["0000.png", "0001.png"]


def test_persistence_command(tmp_path, capsys):
    image = (np.random.default_rng(0).random((20, 30)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "noise.png", image)
    out = tmp_path / "pd.png"
    assert main(["persistence", str(tmp_path / "noise.png"), "--out", str(out)]) == 0
    assert iio.imread(out).shape[0] > 100
    assert main(["persistence", "--max_size", "64", "--out", str(tmp_path / "retina.png")]) == 0
    assert (tmp_path / "retina.png").is_file()
    assert main(["persistence", str(tmp_path / "missing.png")]) == 2
    _one_error_line(capsys, "image not found", "missing.png")


def test_entry_points_run_as_scripts(tmp_path):
    """``python -m satloss_gpu`` and ``python run.py``: help, and a clean error without traceback."""
    proc = subprocess.run([sys.executable, "-m", "satloss_gpu", "--help"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and "make-data" in proc.stdout and "persistence" in proc.stdout
    proc = subprocess.run([sys.executable, str(REPO / "run.py"), "--dataroot", str(tmp_path),
                           "--no-progress"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"satloss: error: dataset folder not found: {tmp_path / 'ROADS' / 'train'} "
                          f"(--dataroot {tmp_path}, --dataset ROADS"), err


def test_persistence_default_output_never_replaces_an_earlier_one(tmp_path, monkeypatch):
    """Two images with one file stem (in two folders) get two figures under exp/persistence."""
    monkeypatch.chdir(tmp_path)
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        image = (np.random.default_rng(seed).random((12, 16)) * 255).astype(np.uint8)
        iio.imwrite(tmp_path / folder / "scan.png", image)
        assert main(["persistence", str(tmp_path / folder / "scan.png")]) == 0
    first, second = tmp_path / "exp/persistence/scan.png", tmp_path / "exp/persistence/scan_2.png"
    assert first.is_file() and second.is_file()
    assert first.read_bytes() != second.read_bytes()



def test_make_data_size_below_8_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["make-data", "--dataroot", str(tmp_path), "--size", "4"])
    assert exit_info.value.code == 2
    assert "argument --size: must be an integer >= 8; got '4'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_make_data_retina_tiles_too_large_name_size(tmp_path, capsys):
    assert main(["make-data", "--dataroot", str(tmp_path), "--kind", "retina", "--size", "400"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert all(f in err for f in ("--size 400", "tiles too large", "352 or less")), err
    assert not (tmp_path / "retina").exists()
