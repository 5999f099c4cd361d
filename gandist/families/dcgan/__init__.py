"""DCGAN (Radford et al. 2016): config.py (the `model` section), networks.py (G, D). Trains with the shared
classic objective (gandist/objectives/classic.py)."""
