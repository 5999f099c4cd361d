"""The multilayer-perceptron GAN (Goodfellow et al. 2014; the 2-D benchmarks' networks): config.py (the
`model` section), networks.py (G, D). Trains with the shared classic objective (gandist/objectives/classic.py)."""
