"""Objectives: what each family computes in each phase of a training step (`base.py` has the
interface and the table of phases per family). Each objective's config class (the `loss` section)
lives in `config.py`, torch-free; this package imports torch only when an objective is built."""
