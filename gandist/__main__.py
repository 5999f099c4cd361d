"""`python -m gandist ...` (and `torchrun -m gandist train ...`)."""

import sys

from gandist.cli import main

sys.exit(main())
