"""Enroll, identify, tag, review and export through the real sidecar and the
default models, including a kill in the middle of writing."""

from __future__ import annotations

import hashlib
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.datasets import epfl_frames
from sidecar.library.library import Library
from tests.conftest import FIXTURES
from tests.sidecar_process import SidecarProcess

BLANK = str(FIXTURES / "blank.png")


def open_library(process: SidecarProcess, folder: Path) -> dict:
    return process.request("initialize", {"library": str(folder)}, id="init")["result"]


def test_library_methods_need_an_open_library() -> None:
    process = SidecarProcess("json")
    try:
        error = process.request("cars.list", id=1)["error"]
        assert error["code"] == -32006 and "initialize" in error["message"]
    finally:
        process.kill()


def test_a_second_process_gets_library_in_use(tmp_path: Path) -> None:
    first, second = SidecarProcess("json"), SidecarProcess("json")
    try:
        open_library(first, tmp_path)
        error = second.request("initialize", {"library": str(tmp_path)}, id=1)["error"]
        assert error["code"] == -32005 and "in use" in error["message"]
    finally:
        first.kill()
        second.kill()


def test_enroll_identify_tag_review_and_export(tmp_path: Path, dev_data: Path) -> None:
    frames = {(f.car, f.frame): f for f in epfl_frames()}
    event = tmp_path / "event"
    event.mkdir()
    for car in (1, 2, 3):
        shutil.copy(frames[(car, 2)].path, event / f"car{car}.jpg")
    (event / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    originals = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in event.iterdir()}

    process = SidecarProcess("json")
    try:
        assert open_library(process, tmp_path / "lib")["library"]["cars"] == 0
        car_ids = {}
        for car in (1, 2, 3):
            refs = [frames[(car, 1)], frames[(car, 3)]]
            enrolled = process.request("enroll", {
                "car": {"label": f"#{car} EPFL", "number": str(car), "team": "Show"},
                "images": [{"path": str(f.path)} for f in refs], "boxes": [list(f.box) for f in refs],
            }, id=f"enroll{car}")["result"]
            assert enrolled["car"]["references"] == 2 and enrolled["warnings"] == []
            car_ids[car] = enrolled["car"]["id"]

        # identify: the vehicle over the labelled car names that car
        for car in (1, 2, 3):
            result = process.request("identify", {"image": {"path": str(event / f"car{car}.jpg")}, "min_score": 0.1},
                                     id=f"identify{car}")["result"]
            truth = np.asarray(frames[(car, 2)].box)
            best = max(result["vehicles"], key=lambda v: _iou(np.asarray(v["box"]), truth))
            assert best["candidates"][0]["car_id"] == car_ids[car]

        tagged = process.request("tag", {"images": [str(event)], "min_score": 0.1}, id="tag")["result"]
        assert (tagged["total"], tagged["tagged"], tagged["skipped"]) == (4, 3, 0)
        assert [f["code"] for f in tagged["failed"]] == [-32001]
        again = process.request("tag", {"images": [str(event)]}, id="again")["result"]
        assert (again["tagged"], again["skipped"]) == (0, 3)

        everything = process.request("results.query", {}, id="all")["result"]
        assert everything["total"] == tagged["matched"] + tagged["ambiguous"] + tagged["unknown"] > 0
        one = everything["detections"][0]
        confirmed = process.request("results.confirm", {"detection_id": one["detection_id"], "car_id": car_ids[2],
                                                        "add_as_reference": True}, id="confirm")["result"]
        assert confirmed["detection"]["review"] == "confirmed" and confirmed["detection"]["car_id"] == car_ids[2]
        assert confirmed["reference"]["car_id"] == car_ids[2]
        assert process.request("cars.get", {"id": car_ids[2]}, id="get")["result"]["car"]["references"] == 3
        pending = process.request("results.query", {"review": "pending"}, id="pending")["result"]
        assert pending["total"] == everything["total"] - 1

        csv_out = process.request("export", {"format": "csv"}, id="csv")["result"]
        lines = Path(csv_out["files"][0]).read_text().splitlines()
        assert lines[0].startswith("photo,detection_id,x1") and len(lines) == everything["total"] + 1
        xmp = process.request("export", {"format": "xmp"}, id="xmp")["result"]
        sidecar_file = Path(one["path"]).with_suffix(".xmp")
        assert str(sidecar_file) in xmp["files"]
        text = sidecar_file.read_text()
        assert "<rdf:li>#2 EPFL</rdf:li>" in text and "<rdf:li>Cars|#2 EPFL</rdf:li>" in text
        assert process.request("export", {"format": "xmp"}, id="xmp2")["result"]["skipped"] == xmp["files"]
        assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in event.iterdir() if p.suffix != ".xmp"} == originals
    finally:
        process.kill()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_kill_mid_enrollment_loses_nothing_committed(tmp_path: Path) -> None:
    process = SidecarProcess("msgpack")
    open_library(process, tmp_path)
    for i in range(40):
        process.send({"jsonrpc": "2.0", "id": i, "method": "enroll", "params": {
            "car": {"label": f"car {i}"}, "images": [{"path": BLANK}], "boxes": [[4, 4, 40 + i % 20, 40]]}})
    answered = [process.read()["id"] for _ in range(8)]
    process.process.send_signal(signal.SIGKILL)
    process.process.wait()

    reopened = SidecarProcess("json")
    try:
        info = open_library(reopened, tmp_path)["library"]
        cars = reopened.request("cars.list", id="list")["result"]["cars"]
        labels = {c["label"] for c in cars}
        assert {f"car {i}" for i in answered} <= labels  # every acknowledged car survived
        assert all(c["references"] == 1 for c in cars)  # no half-enrolled car
        assert info["references"] == len(cars)  # the index agrees with the database (rebuilt if needed)
    finally:
        reopened.kill()


def test_a_kill_mid_tagging_resumes_where_it_stopped(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(40):
        cv2.imwrite(str(photos / f"{i:03d}.png"), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    process = SidecarProcess("json")
    open_library(process, tmp_path / "lib")
    process.send({"jsonrpc": "2.0", "id": "tag", "method": "tag", "params": {"images": [str(photos)], "progress": True}})
    while (message := process.read()).get("params", {}).get("done", 0) < 10:
        pass
    assert message["params"]["rate"] > 0 and message["params"]["eta_s"] > 0  # photos/s and seconds left
    process.process.send_signal(signal.SIGKILL)
    process.process.wait()

    library = Library(tmp_path / "lib", "mobilenetv2-imagenet", 1280)
    stored = len(library.store._rows("SELECT id FROM photos"))
    library.close()
    assert stored >= 9
    resumed = SidecarProcess("json")
    try:
        open_library(resumed, tmp_path / "lib")
        result = resumed.request("tag", {"images": [str(photos)]}, id="resume")["result"]
        assert result["skipped"] == stored and result["tagged"] + result["skipped"] == 40 and not result["failed"]
    finally:
        resumed.kill()


def test_raw_files_are_tagged_through_their_previews_and_pairs_once(tmp_path: Path) -> None:
    from tests.test_raw import jpeg, tiff_raw

    photos = tmp_path / "photos"
    photos.mkdir()
    raw = tiff_raw(jpeg(160, 120, 10), jpeg(640, 480, 128), sensor=(6000, 4500))
    (photos / "IMG_1.NEF").write_bytes(raw)
    (photos / "IMG_1.JPG").write_bytes(jpeg(640, 480, 120))  # the camera's JPEG of the same shot
    (photos / "IMG_2.NEF").write_bytes(raw.replace(b"\x11" * 64, b"\x22" * 64))
    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        detected = process.request("detect", {"image": {"path": str(photos / "IMG_2.NEF")}}, id="raw")["result"]
        assert (detected["width"], detected["height"], detected["sensor_scale"]) == (640, 480, 9.375)
        tagged = process.request("tag", {"images": [str(photos)]}, id="tag")["result"]
        assert (tagged["total"], tagged["tagged"], tagged["failed"]) == (2, 2, [])  # three files, two pictures
    finally:
        process.kill()
