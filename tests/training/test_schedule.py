"""The schedule of the topological term and the warm-up recipe with its BCE baseline."""
import csv
import json

import pytest

from satloss_gpu.training.cli import build_parser, build_run_parser
from satloss_gpu.training.config import QUICK_START, REFERENCE, Config
from satloss_gpu.training.recipe import train_with_baseline
from satloss_gpu.training.synthetic import make_dataset
from satloss_gpu.training.train import load_checkpoint


def test_weight_schedule_start_and_linear_ramp():
    cfg = Config(tloss_w=0.01, tloss_start=3, tloss_ramp=4)
    weights = [cfg.tloss_weight(e) for e in range(1, 10)]
    assert weights[:3] == [0.0, 0.0, 0.0]
    assert weights[3:8] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01])
    reference = Config(tloss_w=0.01)
    assert [reference.tloss_weight(e) for e in (1, 5)] == [0.01, 0.01]
    assert Config(tloss_w=0.5, tloss_start=2).tloss_weight(3) == 0.5


def test_reference_flags_keep_their_meaning_and_the_quick_start_warms_up():
    run = build_run_parser().parse_args([])
    assert (run.tloss_start, run.tloss_ramp, run.baseline) == (0, 0, False)
    assert REFERENCE["tloss_start"] == 0 and REFERENCE["tloss_w"] == 1e-2
    quick = build_parser().parse_args(["train"])
    assert quick.tloss_start is None and QUICK_START["tloss_start"] is None and quick.baseline
    assert Config(epoch=quick.epoch, tloss_start=None).warmup() == quick.epoch // 2 > 0
    assert Config(epoch=1, tloss_start=None).warmup() == 0
    assert build_parser().parse_args(["train", "--tloss_start", "3", "--tloss_ramp", "2"]
                                     ).tloss_ramp == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--tloss_start", "-1"])
    with pytest.raises(ValueError, match="tloss_start"):
        Config(tloss_start=-1)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_warm_up_then_both_arms_from_the_same_checkpoint(tmp_path, capsys):
    make_dataset(tmp_path, "tiny", "mixed", 4, 2, 1, (24, 24), seed=0)
    cfg = Config(dataset="tiny", dataroot=str(tmp_path), exp_root=str(tmp_path / "exp"),
                 exp="qs", model="UNet_small", epoch=3, batch_size=2, loss="bce+sat",
                 tloss_w=0.01, tloss_start=1, tloss_ramp=2, device="cpu", progress=False,
                 figures=True, baseline=True)
    result = train_with_baseline(cfg)
    run, control = tmp_path / "exp" / "qs", tmp_path / "exp" / "qs" / "baseline_bce"
    warm = load_checkpoint(run / "warmup.pth")
    assert warm["epoch"] == 1
    main_rows, control_rows = _rows(run / "metrics.csv"), _rows(control / "metrics.csv")
    assert [r["epoch"] for r in main_rows] == ["1", "2", "3"]
    assert [r["epoch"] for r in control_rows] == ["2", "3"]
    assert [float(r["tloss_w"]) for r in main_rows] == pytest.approx([0.0, 0.005, 0.01])
    assert float(main_rows[0]["extra"]) == 0.0 and float(main_rows[1]["extra"]) > 0.0
    assert all(float(r["extra"]) == 0.0 for r in control_rows)
    assert (run / "figures" / "baseline_betti.png").stat().st_size > 0
    saved = json.loads((run / "baseline.json").read_text())
    assert set(saved) == {"bce+sat", "bce"} and "betti0_error" in saved["bce"]
    assert saved["bce"]["betti0_error"] == float(control_rows[-1]["val_betti0_error"])
    assert result["comparison"] == saved
    out = capsys.readouterr().out
    assert "betti0_error" in out and "bce+sat" in out


def test_a_second_term_that_never_starts_is_refused(tmp_path):
    from satloss_gpu.training.train import train

    with pytest.raises(ValueError, match="never start"):
        train(Config(loss="bce+sat", tloss_start=5, epoch=5))


def test_baseline_needs_a_warm_up(tmp_path):
    with pytest.raises(ValueError, match="tloss_start"):
        train_with_baseline(Config(loss="bce+sat", tloss_start=0, epoch=3))
