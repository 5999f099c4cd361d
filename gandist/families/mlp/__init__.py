"""The mlp family."""
