"""``python -m satloss_gpu`` and the ``satloss`` console script (see :mod:`satloss_gpu.training.cli`).

Also the target of ``torchrun --nproc_per_node=N -m satloss_gpu train ...``.
"""
import sys

from .training.cli import main

if __name__ == "__main__":
    sys.exit(main())
