"""Small file-writing helpers and sizes shared by the data-layer tests (a uniquely named module,
so that test files never import `conftest`)."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

SMALL = {"num_train": 40, "num_val": 8, "num_zeroshot_per_class": 2, "image_size": 32}


def demo_settings(source: str = "shapes", seed: int = 0, **sizes: int) -> dict:
    """Builder settings as `build_demo_data.py` assembles them, small sizes by default."""
    return {"version": 1, "source": source, "seed": seed, **SMALL, **sizes}


def write_image(path: Path, mode: str = "RGB", size: int = 16) -> Path:
    """A random image of `mode`, saved in a format that supports it."""
    rng = np.random.default_rng(len(str(path)))
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path
