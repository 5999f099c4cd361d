"""Thin setuptools entry point; tool settings live in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    name="gandist",
    version="0.1.0",
    description="Distributed GAN training: the classic family to StyleGAN, laptop CPU to SLURM clusters",
    python_requires=">=3.10",
    packages=find_packages(include=["gandist", "gandist.*"])
    + ["gandist.kernels", "gandist.configs", "gandist.deepspeed_configs"],
    # kernels/ lives at the top level (it never imports the rest of gandist) and installs as gandist.kernels;
    # the YAML configs live in the top-level configs/ (one copy in git) and install as gandist/configs/,
    # where gandist.resources.configs_dir() finds them outside a source checkout.
    # launch/deepspeed/*.json (train.deepspeed_config names) install as gandist/deepspeed_configs/ the same way.
    package_dir={
        "gandist.kernels": "kernels",
        "gandist.configs": "configs",
        "gandist.deepspeed_configs": "launch/deepspeed",
    },
    package_data={"gandist.configs": ["*.yaml"], "gandist.deepspeed_configs": ["*.json"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy>=1.24",
        "pyyaml>=6",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "tensorboard>=2.14",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "pillow>=9",
        "torch-fidelity>=0.3",  # the TF-ported Inception-v3 architecture FID/IS are defined with
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "pytest-benchmark>=4", "ruff>=0.5", "pytorch-fid>=0.3"],  # pytorch-fid: benchmarks/metrics
        "dali": ["nvidia-dali-cuda130>=1.40"],  # matches torch 2.14's CUDA 13; CPU pipelines need no GPU
        "deepspeed": ["deepspeed>=0.15"],
    },
    entry_points={"console_scripts": ["gandist=gandist.cli:run"]},
)
