"""Installation script for satloss-gpu.

The compiled kernels live in the top-level ``kernels/`` folder and are installed as the
sub-package ``satloss_gpu.kernels`` so that the name cannot clash with other packages.
The library needs only ``install_requires``; the training application
(:mod:`satloss_gpu.training`, the ``satloss`` command) needs the ``train`` extra.
"""
from setuptools import setup

TRAIN_REQUIRES = ["tqdm>=4.60", "matplotlib>=3.7", "imageio>=2.28"]
TEST_REQUIRES = [
    "pytest>=7", "hypothesis>=6", "gudhi>=3.10", "cripser>=0.0.37",
    # the CUDA kernels are tested under its simulator and compiled to PTX without a GPU
    "numba-cuda>=0.30",
    # the tests of the training application
    *TRAIN_REQUIRES,
]
PACKAGES = [
    "satloss_gpu",
    "satloss_gpu.persistence",
    "satloss_gpu.persistence.backends",
    "satloss_gpu.matching",
    "satloss_gpu.losses",
    "satloss_gpu.training",
    "satloss_gpu.kernels",
    "satloss_gpu.kernels.common",
    "satloss_gpu.kernels.cpu",
    "satloss_gpu.kernels.cuda",
]
BENCH_REQUIRES = ["gudhi>=3.10", "cripser>=0.0.37", "scikit-learn>=1.3", *TRAIN_REQUIRES]

setup(
    name="satloss-gpu",
    version="0.1.0",
    description="Batched, GPU-ready Spatial-Aware Topological Loss (SATLoss) and cubical persistence "
    "with critical pixels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"satloss_gpu": "satloss_gpu", "satloss_gpu.kernels": "kernels"},
    install_requires=[
        "numpy>=1.24",
        "numba>=0.59",
        "torch>=2.1",
        "POT>=0.9.5",
        "scikit-image>=0.22",
        # sparse connected components of the NumPy model of the GPU pipeline
        "scipy>=1.10",
    ],
    extras_require={
        "train": TRAIN_REQUIRES,
        "test": TEST_REQUIRES,
        "bench": BENCH_REQUIRES,
        # TensorBoard logging of training runs (satloss train --tensorboard)
        "tensorboard": ["tensorboard>=2.10"],
        # CUDA 13 drivers and toolkits; use "gpu-cuda12" on CUDA 12 machines.
        "gpu": ["numba-cuda>=0.30", "cupy-cuda13x>=13"],
        "gpu-cuda12": ["numba-cuda>=0.30", "cupy-cuda12x>=13"],
    },
    entry_points={"console_scripts": ["satloss=satloss_gpu.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Processing",
        "Topic :: Scientific/Engineering :: Mathematics",
    ],
)
