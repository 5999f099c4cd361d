"""gandist: distributed GAN training, from a laptop CPU to SLURM clusters of multi-GPU nodes."""

__version__ = "0.1.0"
