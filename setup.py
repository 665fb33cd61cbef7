"""Installation script for satloss-gpu.

The GPU kernels live in the top-level ``kernels/`` folder and are installed as the
sub-package ``satloss_gpu.kernels`` so that the name cannot clash with other packages.
"""
from setuptools import setup

TEST_REQUIRES = [
    "pytest>=7", "hypothesis>=6", "gudhi>=3.10", "cripser>=0.0.37", "scipy>=1.10",
    # the CUDA kernels are tested under its simulator and compiled to PTX without a GPU
    "numba-cuda>=0.30",
]
BENCH_REQUIRES = ["gudhi>=3.10", "cripser>=0.0.37", "scipy>=1.10", "scikit-learn>=1.3"]

setup(
    name="satloss-gpu",
    version="0.1.0",
    description="Batched, GPU-ready Spatial-Aware Topological Loss (SATLoss) and cubical persistence "
    "with critical pixels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["satloss_gpu", "satloss_gpu.backends", "satloss_gpu.kernels",
              "satloss_gpu.kernels.common", "satloss_gpu.kernels.cpu",
              "satloss_gpu.kernels.cuda"],
    package_dir={"satloss_gpu": "satloss_gpu", "satloss_gpu.kernels": "kernels"},
    install_requires=[
        "numpy>=1.24",
        "numba>=0.59",
        "torch>=2.1",
        "POT>=0.9.5",
        "scikit-image>=0.22",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "imageio>=2.28",
    ],
    extras_require={
        "test": TEST_REQUIRES,
        "bench": BENCH_REQUIRES,
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
