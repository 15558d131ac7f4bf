"""Decode stage: an image reference (file path or client-written mmap) to a
BGR uint8 array, with every bound checked before bytes are touched."""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import cv2
import numpy as np

from sidecar.errors import ImageTooLarge, ImageUnreadable, InvalidParams, MmapOutOfRange
from sidecar.protocol.messages import ImageRef, MmapImage
from sidecar.stages.imagesize import header_size
from sidecar.stages.raw import RAW_SUFFIXES, embedded_preview

IMAGE_FORMATS = ["jpeg", "png", "webp", "tiff"]
DETECTION_MARK = "#detection="
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"} | RAW_SUFFIXES

# raw channel order -> (channels, conversion to BGR)
_RAW_LAYOUTS: dict[str, tuple[int, int | None]] = {
    "bgr": (3, None),
    "rgb": (3, cv2.COLOR_RGB2BGR),
    "bgra": (4, cv2.COLOR_BGRA2BGR),
    "rgba": (4, cv2.COLOR_RGBA2BGR),
    "gray": (1, cv2.COLOR_GRAY2BGR),
}


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_file_bytes: int


# libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 of its size for a fraction of the
# cost (DCT scaling): largest reduction first.
_REDUCED_JPEG = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray
    """(H, W, 3) BGR uint8, EXIF orientation applied."""
    sensor_scale: float | None = None
    """For a RAW file's embedded preview: sensor pixels per preview pixel."""
    scale: float = 1.0
    """Photo pixels per decoded pixel: more than 1 when a large JPEG was
    decoded smaller (`min_side`); boxes found on `pixels` times this are
    the photo's (the preview's, for a RAW)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the photo (of the preview, for a RAW)."""
        return round(self.pixels.shape[1] * self.scale), round(self.pixels.shape[0] * self.scale)


def source_of(ref: ImageRef) -> str:
    """How the library records where a reference came from: the file's path,
    or the client's memory-mapped buffer (which does not outlive the request)."""
    return ref.path if ref.path is not None else f"mmap:{ref.mmap.path}@{ref.mmap.offset}"  # type: ignore[union-attr]


def detection_source(path: str, detection_id: int) -> str:
    """The source of a reference made from a confirmed detection: its photo, and which detection."""
    return f"{path}{DETECTION_MARK}{detection_id}"


def reopen(source: str) -> ImageRef | None:
    """The image a recorded source names, when it can be read again: a file
    (a confirmed detection's photo included), not a buffer."""
    return None if source.startswith("mmap:") else ImageRef(path=source.split(DETECTION_MARK, 1)[0])


def load_image(ref: ImageRef, limits: ImageLimits) -> np.ndarray:
    """The referenced image as an (H, W, 3) BGR uint8 array, EXIF orientation applied."""
    return decode_image(ref, limits).pixels


def decode_image(ref: ImageRef, limits: ImageLimits, min_side: int | None = None) -> Decoded:
    """A path's photo (see `decode_photo` for `min_side`) or a client's buffer (decoded whole)."""
    if ref.mmap is not None:
        return Decoded(_load_mmap(ref.mmap, limits))
    assert ref.path is not None
    return decode_photo(read_file(ref.path, limits), ref.path, limits, min_side)


def decode_photo(data: bytes, source: str, limits: ImageLimits, min_side: int | None = None) -> Decoded:
    """A photo file's bytes; for a camera RAW (by its suffix), its embedded
    JPEG preview. With `min_side`, a JPEG whose longest side is at least
    twice that is decoded at 1/2, 1/4 or 1/8 of its size, the most that
    keeps its longest side at `min_side` or more."""
    raw = os.path.splitext(source)[1].lower() in RAW_SUFFIXES
    preview = embedded_preview(data, source) if raw else None
    encoded = preview.jpeg if preview is not None else data
    pixels, size = _decode_with_size(encoded, source, limits, min_side)
    # Long sides: EXIF orientation may have turned the decoded image.
    full_side = max(size) if size is not None else max(pixels.shape[:2])
    scale = full_side / max(pixels.shape[:2])
    sensor_scale = None
    if preview is not None and preview.sensor_width and preview.sensor_height:
        sensor_scale = round(max(preview.sensor_width, preview.sensor_height) / full_side, 4)
    return Decoded(pixels, sensor_scale, scale)


def read_file(path: str, limits: ImageLimits) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > limits.max_file_bytes:
            raise ImageTooLarge(
                f"{path} is {size} bytes, over the {limits.max_file_bytes}-byte limit",
                {"path": path, "bytes": size, "max_bytes": limits.max_file_bytes},
            )
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ImageUnreadable(f"no such file: {path}", {"path": path}) from None
    except IsADirectoryError:
        raise ImageUnreadable(f"{path} is a directory, not an image", {"path": path}) from None
    except OSError as exc:
        raise ImageUnreadable(f"cannot read {path}: {exc.strerror}", {"path": path}) from None


def decode_bytes(data: bytes | memoryview, source: str, limits: ImageLimits) -> np.ndarray:
    return _decode_with_size(data, source, limits, None)[0]


def _decode_with_size(data: bytes | memoryview, source: str, limits: ImageLimits, min_side: int | None
                      ) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The decoded image and the (width, height) its header gives, checked against the limits first."""
    size = header_size(bytes(data[:65536]))
    if size is not None and size[0] * size[1] > limits.max_pixels:
        raise ImageTooLarge(
            f"{source} is {size[0]}x{size[1]} pixels, over the {limits.max_pixels}-pixel limit",
            {"source": source, "width": size[0], "height": size[1], "max_pixels": limits.max_pixels},
        )
    flag = cv2.IMREAD_COLOR
    if min_side is not None and size is not None and bytes(data[:2]) == b"\xff\xd8":
        flag = next((f for factor, f in _REDUCED_JPEG if max(size) / factor >= min_side), flag)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ImageUnreadable(f"{source} is not a decodable JPEG, PNG, WebP or TIFF image", {"source": source})
    return image, size


def _load_mmap(ref: MmapImage, limits: ImageLimits) -> np.ndarray:
    bounds = {"path": ref.path, "offset": ref.offset, "length": ref.length}
    try:
        with open(ref.path, "rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            if ref.offset + ref.length > file_size:
                raise MmapOutOfRange(
                    f"mmap range [{ref.offset}, {ref.offset + ref.length}) lies beyond the end of "
                    f"{ref.path} ({file_size} bytes)",
                    {**bounds, "file_size": file_size},
                )
            # mmap offsets must be page-aligned: map from the page start.
            start = ref.offset - ref.offset % mmap.ALLOCATIONGRANULARITY
            with mmap.mmap(handle.fileno(), ref.offset + ref.length - start, offset=start, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)[ref.offset - start :]
                try:
                    if ref.encoding == "raw":
                        return _raw_pixels(view, ref, limits)
                    return decode_bytes(view, f"mmap {ref.path}@{ref.offset}", limits)
                finally:
                    view.release()
    except FileNotFoundError:
        raise ImageUnreadable(f"no such mmap file: {ref.path}", bounds) from None
    except OSError as exc:
        raise ImageUnreadable(f"cannot map {ref.path}: {exc.strerror}", bounds) from None


def _raw_pixels(view: memoryview, ref: MmapImage, limits: ImageLimits) -> np.ndarray:
    if ref.shape is None or ref.dtype is None:
        raise InvalidParams("raw mmap images need `shape` and `dtype`", {"field": "params.image.mmap.shape"})
    order = ref.channel_order or ("gray" if len(ref.shape) == 2 else "rgb")
    channels, conversion = _RAW_LAYOUTS[order]
    shape_channels = ref.shape[2] if len(ref.shape) == 3 else 1
    if shape_channels != channels:
        raise InvalidParams(
            f"shape {ref.shape} has {shape_channels} channels but channel_order {order!r} needs {channels}",
            {"field": "params.image.mmap.shape"},
        )
    height, width = ref.shape[0], ref.shape[1]
    if height * width > limits.max_pixels:
        raise ImageTooLarge(f"raw image {width}x{height} is over the {limits.max_pixels}-pixel limit",
                            {"width": width, "height": height, "max_pixels": limits.max_pixels})
    expected = height * width * channels
    if expected != ref.length:
        raise MmapOutOfRange(
            f"shape {ref.shape} of uint8 needs {expected} bytes but the mmap length is {ref.length}",
            {"length": ref.length, "expected": expected},
        )
    pixels = np.frombuffer(view, np.uint8, count=expected).reshape(height, width, channels)
    if conversion is None:
        return pixels.copy()  # the map closes on return
    return cv2.cvtColor(pixels, conversion)
