"""``python -m tests.helpers.cli_standin ARGS``: ``ssd-train ARGS`` with the tiny stand-in network.

``INJECT_BUG=1`` in the environment makes the training loop raise ZeroDivisionError, an error the
product does not expect (exit 1 with its traceback).
"""

from __future__ import annotations

import os
import sys

from ssd_train import components
from ssd_train.__main__ import main
from ssd_train.trainer import Trainer

from tests.helpers.standin import tiny_detector


def _loop_with_a_bug(self: Trainer) -> None:
    raise ZeroDivisionError("a bug inside the training loop")


if __name__ == "__main__":
    components.build_detector = tiny_detector  # the default of build_components' factory
    if os.environ.get("INJECT_BUG") == "1":
        Trainer._loop = _loop_with_a_bug  # type: ignore[method-assign]
    sys.exit(main())
