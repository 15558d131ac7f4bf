"""Camera RAW files: the full-size JPEG preview the camera embedded, never a
demosaic. TIFF-based RAWs (NEF, NRW, CR2, ARW, SRF, SR2, DNG, ORF, RW2,
PEF) are walked through their IFDs; RAF keeps the JPEG's offset in its
header; CR3 (ISO base media) keeps the full-size JPEG as the first sample
of its first track. The largest baseline or progressive JPEG wins, and the
sensor size found beside it gives the preview-to-sensor scale."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sidecar.errors import ImageUnreadable

RAW_SUFFIXES = {".nef", ".nrw", ".cr2", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".pef", ".raf", ".cr3"}

# TIFF tags
_WIDTH, _HEIGHT, _COMPRESSION = 0x0100, 0x0101, 0x0103
_STRIP_OFFSETS, _STRIP_BYTES = 0x0111, 0x0117
_JPEG_OFFSET, _JPEG_LENGTH = 0x0201, 0x0202
_SUB_IFDS, _EXIF_IFD, _RW2_JPEG = 0x014A, 0x8769, 0x002E
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_MAX_IFDS = 64  # damaged files can loop


@dataclass(frozen=True)
class RawPreview:
    jpeg: bytes
    sensor_width: int | None
    sensor_height: int | None


def _is_viewable_jpeg(blob: bytes) -> bool:
    """A baseline/extended/progressive JPEG (SOF0-2), not lossless raw data (SOF3)."""
    if blob[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(blob):
        if blob[pos] != 0xFF:
            return False
        marker = blob[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return True
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return False
        (length,) = struct.unpack(">H", blob[pos + 2 : pos + 4])
        pos += 2 + length
    return False


def tiff_entries(data: bytes | memoryview, endian: str, offset: int) -> tuple[dict[int, list[int]], int]:
    """Tag -> values (integers; offsets for blobs) of one IFD, and the next IFD's offset."""
    (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
    entries: dict[int, list[int]] = {}
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind, n = struct.unpack(endian + "HHI", data[at : at + 8])
        size = _TYPE_SIZES.get(kind, 1) * n
        if kind in (3, 4, 13) and n <= 64:
            where = at + 8 if size <= 4 else struct.unpack(endian + "I", data[at + 8 : at + 12])[0]
            fmt = "H" if kind == 3 else "I"
            entries[tag] = list(struct.unpack(endian + fmt * n, data[where : where + size]))
        else:  # a blob: remember where it is and how long
            where = at + 8 if size <= 4 else struct.unpack(endian + "I", data[at + 8 : at + 12])[0]
            entries[tag] = [where, size]
    (next_ifd,) = struct.unpack(endian + "I", data[offset + 2 + 12 * count : offset + 6 + 12 * count])
    return entries, next_ifd


def _tiff_preview(data: bytes) -> RawPreview | None:
    endian = "<" if data[:2] == b"II" else ">"
    (first,) = struct.unpack(endian + "I", data[4:8])
    queue: list[int] = [first]
    seen: set[int] = set()
    jpegs: list[bytes] = []
    sensor: tuple[int, int] | None = None
    while queue and len(seen) < _MAX_IFDS:
        offset = queue.pop(0)
        if offset in seen or not 8 <= offset < len(data) - 2:
            continue
        seen.add(offset)
        entries, next_ifd = tiff_entries(data, endian, offset)
        queue += [next_ifd] + entries.get(_SUB_IFDS, []) + entries.get(_EXIF_IFD, [])
        blobs = []
        if _JPEG_OFFSET in entries and _JPEG_LENGTH in entries:
            blobs.append((entries[_JPEG_OFFSET][0], entries[_JPEG_LENGTH][0]))
        if entries.get(_COMPRESSION, [0])[0] in (6, 7) and len(entries.get(_STRIP_OFFSETS, [])) == 1:
            blobs.append((entries[_STRIP_OFFSETS][0], entries.get(_STRIP_BYTES, [0])[0]))
        if _RW2_JPEG in entries:
            blobs.append((entries[_RW2_JPEG][0], entries[_RW2_JPEG][1]))
        viewable = [data[o : o + n] for o, n in blobs if n > 0 and _is_viewable_jpeg(data[o : o + n])]
        jpegs += viewable
        if not viewable and _WIDTH in entries and _HEIGHT in entries:
            size = (entries[_WIDTH][0], entries[_HEIGHT][0])
            if sensor is None or size[0] * size[1] > sensor[0] * sensor[1]:
                sensor = size
    if not jpegs:
        return None
    return RawPreview(max(jpegs, key=len), *(sensor or (None, None)))


def _boxes(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """ISO-BMFF child boxes between start and end: type -> [(body start, body end)]."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            break
        found.setdefault(kind, []).append((pos + header, min(pos + size, end)))
        pos += size
    return found


def _cr3_preview(data: bytes) -> RawPreview | None:
    """moov/trak[0]/mdia/minf/stbl: the first sample's size (stsz) and offset (co64)."""
    top = _boxes(data, 0, len(data))
    for moov_start, moov_end in top.get(b"moov", []):
        traks = _boxes(data, moov_start, moov_end).get(b"trak", [])
        if not traks:
            return None
        box = traks[0]
        for kind in (b"mdia", b"minf", b"stbl"):
            children = _boxes(data, *box).get(kind)
            if not children:
                return None
            box = children[0]
        tables = _boxes(data, *box)
        if b"stsz" not in tables or b"co64" not in tables:
            return None
        stsz, co64 = tables[b"stsz"][0][0], tables[b"co64"][0][0]
        sample_size, count = struct.unpack(">II", data[stsz + 4 : stsz + 12])
        size = sample_size or struct.unpack(">I", data[stsz + 12 : stsz + 16])[0]
        (offset,) = struct.unpack(">Q", data[co64 + 8 : co64 + 16])
        blob = data[offset : offset + size]
        return RawPreview(blob, None, None) if count and _is_viewable_jpeg(blob) else None
    return None


def embedded_preview(data: bytes, source: str) -> RawPreview:
    """The largest embedded JPEG of a RAW file's bytes."""
    preview = None
    try:
        if data[:16] == b"FUJIFILMCCD-RAW ":
            offset, length = struct.unpack(">II", data[84:92])
            blob = data[offset : offset + length]
            preview = RawPreview(blob, None, None) if _is_viewable_jpeg(blob) else None
        elif data[:4] in (b"II*\x00", b"MM\x00*", b"IIRO", b"IIU\x00"):
            preview = _tiff_preview(data)
        elif data[4:12] == b"ftypcrx ":
            preview = _cr3_preview(data)
    except (struct.error, IndexError):
        preview = None
    if preview is None:
        raise ImageUnreadable(
            f"{source}: no embedded JPEG preview found (RAW formats read: TIFF-based RAWs, RAF and CR3)",
            {"source": source},
        )
    return preview
