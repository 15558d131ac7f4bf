from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from sidecar.errors import ImageTooLarge, ImageUnreadable, InvalidParams, MmapOutOfRange
from sidecar.protocol.messages import ImageRef, MmapImage
from sidecar.stages.decode import ImageLimits, decode_photo, load_image
from sidecar.stages.imagesize import header_size

LIMITS = ImageLimits(max_pixels=10_000_000, max_file_bytes=50_000_000)


def gradient(height: int = 30, width: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 6, y * 8, (x + y) * 3], axis=2).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tiff"])
def test_formats_decode_to_bgr_and_headers_give_their_size(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"g{suffix}"
    assert cv2.imwrite(str(path), gradient())
    assert header_size(path.read_bytes()) == (40, 30)
    image = load_image(ImageRef(path=str(path)), LIMITS)
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - gradient()).mean() < 8


def exif_orientation_jpeg(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment whose Orientation tag is set."""
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    entry = struct.pack(">HHII", 0x0112, 3, 1, orientation << 16)
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + entry + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_orientation_jpeg(gradient(30, 40), orientation=6))  # 90° clockwise
    assert load_image(ImageRef(path=str(path)), LIMITS).shape == (40, 30, 3)


def test_missing_directory_and_corrupt_files_are_unreadable(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    for path in (tmp_path / "nope.jpg", tmp_path, tmp_path / "bad.jpg"):
        with pytest.raises(ImageUnreadable):
            load_image(ImageRef(path=str(path)), LIMITS)


def test_oversized_images_are_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    assert cv2.imwrite(str(path), np.zeros((4000, 3000, 3), np.uint8))
    with pytest.raises(ImageTooLarge) as caught:
        load_image(ImageRef(path=str(path)), ImageLimits(max_pixels=1_000_000, max_file_bytes=10**9))
    assert caught.value.data["width"] == 3000
    with pytest.raises(ImageTooLarge):
        load_image(ImageRef(path=str(path)), ImageLimits(max_pixels=10**9, max_file_bytes=100))


def write_raw(tmp_path: Path, pixels: np.ndarray, offset: int) -> Path:
    path = tmp_path / "shared.bin"
    path.write_bytes(b"\x07" * offset + pixels.tobytes() + b"\x09" * 11)
    return path


@pytest.mark.parametrize("order, to_bgr", [
    ("rgb", lambda p: p[..., ::-1]),
    ("bgr", lambda p: p),
    ("rgba", lambda p: p[..., 2::-1]),
    ("bgra", lambda p: p[..., :3]),
])
def test_raw_mmap_pixels_in_every_channel_order(tmp_path: Path, order: str, to_bgr: object) -> None:
    channels = 4 if order.endswith("a") else 3
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    path = write_raw(tmp_path, pixels, offset=4097)  # not page-aligned
    ref = MmapImage(path=str(path), offset=4097, length=pixels.size, encoding="raw", shape=[5, 7, channels],
                    dtype="uint8", channel_order=order)  # type: ignore[arg-type]
    np.testing.assert_array_equal(load_image(ImageRef(mmap=ref), LIMITS), to_bgr(pixels))  # type: ignore[operator]


def test_gray_raw_pixels_become_three_channels(tmp_path: Path) -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_raw(tmp_path, pixels, offset=0)
    ref = MmapImage(path=str(path), offset=0, length=12, encoding="raw", shape=[3, 4], dtype="uint8")
    image = load_image(ImageRef(mmap=ref), LIMITS)
    assert image.shape == (3, 4, 3) and (image[..., 0] == pixels).all()


def test_encoded_bytes_inside_an_mmap(tmp_path: Path) -> None:
    png = cv2.imencode(".png", gradient())[1].tobytes()
    path = tmp_path / "buffer.bin"
    path.write_bytes(b"\x00" * 333 + png + b"\xff" * 50)
    ref = MmapImage(path=str(path), offset=333, length=len(png), encoding="png")
    np.testing.assert_array_equal(load_image(ImageRef(mmap=ref), LIMITS), gradient())


def test_mmap_bounds_are_checked_before_mapping(tmp_path: Path) -> None:
    path = write_raw(tmp_path, np.zeros((2, 2, 3), np.uint8), offset=0)  # 12 + 11 bytes
    beyond = MmapImage(path=str(path), offset=20, length=12, encoding="raw", shape=[2, 2, 3], dtype="uint8")
    with pytest.raises(MmapOutOfRange):
        load_image(ImageRef(mmap=beyond), LIMITS)
    short = MmapImage(path=str(path), offset=0, length=11, encoding="raw", shape=[2, 2, 3], dtype="uint8")
    with pytest.raises(MmapOutOfRange):
        load_image(ImageRef(mmap=short), LIMITS)
    wrong_channels = MmapImage(path=str(path), offset=0, length=12, encoding="raw", shape=[2, 2, 3], dtype="uint8",
                               channel_order="rgba")
    with pytest.raises(InvalidParams):
        load_image(ImageRef(mmap=wrong_channels), LIMITS)
    with pytest.raises(ImageUnreadable):
        load_image(ImageRef(mmap=MmapImage(path=str(tmp_path / "gone"), offset=0, length=1, encoding="jpeg")), LIMITS)


def test_header_size_rejects_what_it_does_not_know() -> None:
    assert header_size(b"GIF89a....") is None
    assert header_size(b"\xff\xd8\xff") is None
    assert header_size(b"") is None


def test_a_large_jpeg_is_decoded_smaller_when_asked_and_says_by_how_much() -> None:
    gradient = np.tile(np.linspace(0, 255, 4200, dtype=np.uint8)[None, :, None], (300, 1, 3))
    jpeg = cv2.imencode(".jpg", gradient)[1].tobytes()
    full = decode_photo(jpeg, "photo.jpg", LIMITS)
    assert full.pixels.shape == (300, 4200, 3) and full.scale == 1.0 and full.size == (4200, 300)
    smaller = decode_photo(jpeg, "photo.jpg", LIMITS, min_side=2048)  # 1/2 keeps 2100 px; 1/4 would be 1050
    assert smaller.pixels.shape == (150, 2100, 3) and smaller.scale == 2.0 and smaller.size == (4200, 300)
    assert decode_photo(jpeg, "photo.jpg", LIMITS, min_side=1000).scale == 4.0
    assert decode_photo(jpeg, "photo.jpg", LIMITS, min_side=4200).scale == 1.0  # never below the asked side
    png = cv2.imencode(".png", gradient)[1].tobytes()
    assert decode_photo(png, "photo.png", LIMITS, min_side=1000).scale == 1.0  # only JPEGs scale in the decoder


def test_a_turned_jpeg_decoded_smaller_keeps_its_turned_size() -> None:
    jpeg = exif_orientation_jpeg(gradient(300, 4200), orientation=6)  # 90° clockwise: 300 wide, 4200 tall
    decoded = decode_photo(jpeg, "photo.jpg", LIMITS, min_side=2048)
    assert decoded.pixels.shape == (2100, 150, 3) and decoded.size == (300, 4200)
