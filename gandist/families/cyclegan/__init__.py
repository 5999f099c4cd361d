"""CycleGAN (Zhu et al. 2017): config.py (the `model` and `loss` sections; `translates`), networks.py
(G_AB, G_BA, D_A, D_B), objective.py (its phases and image pools)."""
