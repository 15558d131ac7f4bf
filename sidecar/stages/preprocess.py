"""Image-to-tensor conversions shared by the models, as pure numpy/OpenCV
functions: the manifest's InputSpec says which one each model uses."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sidecar.inference.manifest import InputSpec

LETTERBOX_FILL = 114  # the grey YOLO-family detectors pad with


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: input = image * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float

    def to_image(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Map (N, 4) input-space boxes back to clipped original-image pixels."""
        out = boxes.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
        return out


def resize_by(image: np.ndarray, scale: float) -> np.ndarray:
    """The image scaled by `scale` (area averaging when shrinking), at least one pixel each way."""
    h, w = image.shape[:2]
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def halved(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` halved (means of 2x2 pixels) as long as it stays at least
    `width` x `height`, the size it is about to be resized to. OpenCV's area
    resize is several times faster for an exact halving than for any other
    factor, and the result is nearly the same. For the embed and number
    stages' inference; training keeps the one-step resize its models were
    built with, and so does the detector (halving first cost it F1 boxes)."""
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        even_h, even_w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        image = cv2.resize(image[:even_h, :even_w], (even_w // 2, even_h // 2), interpolation=cv2.INTER_AREA)
    return image


def shrink(image: np.ndarray, longest: int) -> np.ndarray:
    """`image` with its longest side at most `longest` pixels: training keeps
    crops just large enough for its augmentations, not whole photos."""
    scale = longest / max(image.shape[:2])
    return image if scale >= 1 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, centred on a grey canvas."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    resized = resize_by(image, scale)
    new_h, new_w = resized.shape[:2]
    pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), LETTERBOX_FILL, np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, Letterbox(scale, pad_x, pad_y)


def to_tensor(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """(N, H, W, 3) BGR uint8 images of the input size -> normalised NCHW float32.
    Channel plane by plane, in place: the same float32 operations as
    normalising the whole batch and transposing it, several times faster."""
    height, width = images[0].shape[:2] if images else (spec.height, spec.width)
    out = np.empty((len(images), 3, height, width), np.float32)
    sources = (2, 1, 0) if spec.channel_order == "rgb" else (0, 1, 2)
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    for image, planes in zip(images, out):
        for channel, (source, plane) in enumerate(zip(sources, planes)):
            plane[...] = image[:, :, source]
            plane *= spec.scale
            plane -= mean[channel]
            plane /= std[channel]
    return out
