"""Reading images with PIL, with unreadable files turned into one clear exception.

Grayscale, CMYK, palette and RGBA images become RGB (PIL ``convert("RGB")``, as the reference
does). With ``min_size`` the JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(PIL draft mode) when that still leaves at least ``min_size`` pixels (used by the "fast"
augmentation for images much larger than the 300x300 output; never for COCO-sized crops).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssd_data.errors import UnreadableImage

__all__ = ["UnreadableImage", "load_rgb", "open_image", "rgb_array"]


def open_image(path: Path) -> Image.Image:
    """Open ``path`` lazily (header only); raises :class:`UnreadableImage`."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(path, f"cannot open ({e})") from None


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
