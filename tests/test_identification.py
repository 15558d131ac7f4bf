"""Enroll, identify, tag, review and export through the real sidecar and the
default models, including a kill in the middle of writing."""

from __future__ import annotations

import hashlib
import shutil
import signal
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from msgspec import structs

from bench.datasets import epfl_frames
from sidecar.config import Settings
from sidecar.engine import Engine
from sidecar.inference.manifest import load_manifest
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
        assert (tagged["total"], tagged["tagged"], tagged["skipped"], tagged["replaced"]) == (4, 3, 0, 0)
        assert [f["code"] for f in tagged["failed"]] == [-32001]
        again = process.request("tag", {"images": [str(event)], "min_score": 0.1}, id="again")["result"]
        assert (again["tagged"], again["skipped"]) == (0, 3)

        everything = process.request("results.query", {}, id="all")["result"]
        assert everything["total"] == tagged["matched"] + tagged["ambiguous"] + tagged["unknown"] > 0
        one = everything["detections"][0]
        confirmed = process.request("results.confirm", {"detection_id": one["detection_id"], "car_id": car_ids[2],
                                                        "add_as_reference": True}, id="confirm")["result"]
        assert confirmed["detection"]["review"] == "confirmed" and confirmed["detection"]["car_id"] == car_ids[2]
        assert confirmed["reference"]["car_id"] == car_ids[2]
        assert isinstance(confirmed["reference"]["words"], list)  # read from its photo again (null: never read)
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

        # Other settings are not a repeat: each photo's result is replaced, not added to, and the
        # user's confirmation stays (on the vehicle boxed again, or as confirmed if not found again).
        retag = process.request("tag", {"images": [str(event)], "min_score": 0.1, "tiles": 2}, id="retag")["result"]
        assert (retag["tagged"], retag["skipped"], retag["replaced"]) == (3, 0, 3)
        found = retag["matched"] + retag["ambiguous"] + retag["unknown"]
        assert found <= process.request("results.query", {}, id="after")["result"]["total"] <= found + 1
        kept = process.request("results.query", {"review": "confirmed"}, id="kept")["result"]["detections"]
        assert [(d["car_id"], d["path"]) for d in kept] == [(car_ids[2], one["path"])]

        # Another match threshold decides anew; the calibrated one spelled out is a repeat.
        settings = {"images": [str(event)], "min_score": 0.1, "tiles": 2}
        defaults = Settings()
        calibrated = load_manifest(defaults.models_dir).get(defaults.embedder).match_threshold
        same = process.request("tag", {**settings, "threshold": calibrated}, id="same")["result"]
        assert (same["tagged"], same["skipped"]) == (0, 3)
        strict = process.request("tag", {**settings, "threshold": 0.999}, id="strict")["result"]
        assert (strict["tagged"], strict["skipped"], strict["replaced"], strict["matched"]) == (3, 0, 3, 0)
        assert strict["ambiguous"] + strict["unknown"] == found
    finally:
        process.kill()


def test_tagging_again_after_the_detectors_heads_changed_is_not_a_repeat(engine: Engine,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same detector file decoded by other rules (here without its lone box) finds other vehicles."""
    embedder = engine.embedder()
    shipped = engine.detector().spec
    before = engine.models_key(False, embedder)
    without_lone = structs.replace(shipped, heads=[structs.replace(shipped.heads[0], lone_score=None),
                                                   *shipped.heads[1:]])
    other = Engine(engine.settings)
    monkeypatch.setattr(other, "detector", lambda: SimpleNamespace(spec=without_lone))
    assert other.models_key(False, embedder) != before
    monkeypatch.setattr(other, "detector", lambda: SimpleNamespace(spec=shipped))
    assert other.models_key(False, embedder) == before


def test_enrolling_a_car_that_looks_like_an_enrolled_one_names_it(tmp_path: Path, dev_data: Path) -> None:
    frames = {(f.car, f.frame): f for f in epfl_frames() if f.car in (1, 2)}

    def enroll(label: str, car: int, numbers: tuple[int, int]) -> dict:
        refs = [frames[(car, n)] for n in numbers]
        return process.request("enroll", {"car": {"label": label}, "images": [{"path": str(f.path)} for f in refs],
                                          "boxes": [list(f.box) for f in refs]}, id=label)["result"]

    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        first = enroll("#1", 1, (1, 3))
        assert "look_alikes" not in first  # none: left out, as every empty default is
        assert "look_alikes" not in enroll("#2", 2, (1, 3))  # another car: EPFL's differ in shape and colour
        shown = frames[(1, 2)]
        photo = {"image": {"path": str(shown.path)}, "read_numbers": False}

        def over_the_car(reply: dict) -> dict:
            return max(reply["result"]["vehicles"], key=lambda v: _iou(np.asarray(v["box"]), np.asarray(shown.box)))

        before = over_the_car(process.request("identify", photo, id="before"))
        assert (before["decision"], before["car_id"]) == ("match", first["car"]["id"])
        twin = enroll("#1 again", 1, (1, 3))  # the same car enrolled twice: two liveries alike to the pixel
        assert [a["car_id"] for a in twin["look_alikes"]] == [first["car"]["id"]]
        assert twin["look_alikes"][0]["label"] == "#1" and twin["look_alikes"][0]["similarity"] >= 0.75
        # Now the photo looks no more like either than the two look like each other: not a match.
        after = over_the_car(process.request("identify", photo, id="after"))
        assert after["decision"] == "ambiguous"
        assert after["candidates"][0]["rival_score"] > after["candidates"][0]["mean_score"]
        # Tagged, the photo's stored result reports the same candidates, every score kept.
        process.request("tag", {"images": [str(shown.path)], "read_numbers": False, "sequence_gap_s": 0}, id="tag")
        stored = process.request("results.query", {}, id="results")["result"]["detections"]
        assert max(stored, key=lambda d: _iou(np.asarray(d["box"]), np.asarray(shown.box)))["candidates"] == after["candidates"]
    finally:
        process.kill()


def _painted(frame: object, word: str, folder: Path) -> Path:
    """An EPFL frame with `word` on a white panel across its car's side, as a sponsor's name."""
    image = cv2.imread(str(frame.path))  # type: ignore[attr-defined]
    x1, y1, x2, y2 = (int(v) for v in frame.box)  # type: ignore[attr-defined]
    (width, height), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, 0.9, 2)
    cx, cy = (x1 + x2) // 2, y1 + int((y2 - y1) * 0.55)
    cv2.rectangle(image, (cx - width // 2 - 6, cy - height - 6), (cx + width // 2 + 6, cy + 8), (255, 255, 255), -1)
    cv2.putText(image, word, (cx - width // 2, cy), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
    path = folder / f"{frame.frame}-{word}.png"  # type: ignore[attr-defined]
    cv2.imwrite(str(path), image)
    return path


def test_the_words_on_a_livery_put_the_car_that_carries_them_first(tmp_path: Path, dev_data: Path) -> None:
    """Two cars alike to the pixel but for their sponsor: appearance ties them, the words read order them."""
    frames = {f.frame: f for f in epfl_frames() if f.car == 1}
    refs, shown = [frames[10], frames[12]], frames[11]

    def enroll(word: str) -> dict:
        return process.request("enroll", {
            "car": {"label": word}, "images": [{"path": str(_painted(f, word, tmp_path))} for f in refs],
            "boxes": [list(f.box) for f in refs]}, id=word)["result"]

    def over_the_car(params: dict) -> dict:
        vehicles = process.request("identify", params, id="identify")["result"]["vehicles"]
        return max(vehicles, key=lambda v: _iou(np.asarray(v["box"]), np.asarray(shown.box)))

    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        petronas, rexona = enroll("PETRONAS"), enroll("REXONA")
        assert [r["words"] for r in petronas["references"]] == [["PETRONAS"], ["PETRONAS"]]
        assert [r["words"] for r in process.request("cars.get", {"id": rexona["car"]["id"]}, id="get")
                ["result"]["references"]] == [["REXONA"], ["REXONA"]]
        ids = {"PETRONAS": petronas["car"]["id"], "REXONA": rexona["car"]["id"]}
        for word in ("PETRONAS", "REXONA"):
            photo = {"image": {"path": str(_painted(shown, word, tmp_path))}}
            without = over_the_car({**photo, "read_numbers": False})
            assert without["decision"] == "ambiguous" and "words" not in without["evidence"]
            tied = {c["car_id"]: c["mean_score"] for c in without["candidates"][:2]}
            assert set(tied) == set(ids.values()) and abs(tied[ids["PETRONAS"]] - tied[ids["REXONA"]]) < 0.03
            vehicle = over_the_car(photo)
            assert vehicle["evidence"]["words"] == [word]
            assert vehicle["candidates"][0]["car_id"] == ids[word]
            # Twins whose means are closer to each other than the photo is to either: the rival rule still holds.
            assert vehicle["decision"] == "ambiguous" and vehicle["evidence"]["decided_by"] == []
        # Tagged and exported, the words that counted are in the CSV.
        process.request("tag", {"images": [str(_painted(shown, "PETRONAS", tmp_path))], "sequence_gap_s": 0}, id="tag")
        csv_out = Path(process.request("export", {"format": "csv"}, id="csv")["result"]["files"][0])
        assert any(line.endswith(",PETRONAS") for line in csv_out.read_text().splitlines()[1:])
    finally:
        process.kill()


def test_references_enrolled_before_words_were_read_get_them_when_the_library_opens(tmp_path: Path, dev_data: Path) -> None:
    """EPFL car 04, the rally car, carries CASTROL on its sides."""
    frames = {f.frame: f for f in epfl_frames() if f.car == 4}
    kept, gone = frames[20], tmp_path / "gone.jpg"
    shutil.copy(frames[30].path, gone)
    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        enrolled = process.request("enroll", {
            "car": {"label": "#3"}, "images": [{"path": str(kept.path)}, {"path": str(gone)}],
            "boxes": [list(kept.box), list(frames[30].box)]}, id="enroll")["result"]
        read = [r["words"] for r in enrolled["references"]]
        assert all("CASTROL" in words for words in read)
    finally:
        process.kill()
    # As an earlier version left them: no words on record; and one photo is no longer there.
    db = sqlite3.connect(tmp_path / "lib" / "library.sqlite")
    db.execute("UPDATE refs SET words = NULL")
    db.commit()
    db.close()
    gone.unlink()
    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        references = process.request("cars.get", {"id": enrolled["car"]["id"]}, id="get")["result"]["references"]
        assert [r.get("words") for r in references] == [read[0], None]
    finally:
        process.kill()


def test_numbers_name_cars_of_an_entry_list_and_contradictions_are_flagged(tmp_path: Path, dev_data: Path) -> None:
    """EPFL car 04 carries #3 (bench/labels/epfl_numbers.csv); frame 20 shows it legibly."""
    frames = {(f.car, f.frame): f for f in epfl_frames() if f.car == 4}
    shown, truth = frames[(4, 20)], np.asarray(frames[(4, 20)].box)
    event = tmp_path / "event"
    event.mkdir()
    shutil.copy(shown.path, event / "rally.jpg")
    entry_list = tmp_path / "entries.csv"
    entry_list.write_text("No.;Driver(s);Team;Class;Colours\n3;F. Duval / D. Elena;Ford;WRC;blue/white\n7;A. Driver;X;GT3;\n")

    def over_the_car(result: dict) -> dict:
        return max(result["vehicles"], key=lambda v: _iou(np.asarray(v["box"]), truth))

    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        bad = process.request("entries.import", {"csv": str(tmp_path / "missing.csv")}, id="bad")["error"]
        assert bad["code"] == -32602 and bad["data"]["field"] == "params.csv"
        imported = process.request("entries.import", {"csv": str(entry_list)}, id="entries")["result"]
        assert (imported["created"], imported["updated"], imported["problems"]) == (2, 0, [])
        rally = imported["cars"][0]
        assert (rally["label"], rally["number"], rally["references"]) == ("#3 F. Duval / D. Elena", "3", 0)
        assert rally["meta"] == {"class": "WRC", "colours": ["blue", "white"]}

        # No reference at all: the number names the car.
        vehicle = over_the_car(process.request("identify", {"image": {"path": str(shown.path)}}, id="by-number")["result"])
        assert (vehicle["decision"], vehicle["car_id"], vehicle["score"]) == ("match", rally["id"], None)
        evidence = vehicle["evidence"]
        assert evidence["decided_by"] == ["number"] and evidence["appearance"]["decision"] == "unknown"
        assert evidence["number"]["text"] == "3" and evidence["number"]["car_ids"] == [rally["id"]]
        reading = np.asarray(evidence["number"]["box"])  # in photo pixels, on the car
        assert truth[0] <= reading[0] < reading[2] <= truth[2] and truth[1] <= reading[1] < reading[3] <= truth[3]
        # Numbers read only where appearance does not match: here it does not (no reference), so it is read.
        unsure = over_the_car(process.request("identify", {"image": {"path": str(shown.path)}, "read_numbers": "unsure"},
                                              id="unsure")["result"])
        assert (unsure["car_id"], unsure["evidence"]["decided_by"]) == (rally["id"], ["number"])

        # Appearance says a car numbered 5 (enrolled from this car's neighbouring frames): a contradiction.
        refs = [frames[(4, 19)], frames[(4, 21)]]
        look_alike = process.request("enroll", {
            "car": {"label": "#5 look-alike", "number": "5"}, "images": [{"path": str(f.path)} for f in refs],
            "boxes": [list(f.box) for f in refs]}, id="enroll")["result"]["car"]
        appearance_only = process.request("identify", {"image": {"path": str(shown.path)}, "read_numbers": False}, id="a")
        vehicle = over_the_car(appearance_only["result"])
        assert (vehicle["decision"], vehicle["car_id"], vehicle["evidence"]["decided_by"]) == ("match", look_alike["id"], ["appearance"])
        vehicle = over_the_car(process.request("identify", {"image": {"path": str(shown.path)}}, id="conflict")["result"])
        assert (vehicle["decision"], vehicle["car_id"]) == ("ambiguous", None)
        assert [c["car_id"] for c in vehicle["candidates"][:2]] == [look_alike["id"], rally["id"]]
        assert "3" in vehicle["evidence"]["conflict"] and "5" in vehicle["evidence"]["conflict"]
        # Read only where appearance is unsure, the number never sees the clear appearance match: the faster
        # mode's documented cost.
        unsure = over_the_car(process.request("identify", {"image": {"path": str(shown.path)}, "read_numbers": "unsure"},
                                              id="unsure-match")["result"])
        assert (unsure["decision"], unsure["car_id"], unsure["evidence"].get("number")) == ("match", look_alike["id"], None)

        # Correct the list (the look-alike is #3's spare car: no number): the number decides again.
        process.request("cars.remove", {"id": look_alike["id"]}, id="remove")
        tagged = process.request("tag", {"images": [str(event)]}, id="tag")["result"]
        assert tagged["numbers"] >= 1 and tagged["matched"] >= 1
        found = process.request("results.query", {"number": "#3"}, id="query")["result"]
        assert found["total"] >= 1 and found["detections"][0]["car_id"] == rally["id"]
        assert found["detections"][0]["evidence"]["number"]["text"] == "3"
        csv_out = Path(process.request("export", {"format": "csv"}, id="csv")["result"]["files"][0])
        header, *rows = csv_out.read_text().splitlines()
        assert header.endswith("number_read,decided_by,conflict,words_read") and any(r.endswith(",3,number,,") for r in rows)
        process.request("export", {"format": "xmp"}, id="xmp")
        xmp = (event / "rally.xmp").read_text()
        assert "<rdf:li>#3</rdf:li>" in xmp and "<rdf:li>Numbers|3</rdf:li>" in xmp and "Cars|#3 F. Duval" in xmp

        # Tagging with numbers read only where appearance is unsure is not a repeat of the run above; twice, it is.
        unsure = {"images": [str(event)], "read_numbers": "unsure"}
        first = process.request("tag", unsure, id="unsure-tag")["result"]
        assert (first["tagged"], first["skipped"]) == (tagged["tagged"], 0)
        again = process.request("tag", unsure, id="unsure-again")["result"]
        assert (again["tagged"], again["skipped"]) == (0, tagged["tagged"])
    finally:
        process.kill()


def test_a_burst_names_the_car_in_frames_where_its_number_is_hidden(tmp_path: Path, dev_data: Path) -> None:
    """EPFL car 04 shot on its turntable about a second apart (EXIF times): #3 is
    legible from frame 7 on, so frames of the same burst where it is not read
    get the car from the burst."""
    event = tmp_path / "event"
    event.mkdir()
    for frame in (f for f in epfl_frames() if f.car == 4 and 30 <= f.frame <= 50):
        shutil.copy(frame.path, event / frame.path.name)
    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        (rally,) = process.request("entries.import", {"rows": [{"number": "3", "label": "Ford #3"}]}, id="e")["result"]["cars"]
        alone = process.request("tag", {"images": [str(event)], "sequence_gap_s": 0}, id="alone")["result"]
        assert alone["by_sequence"] == 0 and 0 < alone["matched"] < alone["tagged"]
        burst = process.request("tag", {"images": [str(event)], "rescan": True}, id="burst")["result"]
        assert burst["by_sequence"] > 0 and burst["matched"] == alone["matched"] + burst["by_sequence"]
        found = process.request("results.query", {"car_id": rally["id"]}, id="q")["result"]["detections"]
        named = [d for d in found if d["evidence"]["decided_by"] == ["sequence"]]
        assert len(named) == burst["by_sequence"] and all(d["decision"] == "match" for d in named)
        sequence = named[0]["evidence"]["sequence"]
        assert sequence["car_id"] == rally["id"] and sequence["frames"] > sequence["confident"] >= 1
        assert named[0]["evidence"].get("number") is None and named[0]["score"] is None  # no reference, no number read
    finally:
        process.kill()


def test_switching_embedder_keeps_the_old_one_until_the_new_index_is_complete(tmp_path: Path, dev_data: Path) -> None:
    frames = {(f.car, f.frame): f for f in epfl_frames()}
    query = {"image": {"path": str(frames[(2, 40)].path)}, "read_numbers": False}
    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        for car in range(1, 7):  # 18 references: two batches of re-embedding
            refs = [frames[(car, n)] for n in (1, 30, 60)]
            process.request("enroll", {"car": {"label": f"EPFL {car}"}, "images": [{"path": str(f.path)} for f in refs],
                                       "boxes": [list(f.box) for f in refs]}, id=f"enroll{car}")
        before = process.request("identify", query, id="before")["result"]

        process.send({"jsonrpc": "2.0", "id": "switch", "method": "embedder.use",
                      "params": {"embedder": "mobilenetv2-imagenet", "progress": True}})
        first = process.read()
        assert first["method"] == "$/progress" and first["params"]["stage"] == "embedding references"
        process.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "switch"}})
        messages = [process.read()]
        while "id" not in messages[-1]:
            messages.append(process.read())
        assert messages[-1]["error"]["code"] == -32800
        # Cancelled: the library kept its model and index.
        assert process.request("identify", query, id="still")["result"] == before

        switched = process.request("embedder.use", {"embedder": "mobilenetv2-imagenet"}, id="again")["result"]
        assert (switched["model"], switched["references"], switched["unreadable"]) == ("mobilenetv2-imagenet", 18, 0)
        assert switched["embedded"] == 2  # the first batch of 16 was kept from the cancelled run
        after = process.request("identify", query, id="after")["result"]
        assert after["vehicles"][0]["candidates"] != before["vehicles"][0]["candidates"]  # another model's similarities
        info = process.request("initialize", {}, id="info")["result"]
        assert next(m for m in info["models"] if m["task"] == "embed")["name"] == "mobilenetv2-imagenet"

        back = process.request("embedder.use", {}, id="back")["result"]
        assert back["embedded"] == 0 and back["references"] == 18 and back["model"].startswith("liveryid-reid-mnv2")
        assert process.request("identify", query, id="back-again")["result"] == before
        wrong = process.request("embedder.use", {"embedder": "ppocr-v6-det-small"}, id="wrong")["error"]
        assert wrong["code"] == -32602 and "not an embedder" in wrong["message"]
        assert process.request("embedder.use", {"embedder": "nope"}, id="nope")["error"]["code"] == -32004
    finally:
        process.kill()


def test_a_library_enrolled_with_the_box_alone_is_averaged_from_its_photos_on_open(tmp_path: Path, dev_data: Path) -> None:
    """Upgrading to an embedder that averages each box with its grown and
    shrunk copies (a new key) embeds every reference again from its photo
    and box on open: identify then scores as a library enrolled with it
    does; a reference whose photo is gone keeps its row, out of the index."""
    frames = {(f.car, f.frame): f for f in epfl_frames()}
    photos = tmp_path / "photos"
    photos.mkdir()
    enrolled = {car: [(frames[(car, n)], photos / f"car{car}-{n}.jpg") for n in (1, 30, 60)] for car in (1, 2, 3)}
    for frame, copy in (pair for pairs in enrolled.values() for pair in pairs):
        shutil.copy(frame.path, copy)
    query = {"image": {"path": str(frames[(2, 40)].path)}, "read_numbers": False}

    def enroll(process: SidecarProcess, skip: Path | None = None) -> None:
        for car, pairs in enrolled.items():
            kept = [(frame, copy) for frame, copy in pairs if copy != skip]
            reply = process.request("enroll", {"car": {"id": f"car{car}", "label": f"EPFL {car}"},
                                               "images": [{"path": str(c)} for _, c in kept],
                                               "boxes": [list(f.box) for f, _ in kept]}, id=f"enroll{car}")
            assert len(reply["result"]["references"]) == len(kept)

    def candidates(process: SidecarProcess) -> list[dict]:
        return process.request("identify", query, id="identify")["result"]["vehicles"][0]["candidates"]

    old = SidecarProcess("json", extra_args=["--box-jitter", "0"])
    try:
        assert open_library(old, tmp_path / "upgraded")["models"][1]["status"] == "loaded"
        enroll(old)
        alone = candidates(old)
    finally:
        old.kill()
    gone = enrolled[3][1][1]
    gone.unlink()
    process = SidecarProcess("json")
    try:
        info = open_library(process, tmp_path / "upgraded")
        assert info["library"]["references"] == 8  # 9 rows; the one whose photo is gone is out of the index
        upgraded = candidates(process)
        open_library(process, tmp_path / "fresh")
        enroll(process, skip=gone)
        fresh = candidates(process)
    finally:
        process.kill()
    assert [c["car_id"] for c in upgraded] == [c["car_id"] for c in fresh]
    np.testing.assert_allclose([c["score"] for c in upgraded], [c["score"] for c in fresh], atol=1e-4)
    assert not np.allclose([c["score"] for c in upgraded], [c["score"] for c in alone], atol=1e-3)


def test_a_large_photo_is_analysed_from_a_smaller_decode_and_reported_in_its_own_pixels(tmp_path: Path, dev_data: Path) -> None:
    frame = next(f for f in epfl_frames() if f.car == 4 and f.frame == 20)
    event = tmp_path / "event"
    event.mkdir()
    factor = 12  # 376x250 -> 4512x3000: decoded at half size
    big = cv2.resize(cv2.imread(str(frame.path)), None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(event / "large.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    truth = np.asarray(frame.box) * factor
    process = SidecarProcess("json")
    try:
        open_library(process, tmp_path / "lib")
        process.request("entries.import", {"rows": [{"number": "3", "label": "Ford #3"}]}, id="e")
        tagged = process.request("tag", {"images": [str(event)]}, id="tag")["result"]
        assert (tagged["tagged"], tagged["numbers"]) == (1, 1)
        (found,) = [d for d in process.request("results.query", {}, id="q")["result"]["detections"]
                    if _iou(np.asarray(d["box"]), truth) > 0.5]
        assert found["decision"] == "match" and found["evidence"]["number"]["text"] == "3"
        reading = np.asarray(found["evidence"]["number"]["box"])
        assert truth[0] <= reading[0] < reading[2] <= truth[2] and truth[1] <= reading[1] < reading[3] <= truth[3]
        identified = process.request("identify", {"image": {"path": str(event / "large.jpg")}}, id="i")["result"]
        assert (identified["width"], identified["height"]) == (4512, 3000)
        vehicle = max(identified["vehicles"], key=lambda v: _iou(np.asarray(v["box"]), truth))
        assert _iou(np.asarray(vehicle["box"]), np.asarray(found["box"])) > 0.95  # identify and tag see the same
        assert vehicle["evidence"]["number"]["box"] == found["evidence"]["number"]["box"]
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
