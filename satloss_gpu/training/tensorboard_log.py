"""TensorBoard logging of a training run (optional: ``pip install satloss-gpu[tensorboard]``).

The run's scalars (losses, learning rate, validation metrics) go to TensorBoard under
``train/`` and ``val/``, and the figures the run already draws (curves, overlays, matchings)
are added as images, read back from their PNG files. Without the ``tensorboard`` package the
logger cannot be built and says how to install it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping, Union

import numpy as np

__all__ = ["tensorboard_available", "TensorBoardLogger"]

INSTALL_HINT = "pip install 'satloss-gpu[tensorboard]' (or pip install tensorboard)"


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by ``torch.utils.tensorboard``) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger:
    """Scalars and PNG figures of a run, written as TensorBoard event files in ``log_dir``.

    Parameters
    ----------
    log_dir : str or Path
        Folder of the event files (created).

    Raises
    ------
    ImportError
        When ``tensorboard`` is not installed (the message says how to install it).
    """

    def __init__(self, log_dir: Union[str, Path]) -> None:
        if not tensorboard_available():
            raise ImportError(f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Add every finite number of ``values`` as ``<prefix><name>`` at ``step``."""
        for name, value in values.items():
            if isinstance(value, (int, float, np.floating, np.integer)) and \
                    not isinstance(value, bool) and np.isfinite(float(value)):
                self._writer.add_scalar(f"{prefix}{name}", float(value), global_step=step)

    def image_file(self, tag: str, path: Union[str, Path], step: int) -> bool:
        """Add the PNG (or any image file) at ``path`` as image ``tag``; False if it is missing."""
        path = Path(path)
        if not path.is_file():
            return False
        import imageio.v3 as iio

        image = np.asarray(iio.imread(path))
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = image[..., :3]
        if image.dtype != np.uint8:
            image = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
        self._writer.add_image(tag, image, global_step=step, dataformats="HWC")
        return True

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        """Write everything and close the event file."""
        self._writer.close()
