"""`python -m ssd_eval`: the same as the `ssd-eval` console script."""

import sys

from ssd_eval.cli import main

sys.exit(main())
