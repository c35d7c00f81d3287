"""Procedural demo source: 1-3 coloured shapes on a 3x3 grid over a noisy background.

Captions come from a small grammar with attribute dropout (size, colour, position may be left
out). Six colour-shape pairs (`HELD_OUT`, one per shape and per colour) never occur in the
training or retrieval images; the zero-shot classes are all 36 colour-shape pairs, shown as a
single object, so zero-shot accuracy on the held-out pairs measures compositional generalisation.
"""
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from dataset.demo.grammar import join_phrases, pick, with_article

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235),
    "yellow": (235, 215, 40), "purple": (150, 60, 205), "orange": (245, 140, 25),
}
COLOUR_NAMES = tuple(COLOURS)
HELD_OUT = frozenset((SHAPES[i], COLOUR_NAMES[(i + 1) % len(COLOUR_NAMES)]) for i in range(len(SHAPES)))
SIZES = {"small": 0.28, "large": 0.46}  # radius as a fraction of the grid cell
CELL_PHRASES = {
    (0, 0): ("in the top left", "in the top left corner"), (0, 1): ("at the top",),
    (0, 2): ("in the top right", "in the top right corner"), (1, 0): ("on the left",),
    (1, 1): ("in the center", "in the middle"), (1, 2): ("on the right",),
    (2, 0): ("in the bottom left", "in the bottom left corner"), (2, 1): ("at the bottom",),
    (2, 2): ("in the bottom right", "in the bottom right corner"),
}
PREFIXES = ("", "", "a picture of ", "an image with ", "there is ")
DROP_SIZE, DROP_COLOUR, DROP_POSITION = 0.5, 0.25, 0.4
TEMPLATES = ("a photo of the {}.", "a picture of the {}.", "an image showing the {}.",
             "the {} on a noisy background.", "a drawing of the {}.")
SUPERSAMPLE = 2


@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    size: str
    cell: tuple[int, int]


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of radius `r` centred on (cx, cy)."""
    if shape == "square":
        h = r * 0.8
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy - r * math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        return [(cx + rad * math.sin(k * math.pi / 5), cy - rad * math.cos(k * math.pi / 5))
                for k, rad in enumerate([r, r * 0.45] * 5)]
    if shape == "cross":
        w = r * 0.35
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}")


def render(objects: list[Shape], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw `objects` (with jittered centres) on a noisy, slightly tinted grey background."""
    big = size * SUPERSAMPLE
    cell = big / 3
    grey = int(rng.integers(25, 100))
    background = tuple(grey + int(tint) for tint in rng.integers(-12, 13, size=3))
    canvas = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        row, col = obj.cell
        cx, cy = (col + 0.5 + rng.uniform(-0.12, 0.12)) * cell, (row + 0.5 + rng.uniform(-0.12, 0.12)) * cell
        r = SIZES[obj.size] * cell
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[obj.colour])
        else:
            draw.polygon(_outline(obj.shape, cx, cy, r), fill=COLOURS[obj.colour])
    pixels = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    pixels += rng.normal(0.0, 12.0, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def describe(obj: Shape, rng: np.random.Generator) -> str:
    """One object as a noun phrase, dropping size, colour and position at random."""
    words = [obj.size] if rng.random() >= DROP_SIZE else []
    words += [obj.colour] if rng.random() >= DROP_COLOUR else []
    phrase = with_article(" ".join([*words, obj.shape]))
    if rng.random() >= DROP_POSITION:
        phrase += " " + pick(rng, CELL_PHRASES[obj.cell])
    return phrase


def caption(objects: list[Shape], rng: np.random.Generator) -> str:
    """A caption mentioning every object, in random order."""
    order = rng.permutation(len(objects))
    return pick(rng, PREFIXES) + join_phrases([describe(objects[i], rng) for i in order])


def random_scene(rng: np.random.Generator) -> list[Shape]:
    """1-3 objects in distinct cells, never using a held-out colour-shape pair."""
    count = int(rng.integers(1, 4))
    cells = rng.choice(9, size=count, replace=False)
    objects = []
    for cell in cells:
        while True:
            shape, colour = pick(rng, SHAPES), pick(rng, COLOUR_NAMES)
            if (shape, colour) not in HELD_OUT:
                break
        objects.append(Shape(shape, colour, pick(rng, tuple(SIZES)), divmod(int(cell), 3)))
    return objects


class ShapesSource:
    """Demo source of procedural shape scenes; every split has its own seeded random stream."""

    name = "shapes"
    templates = TEMPLATES
    classnames = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOUR_NAMES)

    def __init__(self, seed: int, image_size: int) -> None:
        self.seed = seed
        self.image_size = image_size

    def _rng(self, split: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, split])

    def train_pairs(self, count: int) -> Iterator[tuple[Image.Image, str]]:
        rng = self._rng(0)
        for _ in range(count):
            objects = random_scene(rng)
            yield render(objects, self.image_size, rng), caption(objects, rng)

    def retrieval_items(self, count: int, captions_per_image: int) -> Iterator[tuple[Image.Image, list[str]]]:
        rng = self._rng(1)
        for _ in range(count):
            objects = random_scene(rng)
            yield render(objects, self.image_size, rng), [caption(objects, rng) for _ in range(captions_per_image)]

    def zeroshot_items(self, per_class: int) -> Iterator[tuple[int, Image.Image]]:
        rng = self._rng(2)
        for label, name in enumerate(self.classnames):
            colour, shape = name.split(" ")
            for _ in range(per_class):
                obj = Shape(shape, colour, pick(rng, tuple(SIZES)), divmod(int(rng.integers(9)), 3))
                yield label, render([obj], self.image_size, rng)
