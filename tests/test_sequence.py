"""Bursts: capture times from EXIF, grouping, tracks and what a confident frame decides."""

from __future__ import annotations

import calendar
import struct
import time
from pathlib import Path

import cv2
import numpy as np

from bench.datasets import EPFL_DIR
from sidecar.stages.capture import Capture, read_capture
from sidecar.stages.sequence import Shot, Sighting, bursts, propagate, tracks


def exif_jpeg(tags: dict[int, str], exif_tags: dict[int, str]) -> bytes:
    """A small JPEG whose APP1 holds these ASCII tags (little-endian TIFF)."""

    def ifd(entries: dict[int, str | int], start: int) -> bytes:
        head, blobs = b"", b""
        data_at = start + 2 + 12 * len(entries) + 4
        for tag, value in sorted(entries.items()):
            if isinstance(value, int):  # a pointer (LONG)
                head += struct.pack("<HHII", tag, 4, 1, value)
                continue
            raw = value.encode() + b"\x00"
            if len(raw) <= 4:
                head += struct.pack("<HHI", tag, 2, len(raw)) + raw.ljust(4, b"\x00")
            else:
                head += struct.pack("<HHII", tag, 2, len(raw), data_at + len(blobs))
                blobs += raw
        return struct.pack("<H", len(entries)) + head + struct.pack("<I", 0) + blobs

    first = ifd({**tags, 0x8769: 0}, 8)
    main = ifd({**tags, 0x8769: 8 + len(first)}, 8)
    tiff = b"II*\x00" + struct.pack("<I", 8) + main + ifd(exif_tags, 8 + len(main))  # type: ignore[arg-type]
    app1 = b"Exif\x00\x00" + tiff
    image = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    return image[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + image[2:]


def test_the_camera_and_capture_time_come_from_exif() -> None:
    data = exif_jpeg({0x010F: "Canon", 0x0110: "EOS R3"}, {0x9003: "2026:06:14 15:02:07", 0x9291: "35", 0xA431: "0123"})
    expected = calendar.timegm(time.strptime("2026:06:14 15:02:07", "%Y:%m:%d %H:%M:%S")) + 0.35
    assert read_capture(data) == Capture("serial 0123", expected)
    no_serial = exif_jpeg({0x010F: "Canon", 0x0110: "EOS R3"}, {0x9003: "2026:06:14 15:02:07"})
    assert read_capture(no_serial) == Capture("Canon EOS R3", expected - 0.35)


def test_missing_or_damaged_exif_gives_nothing() -> None:
    plain = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert read_capture(plain) == Capture(None, None)
    assert read_capture(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00\xff\xff\xff\x7f") == Capture(None, None)
    assert read_capture(exif_jpeg({0x010F: "X"}, {0x9003: "not a date"})) == Capture("X", None)
    assert read_capture(b"") == Capture(None, None)


def test_epfl_frames_carry_the_capture_times_of_their_times_file(dev_data: Path) -> None:
    times = (EPFL_DIR / "times_04.txt").read_text().split("\n")
    capture = read_capture((EPFL_DIR / "tripod_seq_04_020.jpg").read_bytes())
    assert capture.camera == "NIKON CORPORATION NIKON D70"
    assert time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(capture.time)) == times[19].strip()


def sighting(key: int, decision: str = "unknown", car: str | None = None, candidates: tuple[str, ...] = (),
             conflict: bool = False) -> Sighting:
    return Sighting(key, decision, car, list(candidates), conflict)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, np.float32)
    return vector / np.linalg.norm(vector)


# Two cars that look nothing alike, each drifting a little from frame to frame.
VECTORS = {key: unit(1.0, 0.1 * (key % 10), 0.0) if key < 100 else unit(0.0, 0.1 * (key % 10), 1.0) for key in range(200)}


def vectors(keys: list[int]) -> np.ndarray:
    return np.stack([VECTORS[k] for k in keys])


def test_bursts_are_per_camera_and_split_at_gaps() -> None:
    shots = [Shot("A", 10.0, []), Shot("A", 10.4, []), Shot("B", 10.2, []), Shot("A", 13.0, []), Shot("B", 10.9, []),
             Shot(None, 10.1, []), Shot("A", None, []), Shot("A", 9.9, [])]
    found = bursts(shots, max_gap_s=1.0)
    assert sorted([[s.time for s in burst] for burst in found]) == [[9.9, 10.0, 10.4], [10.2, 10.9]]


def test_two_cars_in_one_burst_stay_two_tracks_whatever_the_order() -> None:
    burst = [Shot("A", 0.0, [sighting(1), sighting(101)]), Shot("A", 0.2, [sighting(102), sighting(2)]),
             Shot("A", 0.4, [sighting(3)]), Shot("A", 0.6, [sighting(103), sighting(4)])]
    found = sorted(sorted(s.key for s in track) for track in tracks(burst, 0.9, vectors))
    # 102 has no partner in the third frame, so 103 starts alone (and a lone sighting is no track).
    assert found == [[1, 2, 3, 4], [101, 102]]


def test_a_confident_frame_names_the_open_frames_of_its_track() -> None:
    shots = [
        Shot("A", 0.0, [sighting(1, "match", "car-7"), sighting(101, "match", "car-9")]),
        Shot("A", 0.3, [sighting(2), sighting(102, "ambiguous", None, ("car-9", "car-8"))]),
        Shot("A", 0.6, [sighting(3, "ambiguous", None, ("car-5", "car-6")), sighting(103, "ambiguous", None, ("car-9",), conflict=True)]),
        Shot("A", 5.0, [sighting(4)]),  # after the gap: another burst
    ]
    decided = {d.key: d for d in propagate(shots, 1.0, 0.9, vectors)}
    assert set(decided) == {2, 102}  # 3: car-7 not among its candidates; 103: its number disagreed
    assert (decided[2].car_id, decided[2].frames, decided[2].confident) == ("car-7", 3, 1)
    assert decided[102].car_id == "car-9"


def test_a_track_naming_two_cars_decides_nothing() -> None:
    shots = [Shot("A", 0.0, [sighting(1, "match", "car-7")]), Shot("A", 0.3, [sighting(2)]),
             Shot("A", 0.6, [sighting(3, "match", "car-8")])]
    assert propagate(shots, 1.0, 0.9, vectors) == []
    assert propagate(shots, 1.0, 0.9999, vectors) == []  # links too strict: no tracks at all
