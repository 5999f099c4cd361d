"""Training: one loop for every family (loop.py), checkpoints (checkpoint.py), EMA, run directory."""
