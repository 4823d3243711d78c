"""``python -m ssd_data``: the ``ssd-data`` command line."""

from ssd_data.cli import main

raise SystemExit(main())
