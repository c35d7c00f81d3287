"""Image decoding shared by every dataset: any PIL-readable file to an RGB image."""
from pathlib import Path

from PIL import Image, ImageFile

# Web-scraped training sets contain truncated JPEGs and very large images (pipeline spec §2.2).
ImageFile.LOAD_TRUNCATED_IMAGES = True
Image.MAX_IMAGE_PIXELS = None


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file and convert it to RGB (grayscale, palette, CMYK and RGBA included)."""
    with Image.open(path) as image:
        return image.convert("RGB")
