"""Exceptions raised by ssd_data for bad input (annotation files, images, settings).

Every message names the file (and record) at fault and says what to do about it, so a user
never has to read a traceback from deep inside json or PIL to find out what went wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DataError(RuntimeError):
    """Base class of the data package's errors: bad input, not a bug in the code."""


class AnnotationError(DataError):
    """A COCO-format annotation file is unreadable, malformed or inconsistent."""


class BadImageError(DataError):
    """An image file is missing, truncated or not an image (raised with bad_image_policy='error')."""


class UnreadableImage(Exception):
    """An image file that cannot be decoded; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def check_dataset_paths(cfg: Any) -> None:
    """Fail fast, before anything is built: every folder and annotation file that ``cfg`` (a
    ``DataConfig``) names must exist. Raises :class:`DataError` naming the first one that does not
    (image folders first, then annotation files) and the setting that chose it."""
    for name, want_dir in (
        ("train_images", True),
        ("val_images", True),
        ("train_annotations", False),
        ("val_annotations", False),
    ):
        path = getattr(cfg, name)
        if path is None:
            raise DataError(
                f"data.{name} is not set: set data.root (a COCO-layout folder) or data.{name}"
            )
        path = Path(path)
        if want_dir and not path.is_dir():
            raise DataError(f"data.{name} = {path} is not a folder; check data.root / data.{name}")
        if not want_dir and not path.is_file():
            raise DataError(
                f"data.{name} = {path}: annotation file not found; check data.root / data.{name}"
            )
