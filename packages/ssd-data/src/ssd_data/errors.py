"""Exceptions raised by ssd_data for bad input (annotation files, images, settings).

Every message names the file (and record) at fault and says what to do about it, so a user
never has to read a traceback from deep inside json or PIL to find out what went wrong.
"""

from __future__ import annotations


class DataError(RuntimeError):
    """Base class of the data package's errors: bad input, not a bug in the code."""


class AnnotationError(DataError):
    """A COCO-format annotation file is unreadable, malformed or inconsistent."""


class BadImageError(DataError):
    """An image file is missing, truncated or not an image (raised with bad_image_policy='error')."""
