"""`python -m gandist ...` (and `torchrun -m gandist train ...`)."""

from gandist.cli import run

run()
