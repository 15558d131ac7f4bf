"""Embed stage: image regions to L2-normalised appearance vectors."""

from __future__ import annotations

import cv2
import numpy as np

from sidecar.inference.manifest import EmbedderSpec
from sidecar.inference.session import OrtSession
from sidecar.stages import colour
from sidecar.stages.preprocess import halved, shrink, to_tensor

MAX_BATCH = 16
Box = list[float] | np.ndarray
# An image and the box of it to embed (None: the whole image).
Region = tuple[np.ndarray, Box | None]


def crop_bounds(image: np.ndarray, box: Box) -> tuple[int, int, int, int]:
    """The pixel bounds (x1, y1, x2, y2) `crop` cuts for `box`: clipped to
    the image, at least one pixel each way."""
    height, width = image.shape[:2]
    x1 = int(np.clip(np.floor(box[0]), 0, width - 1))
    y1 = int(np.clip(np.floor(box[1]), 0, height - 1))
    x2 = int(np.clip(np.ceil(box[2]), x1 + 1, width))
    y2 = int(np.clip(np.ceil(box[3]), y1 + 1, height))
    return x1, y1, x2, y2


def crop(image: np.ndarray, box: Box | None) -> np.ndarray:
    """The region of `box` ([x1, y1, x2, y2]; see `crop_bounds`), or the whole image."""
    if box is None:
        return image
    x1, y1, x2, y2 = crop_bounds(image, box)
    return image[y1:y2, x1:x2]


def resized(box: Box, change: float, width: int, height: int) -> list[float]:
    """`box` grown (change > 0) or shrunk (change < 0) by |change| of its width and height on each side,
    within a `width` x `height` image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = change * (x2 - x1), change * (y2 - y1)
    return [max(0.0, x1 - dx), max(0.0, y1 - dy), min(float(width), x2 + dx), min(float(height), y2 + dy)]


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def appearance_dim(spec: EmbedderSpec) -> int:
    """Length of the vectors an embedder's stage returns (the model's output, plus the colours when fused)."""
    return spec.output_dim + (colour.DIM if spec.colour_weight else 0)


class Embedder:
    """Appearance vectors: the model's embedding, fused with the livery's
    colour histogram when the manifest gives the colours a weight, and
    averaged over the box grown and shrunk when it gives the box a jitter."""

    def __init__(self, spec: EmbedderSpec, session: OrtSession) -> None:
        if spec.input.resize != "stretch":
            raise ValueError(f"{spec.name}: the embedder stretches crops; manifest says {spec.input.resize}")
        self.spec = spec
        self._session = session
        self.dim = appearance_dim(spec)
        # What the library keys references by: vectors fused or averaged differently are not comparable.
        self.key = (spec.name + (f"+colour{spec.colour_weight:g}" if spec.colour_weight else "")
                    + (f"+boxes{spec.box_jitter:g}" if spec.box_jitter else ""))

    def __call__(self, regions: list[Region]) -> np.ndarray:
        """(N, dim) float32 unit vectors for N regions; (0, dim) for none.
        With a box jitter, a region's vector is the normalised mean of the
        vectors of its box, the box grown and the box shrunk: the network's
        embedding moves a lot with a box a few pixels off, the detector's
        boxes move that much from photo to photo, and the mean moves less
        (bench.box_jitter)."""
        crops = [crop(image, b) for image, box in regions for b in self._boxes(image, box)]
        vectors = self.embed_crops(crops)
        if not self.spec.box_jitter:
            return vectors
        return l2_normalise(vectors.reshape(len(regions), 3, self.dim).sum(axis=1))

    def kept_region(self, image: np.ndarray, box: Box, longest: int | None = None) -> Region:
        """The part of `image` that embedding `box` reads (the box grown by
        the jitter), copied, and the box within it: what to hold of a photo
        to embed its box later, a few hundred kilobytes instead of the photo.
        With `longest`, the part is shrunk to at most that many pixels on its
        longest side (the box with it), as training keeps its crops."""
        height, width = image.shape[:2]
        x1, y1, x2, y2 = crop_bounds(image, resized(box, self.spec.box_jitter, width, height))
        region = image[y1:y2, x1:x2]
        kept = region if longest is None else shrink(region, longest)
        if kept is region:  # a view would keep the whole photo alive
            kept = region.copy()
        scale_x, scale_y = kept.shape[1] / region.shape[1], kept.shape[0] / region.shape[0]
        return kept, [(float(box[0]) - x1) * scale_x, (float(box[1]) - y1) * scale_y,
                      (float(box[2]) - x1) * scale_x, (float(box[3]) - y1) * scale_y]

    def _boxes(self, image: np.ndarray, box: Box | None) -> list[Box | None]:
        if not self.spec.box_jitter:
            return [box]
        height, width = image.shape[:2]
        whole = [0.0, 0.0, float(width), float(height)] if box is None else box
        return [box, resized(whole, self.spec.box_jitter, width, height), resized(whole, -self.spec.box_jitter, width, height)]

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 unit vectors for N BGR crops, one each, never averaged; (0, dim) for none."""
        size = (self.spec.input.width, self.spec.input.height)
        # Halved first where large (fast), for the colours too: they shrink to 64 px.
        crops = [halved(c, *size) for c in crops]
        vectors = [np.empty((0, self.spec.output_dim), np.float32)]
        for start in range(0, len(crops), MAX_BATCH):
            resized_crops = [cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in crops[start : start + MAX_BATCH]]
            (out,) = self._session.run([self.spec.output], {self.spec.input.name: to_tensor(resized_crops, self.spec.input)})
            vectors.append(out)
        embeddings = l2_normalise(np.concatenate(vectors))
        if not self.spec.colour_weight:
            return embeddings
        colours = np.stack([colour.colour_histogram(c) for c in crops]) if crops else np.empty((0, colour.DIM), np.float32)
        return colour.fuse(embeddings, colours, self.spec.colour_weight)
