"""Capture stage: which camera took a photo and when, from its EXIF.

Bursts are told apart by camera (body serial number, else make and model)
and capture time to the hundredth of a second (DateTimeOriginal plus
SubSecTimeOriginal). JPEGs keep EXIF in their APP1 segment; TIFF-based RAWs
are EXIF themselves. Anything missing or damaged gives None: a photo without
a capture time is simply never part of a sequence.
"""

from __future__ import annotations

import calendar
import struct
import time
from dataclasses import dataclass

from sidecar.stages.raw import tiff_entries

_MAKE, _MODEL, _EXIF_IFD = 0x010F, 0x0110, 0x8769
_DATE_TIME_ORIGINAL, _SUB_SEC_ORIGINAL, _BODY_SERIAL = 0x9003, 0x9291, 0xA431
_SEARCHED_BYTES = 256 * 1024  # APP1 comes first in a JPEG; it is never deeper than this


@dataclass(frozen=True)
class Capture:
    camera: str | None
    """Body serial number, else make and model."""
    time: float | None
    """DateTimeOriginal + SubSecTimeOriginal, as seconds (the camera's clock, no time zone)."""


def read_capture(data: bytes) -> Capture:
    try:
        tiff = _exif_tiff(data)
        if tiff is None:
            return Capture(None, None)
        endian = "<" if tiff[:2] == b"II" else ">"
        (first,) = struct.unpack(endian + "I", tiff[4:8])
        main, _ = tiff_entries(tiff, endian, first)
        exif = tiff_entries(tiff, endian, main[_EXIF_IFD][0])[0] if _EXIF_IFD in main else {}
    except (struct.error, IndexError, KeyError):
        return Capture(None, None)

    def text(entries: dict[int, list[int]], tag: int) -> str | None:
        if tag not in entries or len(entries[tag]) != 2:
            return None
        where, size = entries[tag]
        value = bytes(tiff[where : where + size]).split(b"\x00", 1)[0].decode("ascii", "replace").strip()
        return value or None

    serial = text(exif, _BODY_SERIAL)
    make_model = " ".join(v for v in (text(main, _MAKE), text(main, _MODEL)) if v) or None
    return Capture(f"serial {serial}" if serial else make_model, _seconds(text(exif, _DATE_TIME_ORIGINAL), text(exif, _SUB_SEC_ORIGINAL)))


def _exif_tiff(data: bytes) -> memoryview | None:
    """The TIFF structure holding the EXIF (a view, not a copy of a large
    file): a JPEG's APP1 payload, or a TIFF-based file itself."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return memoryview(data)
    if data[:2] != b"\xff\xd8":
        return None
    start = data.find(b"Exif\x00\x00", 0, _SEARCHED_BYTES)
    return None if start < 0 else memoryview(data)[start + 6 :]


def _seconds(stamp: str | None, sub_second: str | None) -> float | None:
    if stamp is None:
        return None
    try:
        parsed = time.strptime(stamp, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    fraction = float(f"0.{sub_second}") if sub_second and sub_second.isdigit() else 0.0
    return calendar.timegm(parsed) + fraction
