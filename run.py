#!/usr/bin/env python
"""Train or test like the reference implementation: ``python run.py --expmode train --dataset NAME --exp NOTE``.

Takes the reference's flags and defaults (see ``python run.py --help``); outputs go to
``./exp/<exp>``. ``satloss train`` is the same with quick-start defaults.
"""
import sys

from satloss_gpu.training.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
