"""Objectives: what each family computes in each phase of a training step (`base.py` has the
interface and the table of phases per family). The classic objective, which several families share,
lives here (`classic.py`, its `loss` section in `config.py`, torch-free); a family with an objective of
its own keeps it in its folder (`gandist/families/<name>/objective.py`). This package imports torch only
when an objective is built."""
