"""Helpers shared by the whole test suite (no test file imports another test file).

- ``datasets``: tiny COCO-format folders written on the fly.
- ``jobs``: launching ``python -m ssd_train`` / ``ssd-train`` and other jobs in a subprocess with a
  hang guard that kills the whole process tree.
- ``logs``: reading ``:::MLLOG`` lines and ``metrics.jsonl``.
- ``torch_files``: fixed byte patterns that make ``torch.load`` fail in each of its ways.
- ``standin``: a tiny stand-in detector network for fast runs of the real ``Trainer``.
"""
