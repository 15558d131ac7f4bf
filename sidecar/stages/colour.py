"""Colour stage: a livery's colours as a small unit vector.

A race car's livery is mostly its colours, and colours survive viewpoint
changes that move every edge and shape the CNN sees. The crop is shrunk,
its border (where the box holds track and sky) dropped, and its pixels
counted in a hue x saturation x value histogram; the square root of the
normalised counts makes the cosine of two vectors their Bhattacharyya
coefficient. Fused with the CNN embedding (`fuse`), it separates cars the
CNN finds alike: measured in the README (`liveryid eval`).
"""

from __future__ import annotations

import cv2
import numpy as np

HUE_BINS, SATURATION_BINS, VALUE_BINS = 12, 3, 3
DIM = HUE_BINS * SATURATION_BINS * VALUE_BINS
SIZE = 64
BORDER = 6
"""Pixels dropped on each side of the SIZE x SIZE crop: a box's edges hold background."""


def colour_histogram(crop: np.ndarray) -> np.ndarray:
    """(DIM,) float32 unit vector for a BGR crop."""
    small = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[BORDER:-BORDER, BORDER:-BORDER]
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    counts = cv2.calcHist([hsv], [0, 1, 2], None, [HUE_BINS, SATURATION_BINS, VALUE_BINS], [0, 180, 0, 256, 0, 256])
    root = np.sqrt(counts.ravel() / counts.sum())
    return (root / np.linalg.norm(root)).astype(np.float32)


def fuse(embeddings: np.ndarray, colours: np.ndarray, weight: float) -> np.ndarray:
    """Unit vectors whose cosine is (1 - weight) x the embeddings' cosine plus
    weight x the colours' cosine: one vector, so one index search scores both."""
    return np.hstack([np.sqrt(1.0 - weight) * embeddings, np.sqrt(weight) * colours]).astype(np.float32)
