"""Reading images with PIL, with unreadable files turned into one clear exception.

Grayscale, CMYK, palette and RGBA images become RGB (PIL ``convert("RGB")``, as the reference
does). With ``min_size`` the JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(PIL draft mode) when that still leaves at least ``min_size`` pixels (used by the "fast"
augmentation for images much larger than the 300x300 output; never for COCO-sized crops).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssd_data.config import DEFAULT_MAX_IMAGE_PIXELS
from ssd_data.errors import UnreadableImage

# PIL warns (DecompressionBombWarning) on images above its limit and refuses twice that: the
# check of open_image refuses both first, so PIL's warning would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


__all__ = ["UnreadableImage", "load_rgb", "open_image", "rgb_array"]


def open_image(
    path: Path | BinaryIO, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image:
    """Open ``path`` lazily (header only); raises :class:`UnreadableImage`, also when the header
    declares more than ``max_pixels`` pixels (``data.max_image_pixels``; None: no limit of ours)
    or PIL refuses the image as a decompression bomb."""
    name = cast(Path, path)  # a file object (device path) is named by the caller
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise UnreadableImage(name, "file not found") from None
    except UnidentifiedImageError:
        raise UnreadableImage(name, "not an image file (unrecognised format)") from None
    except Image.DecompressionBombError as e:  # PIL's own limit (2x MAX_IMAGE_PIXELS)
        raise UnreadableImage(name, _bomb_reason(e, max_pixels)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(name, f"cannot open ({e})") from None
    check_pixels(image, name, max_pixels)
    return image


def _bomb_reason(error: Exception, max_pixels: int | None) -> str:
    """The reason for an image PIL refused as a decompression bomb (its message has the pixel
    count only: PIL checks the header before it tells the size)."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    if max_pixels is None or found is None:
        return f"refused by PIL as a decompression bomb ({error})"
    return _too_many(f"{int(found.group(1)):,}", max_pixels)


def _too_many(declared: str, max_pixels: int) -> str:
    return (
        f"the header declares {declared} pixels, more than data.max_image_pixels"
        f" ({max_pixels:,}): a decompression bomb or a corrupt header (raise"
        " data.max_image_pixels if the image is real)"
    )


def check_pixels(image: Image.Image, path: Path, max_pixels: int | None) -> None:
    """Raise :class:`UnreadableImage` (and close ``image``) when its header declares more than
    ``max_pixels`` pixels."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise UnreadableImage(path, _too_many(f"{width}x{height} = {width * height:,}", max_pixels))


def load_rgb(
    image: Image.Image, path: Path, min_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode an opened image to RGB; ``min_size`` (w, h) allows DCT-domain downscaling to no
    less than that size. Raises :class:`UnreadableImage` (truncated or corrupt data)."""
    try:
        if min_size is not None and image.format == "JPEG":
            image.draft("RGB", min_size)
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        image.close()
        raise UnreadableImage(path, f"truncated or corrupt image data ({e})") from None


def rgb_array(image: Image.Image) -> np.ndarray:
    """Read-only uint8[H, W, 3] view of a decoded RGB image's pixels."""
    return np.asarray(image)
