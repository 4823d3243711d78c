"""`python -m ssd_eval`: the same as the `ssd-eval` console script."""

import sys

from ssd_eval.cli import main

if __name__ == "__main__":  # guarded: spawned worker processes re-import the main module
    sys.exit(main())
