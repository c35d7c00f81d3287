"""Image decoding shared by every dataset: any PIL-readable file to an RGB image, or a one-line DataError."""
from pathlib import Path

from PIL import Image, ImageFile

from dataset.errors import DataError

# Web-scraped training sets contain truncated JPEGs (README "When things go wrong"): decode what is there.
ImageFile.LOAD_TRUNCATED_IMAGES = True
# One size limit, checked from the header before decoding (PIL's own two-level bomb check is off):
# 16384 × 16384 pixels, about 0.8 GB as RGB; larger files are far beyond any training resolution.
MAX_IMAGE_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = None


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file and convert it to RGB (grayscale, palette, CMYK and RGBA included).

    A file that is missing, undecodable or over MAX_IMAGE_PIXELS raises a DataError naming it.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"image {path} has {width}×{height} pixels, over the limit of {MAX_IMAGE_PIXELS} "
                                f"(dataset.images.MAX_IMAGE_PIXELS); shrink the file or remove its entry")
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise DataError(f"cannot load image {path}: {reason}; replace the file or remove its entry") from None
