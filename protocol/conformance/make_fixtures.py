"""Writes the tiny images the conformance vectors refer to (deterministic;
committed, so both test suites use the same bytes). Run from anywhere:
    python protocol/conformance/make_fixtures.py
"""

import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent / "fixtures"


def png(width: int, height: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def main() -> None:
    HERE.mkdir(exist_ok=True)
    # A flat grey 64x48 image: decodes, contains no vehicle.
    (HERE / "blank.png").write_bytes(png(64, 48, b"".join(b"\x00" + b"\x80" * 64 * 3 for _ in range(48))))
    # A PNG header claiming 40000x40000 pixels (1.6 G): refused before decoding.
    (HERE / "huge.png").write_bytes(png(40000, 40000, b"")[:33])
    # A JPEG start marker followed by noise.
    (HERE / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    # Raw RGB pixels, 16 wide and 8 high, after a 100-byte header (an offset
    # that is not page-aligned, as a client's shared buffer often is not).
    pixels = bytes((x * 16 + y * 8 + c * 50) % 256 for y in range(8) for x in range(16) for c in range(3))
    (HERE / "raw-rgb-16x8.bin").write_bytes(b"H" * 100 + pixels)


if __name__ == "__main__":
    main()
