"""TensorBoard logging (skipped when the optional tensorboard package is not installed)."""
import numpy as np
import pytest

from satloss_gpu.training.tensorboard_log import TensorBoardLogger, tensorboard_available


def test_missing_package_gives_an_install_hint(monkeypatch, tmp_path):
    import satloss_gpu.training.tensorboard_log as module

    monkeypatch.setattr(module, "tensorboard_available", lambda: False)
    with pytest.raises(ImportError, match=r"satloss-gpu\[tensorboard\]"):
        TensorBoardLogger(tmp_path)


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_scalars_and_figures_are_written(tmp_path):
    import imageio.v3 as iio
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    png = tmp_path / "figure.png"
    iio.imwrite(png, (np.arange(48 * 64 * 3) % 255).astype(np.uint8).reshape(48, 64, 3))
    logger = TensorBoardLogger(tmp_path / "tb")
    logger.scalars({"loss": 0.5, "bce": np.float32(0.25), "skipped": float("nan"), "name": "x"},
                   step=1, prefix="train/")
    logger.scalars({"loss": 0.25}, step=2, prefix="train/")
    assert logger.image_file("figures/curves", png, step=2)
    assert not logger.image_file("figures/none", tmp_path / "missing.png", step=2)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()
    assert set(tags["scalars"]) == {"train/loss", "train/bce"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 0.5), (2, 0.25)]
    image = events.Images("figures/curves")[0]
    assert (image.step, image.width, image.height) == (2, 64, 48)
