"""Augmentations for re-identification training (OpenCV over numpy, seeded).

What is deliberately not here: hue or saturation jitter, and colour
swaps. A livery *is* its colours; a red car jittered to orange teaches the
model that two teams are one. Brightness and contrast change with the sky
and the camera, so those vary.

What is here although it touches the livery: horizontal flips. A car's left
side is close to the mirror image of its right side (the same stripes and
colour blocks, mirrored), so a flip stands in for the viewpoint the
references lack; mirrored numbers and sponsor text are the price, and the
number reader, not the embedder, is the stage that reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentRecipe:
    min_area: float = 0.8
    """A random crop keeps at least this share of the box (a detector's box is never exact)."""
    aspect_jitter: float = 0.1
    flip: float = 0.5
    brightness: float = 0.2
    """Pixels scale by 1 ± this and shift by ± 100x this (0-255 scale)."""
    erase: float = 0.5
    """Probability of one random erasing rectangle (Zhong et al. 2020): an occluding car, a marshal, a fence post."""
    erase_area: tuple[float, float] = (0.02, 0.2)


def augment(crop: np.ndarray, size: tuple[int, int], recipe: AugmentRecipe, rng: np.random.Generator) -> np.ndarray:
    """A randomly altered copy of a BGR crop, resized to `size` (width, height) as the embedder resizes."""
    height, width = crop.shape[:2]
    area = rng.uniform(recipe.min_area, 1.0)
    out_h = min(height, max(1, round(height * math.sqrt(area) * rng.uniform(1 - recipe.aspect_jitter, 1 + recipe.aspect_jitter))))
    out_w = min(width, max(1, round(width * math.sqrt(area) * rng.uniform(1 - recipe.aspect_jitter, 1 + recipe.aspect_jitter))))
    top, left = rng.integers(0, height - out_h + 1), rng.integers(0, width - out_w + 1)
    region = crop[top : top + out_h, left : left + out_w]
    if rng.random() < recipe.flip:
        region = region[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(region), size, interpolation=cv2.INTER_AREA)
    gain = rng.uniform(1 - recipe.brightness, 1 + recipe.brightness)
    shift = rng.uniform(-100 * recipe.brightness, 100 * recipe.brightness)
    out = np.clip(out.astype(np.float32) * gain + shift, 0, 255).astype(np.uint8)
    if rng.random() < recipe.erase:
        erase_rectangle(out, recipe.erase_area, rng)
    return out


def erase_rectangle(image: np.ndarray, area: tuple[float, float], rng: np.random.Generator) -> None:
    """Fill one random rectangle of `image` (in place) with uniform noise."""
    height, width = image.shape[:2]
    for _ in range(10):  # a drawn shape may not fit; retry a few times, as the paper does
        target = rng.uniform(*area) * height * width
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        h, w = int(math.sqrt(target * aspect)), int(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            top, left = rng.integers(0, height - h), rng.integers(0, width - w)
            image[top : top + h, left : left + w] = rng.integers(0, 256, (h, w, image.shape[2]), dtype=np.uint8)
            return
