"""Training, resuming, testing and data-parallel training on a tiny synthetic set (CPU)."""
import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from satloss_gpu.training.models import UNet, UNet_small, build_model, pad_to_multiple
from satloss_gpu.training.synthetic import make_dataset
from satloss_gpu.training.train import Config, build_criterion, evaluate, load_checkpoint, predict, train
from satloss_gpu.training.train import test as run_test
from satloss_gpu.training.data import SegmentationDataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", "mixed", n_train=4, n_val=2, n_test=2, size=(32, 32), seed=0)
    return root


def _config(dataroot, exp_root, **kw):
    base = dict(dataset="tiny", dataroot=str(dataroot), exp_root=str(exp_root), exp="run",
                model="UNet_small", epoch=2, batch_size=2, lr=1e-3, loss="bce", device="cpu",
                progress=False, figures=False, seed=0)
    base.update(kw)
    return Config(**base)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- models
def test_unet_widths_and_shapes():
    net = UNet()
    assert net.widths == (64, 128, 256, 512, 1024) and net.divisor == 16
    small = UNet_small()
    assert small.widths == (16, 32, 64, 128) and small.divisor == 8
    x = torch.rand(2, 3, 16, 24)
    out = small(x)
    assert out.shape == (2, 1, 16, 24) and 0 <= float(out.min().detach()) and float(out.max().detach()) <= 1
    torch.testing.assert_close(torch.sigmoid(small(x, logits=True)), out)
    with pytest.raises(ValueError, match="`model` must be one of"):
        build_model("ResNet")


def test_predict_handles_any_image_size():
    net = UNet_small().eval()
    x = torch.rand(1, 3, 33, 47)
    padded, size = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (40, 48) and size == (33, 47)
    with torch.no_grad():
        prob = predict(net, x)
    assert prob.shape == (1, 1, 33, 47)


def test_criteria():
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 8, 2:14] = 1
    for name in ("bce", "bce+cldice", "dice"):
        loss, parts = build_criterion(name, 0.5)(logits, target)
        loss.backward()
        assert torch.isfinite(loss) and parts
    bce, _ = build_criterion("bce", 0.5)(logits, target)
    cl, parts = build_criterion("bce+cldice", 0.5)(logits, target)
    assert float(cl.detach()) == pytest.approx(float(bce.detach()) + 0.5 * parts["extra"], rel=1e-6)
    with pytest.raises(ValueError, match="`loss` must be one of"):
        build_criterion("mse", 1.0)


# --------------------------------------------------------------------------- train / resume / test
@pytest.fixture(scope="module")
def trained(dataroot, tmp_path_factory):
    exp_root = tmp_path_factory.mktemp("exp")
    cfg = _config(dataroot, exp_root, figures=True, save_every=2, max_figures=1)
    result = train(cfg)
    return cfg, result


def test_two_epoch_run_writes_every_output(trained):
    cfg, result = trained
    run = cfg.exp_dir
    for name in ("config.json", "train.log", "metrics.csv", "best_dice.pth", "best_acc.pth",
                 "last.pth", "epoch_0002.pth", "figures/curves.png", "figures/val_0000.png"):
        assert (run / name).is_file(), name
    assert any(p.name.startswith("matching_") for p in (run / "figures").iterdir())
    assert json.loads((run / "config.json").read_text())["epoch"] == 2
    rows = _rows(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "lr", "val_dice", "val_betti0_error", "val_cldice", "val_voi"} <= set(rows[0])
    assert result["best_dice"] == pytest.approx(max(float(r["val_dice"]) for r in rows), rel=1e-5)
    state = load_checkpoint(run / "last.pth")
    assert state["epoch"] == 2 and {"optimizer", "scheduler", "scaler", "best"} <= set(state)
    assert "epoch 2/2" in (run / "train.log").read_text()


def test_learning_rate_decays_stepwise(dataroot, tmp_path):
    cfg = _config(dataroot, tmp_path, epoch=3, lr=1e-2, lr_decay_epoch=2, lr_decay_rate=0.1)
    train(cfg)
    lrs = [float(r["lr"]) for r in _rows(cfg.exp_dir / "metrics.csv")]
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-3])


def test_resume_continues_exactly(dataroot, tmp_path):
    """3 epochs straight give the same weights as 2 epochs, then a resume for the third."""
    straight = _config(dataroot, tmp_path, exp="straight", epoch=3, crop=24, augment=True)
    train(straight)
    first = _config(dataroot, tmp_path, exp="resumed", epoch=2, crop=24, augment=True)
    train(first)
    resumed = replace(first, epoch=3, start_epoch=2)          # loads <exp>/last.pth
    train(resumed)
    a = load_checkpoint(straight.exp_dir / "last.pth")
    b = load_checkpoint(first.exp_dir / "last.pth")
    assert b["epoch"] == 3 and b["scheduler"]["last_epoch"] == 3
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    rows = _rows(first.exp_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    # the same through --checkpoint, given as a path
    again = replace(first, exp="from_path", epoch=3, start_epoch=0,
                    checkpoint=str(first.exp_dir / "epoch_0002.pth"))
    assert not Path(again.checkpoint).exists()
    with pytest.raises(ValueError, match="checkpoint not found: .*epoch_0002.pth"):
        train(again)


def test_validation_restores_training_mode(dataroot):
    net = UNet_small().train()
    ds = SegmentationDataset(dataroot, "tiny", "val")
    rows, kept = evaluate(net, ds, torch.device("cpu"), keep=1)
    assert net.training and len(rows) == 2 and len(kept) == 1
    net.eval()
    evaluate(net, ds, torch.device("cpu"))
    assert not net.training


def test_test_mode_reproduces_validation_metrics(trained):
    cfg, _ = trained
    summary = run_test(replace(cfg, expmode="test", split="val", test_model="last", figures=True))
    last = _rows(cfg.exp_dir / "metrics.csv")[-1]
    for key in ("dice", "accuracy", "cldice", "betti0_error", "betti1_error"):
        assert summary[key] == pytest.approx(float(last[f"val_{key}"]), rel=1e-4, abs=1e-6), key
    out = Path(summary["output"])
    assert out == cfg.exp_dir / "val_last"
    per_image = _rows(out / "metrics.csv")
    assert [r["name"] for r in per_image] == ["0000", "0001"]
    binary = iio.imread(out / "pred_bin" / "0000.png")
    grey = iio.imread(out / "pred_grey" / "0000.png")
    assert binary.shape == grey.shape == (32, 32) and set(np.unique(binary)) <= {0, 255}
    np.testing.assert_array_equal(binary == 255, grey > 127)
    assert json.loads((out / "summary.json").read_text())["n_images"] == 2
    # default split and model: test set, best_dice checkpoint
    summary = run_test(replace(cfg, expmode="test"))
    assert Path(summary["output"]).name == "test_best_dice" and summary["n_images"] == 2


def test_other_losses_and_mixed_precision_train(dataroot, tmp_path):
    for loss, amp in (("bce+cldice", False), ("dice", True)):   # amp on the CPU: bfloat16
        cfg = _config(dataroot, tmp_path, exp=loss.replace("+", "_"), epoch=1, loss=loss, amp=amp)
        result = train(cfg)
        assert np.isfinite(result["best_dice"])
        assert np.isfinite(float(_rows(cfg.exp_dir / "metrics.csv")[0]["loss"]))


def test_topological_losses_train(dataroot, tmp_path):
    for loss in ("bce+sat", "bce+topo"):
        cfg = _config(dataroot, tmp_path, exp=loss.replace("+", "_"), epoch=1, loss=loss, tloss_w=0.1)
        train(cfg)
        row = _rows(cfg.exp_dir / "metrics.csv")[0]
        assert float(row["extra"]) > 0
        assert float(row["loss"]) == pytest.approx(float(row["bce"]) + 0.1 * float(row["extra"]), rel=1e-3)


def test_data_parallel_training_with_two_processes(dataroot, tmp_path):
    """torchrun with 2 CPU processes (gloo): DistributedDataParallel + DistributedSampler."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "satloss_gpu", "train", "--dataset", "tiny", "--dataroot", str(dataroot),
           "--exp_root", str(tmp_path), "--exp", "ddp", "--epoch", "1", "--batch_size", "1",
           "--crop", "none", "--no-augment", "--loss", "bce", "--device", "cpu", "--no-progress",
           "--no-figures"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert "2 process(es)" in log and "epoch 1/1" in log
    assert [r["epoch"] for r in _rows(tmp_path / "ddp" / "metrics.csv")] == ["1"]
    assert load_checkpoint(tmp_path / "ddp" / "last.pth")["epoch"] == 1


# --------------------------------------------------------------------------- second term options
@pytest.mark.parametrize("loss,name", [("bce+sat", "SATLoss"), ("bce+topo", "TopoLoss")])
def test_the_topological_term_reads_the_logits_once(loss, name):
    """A user who knows the network outputs logits passes sigmoid=True: the term is the
    same as without it, that of the loss built with sigmoid=True on the logits."""
    import satloss_gpu

    torch.manual_seed(0)
    logits = 3 * torch.randn(2, 1, 16, 16)
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 8] = 1
    target[:, :, 8, 2:14] = 1
    expected = float(getattr(satloss_gpu, name)(sigmoid=True)(logits, target))
    for kwargs in ({}, {"sigmoid": True}, {"sigmoid": False}):
        _, parts = build_criterion(loss, 1.0, kwargs)(logits, target)
        assert parts["extra"] == pytest.approx(expected, rel=1e-5), kwargs
    _, parts = build_criterion("bce+cldice", 1.0, {"sigmoid": True})(logits, target)
    _, plain = build_criterion("bce+cldice", 1.0)(logits, target)
    assert parts["extra"] == plain["extra"]


@pytest.mark.parametrize("kwargs,match", [
    ({"softmax": True}, r"--tloss_kwargs: `softmax` is fixed to false .*one logit map"),
    ({"num_classes": 2}, r"`num_classes` is fixed to null .*binary masks"),
    ({"include_background": False}, r"`include_background` is fixed to true"),
    ({"reduction": "none"}, r"--tloss_kwargs: `reduction` is fixed to \"mean\" .*got \"none\""),
    ({"reduction": "sum"}, r"`reduction` is fixed to \"mean\""),
    ({"sigmoid": "yes"}, r"--tloss_kwargs: `sigmoid` must be true or false"),
    ({"bogus": 1}, r"--tloss_kwargs \{\"bogus\": 1\} do not fit SATLoss: .*bogus"),
    ({"solver": "fast"}, r"--tloss_kwargs .* do not fit SATLoss: `solver` must be"),
])
def test_term_options_the_trainer_cannot_follow_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_criterion("bce+sat", 0.01, kwargs)
    assert build_criterion("bce+sat", 0.01, {"reduction": "mean", "softmax": False}).extra is not None


def test_term_options_without_a_term_are_refused():
    with pytest.raises(ValueError, match=r"--tloss_kwargs .*--loss bce has none"):
        build_criterion("bce", 0.01, {"pad": False})
    with pytest.raises(ValueError, match=r"--loss dice has none"):
        build_criterion("dice", 0.01, {"pad": False})
