"""RAW files read through their embedded JPEG previews, from synthetic files
built here with the structure cameras write."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from sidecar.errors import ImageUnreadable
from sidecar.protocol.messages import ImageRef
from sidecar.stages.decode import ImageLimits, decode_image
from sidecar.stages.raw import embedded_preview

LIMITS = ImageLimits(max_pixels=50_000_000, max_file_bytes=10**9)


def jpeg(width: int, height: int, value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((height, width, 3), value, np.uint8))[1].tobytes()


def tiff_raw(thumbnail: bytes, preview: bytes, sensor: tuple[int, int], endian: str = "<") -> bytes:
    """IFD0: a small thumbnail (JPEGInterchangeFormat) and two SubIFDs, a
    JPEG-compressed preview strip and the sensor's raw data, as NEF/DNG do."""
    mark = b"II" if endian == "<" else b"MM"
    blobs = bytearray()
    base = 8 + 3 * 200  # three IFD slots after the header, blobs after them

    def blob(data: bytes) -> int:
        offset = base + len(blobs)
        blobs.extend(data)
        return offset

    def ifd(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
        body = struct.pack(endian + "H", len(entries))
        for tag, kind, count, value in sorted(entries):
            packed = struct.pack(endian + "H", value) + b"\0\0" if kind == 3 and count == 1 else struct.pack(endian + "I", value)
            body += struct.pack(endian + "HHI", tag, kind, count) + packed
        return (body + struct.pack(endian + "I", next_ifd)).ljust(200, b"\0")

    thumb_at, preview_at, raw_at = blob(thumbnail), blob(preview), blob(b"\x11" * 64)
    ifd0 = ifd([(0x0201, 4, 1, thumb_at), (0x0202, 4, 1, len(thumbnail)), (0x014A, 4, 1, 8 + 200)])
    preview_ifd = ifd([(0x0103, 3, 1, 6), (0x0111, 4, 1, preview_at), (0x0117, 4, 1, len(preview))], next_ifd=8 + 400)
    raw_ifd = ifd([(0x0100, 4, 1, sensor[0]), (0x0101, 4, 1, sensor[1]), (0x0103, 3, 1, 1),
                   (0x0111, 4, 1, raw_at), (0x0117, 4, 1, 64)])
    magic = struct.pack(endian + "H", 42)
    return mark + magic + struct.pack(endian + "I", 8) + ifd0 + preview_ifd + raw_ifd + bytes(blobs)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_the_largest_embedded_jpeg_is_the_preview_with_the_sensor_scale(tmp_path: Path, endian: str) -> None:
    path = tmp_path / "DSC_0001.NEF"
    path.write_bytes(tiff_raw(jpeg(160, 120, 10), jpeg(640, 480, 200), sensor=(4000, 3000), endian=endian))
    decoded = decode_image(ImageRef(path=str(path)), LIMITS)
    assert decoded.pixels.shape == (480, 640, 3) and abs(int(decoded.pixels[0, 0, 0]) - 200) < 3
    assert decoded.sensor_scale == 6.25


def test_raf_keeps_its_jpeg_offset_in_the_header(tmp_path: Path) -> None:
    preview = jpeg(320, 240, 90)
    header = b"FUJIFILMCCD-RAW 0201FF393101" + b"\0" * (84 - 28) + struct.pack(">II", 200, len(preview))
    path = tmp_path / "DSCF0001.RAF"
    path.write_bytes(header.ljust(200, b"\0") + preview)
    decoded = decode_image(ImageRef(path=str(path)), LIMITS)
    assert decoded.pixels.shape == (240, 320, 3) and decoded.sensor_scale is None


def test_raws_without_a_readable_preview_are_unreadable(tmp_path: Path) -> None:
    no_preview = tiff_raw(b"not a jpeg", b"\xff\xd8\xff\xc3 lossless raw data", sensor=(10, 10))
    with pytest.raises(ImageUnreadable, match="no embedded JPEG preview"):
        embedded_preview(no_preview, "x.dng")
    cr3 = tmp_path / "IMG_0001.CR3"
    cr3.write_bytes(b"\0\0\0\x18ftypcrx " + b"\0" * 100)
    with pytest.raises(ImageUnreadable, match="no embedded JPEG"):
        decode_image(ImageRef(path=str(cr3)), LIMITS)
    with pytest.raises(ImageUnreadable):
        embedded_preview(b"II*\0\xff\xff\xff\xff", "loop.nef")  # a first IFD beyond the file


def bmff_box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def test_cr3_gives_the_first_tracks_full_size_jpeg(tmp_path: Path) -> None:
    full = jpeg(600, 400, 77)
    ftyp = bmff_box(b"ftyp", b"crx \0\0\0\x01crx isom")

    def file_with(offset: int) -> bytes:
        stsz = bmff_box(b"stsz", struct.pack(">III", 0, 0, 1) + struct.pack(">I", len(full)))
        co64 = bmff_box(b"co64", struct.pack(">II", 0, 1) + struct.pack(">Q", offset))
        trak = bmff_box(b"trak", bmff_box(b"mdia", bmff_box(b"minf", bmff_box(b"stbl", stsz + co64))))
        small_raw_trak = bmff_box(b"trak", bmff_box(b"mdia", b""))
        return ftyp + bmff_box(b"moov", trak + small_raw_trak)

    head = file_with(0)
    data = file_with(len(head) + 8) + bmff_box(b"mdat", full)
    path = tmp_path / "IMG_0001.CR3"
    path.write_bytes(data)
    decoded = decode_image(ImageRef(path=str(path)), LIMITS)
    assert decoded.pixels.shape == (400, 600, 3) and abs(int(decoded.pixels[0, 0, 0]) - 77) < 3
