from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.datasets import epfl_frames
from sidecar.cli import main
from sidecar.engine import Engine
from sidecar.evaluation import (
    IDENTIFY_SCORING,
    CarSimilarities,
    DetectionReport,
    Prepared,
    TieWords,
    average_precision,
    car_similarities,
    detection_report,
    evaluate,
    false_matches_line,
    prepare,
    rank1_misses_line,
    read_manifest,
)
from sidecar.stages.match import MatchPolicy


def test_average_precision_by_hand() -> None:
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, False])) == 1.0
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([False, True, False])) == 0.5
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([False, False, False])) == 0.0


def test_max_and_mean_scoring() -> None:
    references = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    queries = np.array([[0.0, 1.0]], np.float32)
    by_max = car_similarities(queries, references, ["a", "a", "b"], "max")
    assert by_max.cars == ["a", "b"]
    np.testing.assert_allclose(by_max.ranking, [[1.0, 0.8]], atol=1e-6)
    by_mean = car_similarities(queries, references, ["a", "a", "b"], "mean")
    np.testing.assert_allclose(by_mean.ranking, [[0.7071, 0.8]], atol=1e-4)  # the prototype of a sits between its two views
    identify = car_similarities(queries, references, ["a", "a", "b"], IDENTIFY_SCORING)
    np.testing.assert_allclose(identify.ranking, by_mean.ranking)
    np.testing.assert_allclose(identify.matching, by_max.ranking)
    # Ranked by the mean, b first; matched on its closest reference, 0.8.
    assert [(c.car_id, round(c.score or 0, 4), round(c.mean_score or 0, 4)) for c in identify.candidates(0)] == [
        ("b", 0.8, 0.8), ("a", 1.0, 0.7071)]


def test_open_set_rates() -> None:
    sims = np.array([
        [0.95, 0.10],  # a, matched right
        [0.40, 0.92],  # a, matched wrong
        [0.91, 0.90],  # b, ambiguous (and ranked second)
        [0.95, 0.20],  # unknown car, falsely matched
        [0.50, 0.30],  # unknown car, rejected
    ])
    report = evaluate("t", CarSimilarities(["a", "b"], sims, sims), ["a", "a", "b", None, None], MatchPolicy(0.875, 0.03, 5),
                      "max", 2)
    assert report.rank1 == pytest.approx(1 / 3)
    assert report.true_match_rate == pytest.approx(1 / 3)
    assert report.wrong_match_rate == pytest.approx(1 / 3)
    assert report.false_match_rate == pytest.approx(1 / 2)
    assert report.ambiguous_rate == pytest.approx(1 / 5)
    assert report.false_matches_to == {"a": 1}  # the wrong match of a known car is not counted there
    assert false_matches_line([report]) == "false matches by the enrolled car named: t a 1"
    assert report.rank1_misses == {("a", "b"): 1, ("b", "a"): 1}
    assert rank1_misses_line([report], most=1) == "rank-1 misses, most frequent first (car as the car ranked first): t a as b 1"


def test_eval_breaks_appearance_ties_with_the_words_as_identify_does() -> None:
    sims = np.array([
        [0.90, 0.89],  # b, tied with a: its words name b
        [0.90, 0.89],  # b, tied, no word read
        [0.95, 0.60],  # a, clear: a word of b's changes nothing
    ])
    scores = CarSimilarities(["a", "b"], sims, sims)
    truths: list[str | None] = ["b", "b", "a"]
    words = TieWords([frozenset({"ESSO"}), frozenset(), frozenset({"ESSO"})], {"a": {"HUBLOT"}, "b": {"ESSO"}})
    policy = MatchPolicy(0.875, 0.03, 5)
    appearance, worded = (evaluate("t", scores, truths, policy, IDENTIFY_SCORING, 2, w) for w in (None, words))
    assert (appearance.rank1, appearance.true_match_rate, appearance.ambiguous_rate) == pytest.approx((1 / 3, 1 / 3, 2 / 3))
    assert (worded.rank1, worded.true_match_rate, worded.ambiguous_rate) == pytest.approx((2 / 3, 2 / 3, 1 / 3))
    assert worded.mean_ap == appearance.mean_ap  # on appearance's ranking
    # Read on every crop, the words reach identify's scoring only.
    prepared = Prepared("t", np.eye(2, dtype=np.float32), ["a", "b"], np.eye(2, dtype=np.float32), ["a", "b"],
                        [frozenset({"HUBLOT"}), frozenset({"ESSO"})], [frozenset(), frozenset({"ESSO"})])
    assert prepared.tie_words() == TieWords([frozenset(), frozenset({"ESSO"})], {"a": {"HUBLOT"}, "b": {"ESSO"}})


def test_cars_with_look_alikes_counts_cars_whose_mean_references_are_alike() -> None:
    livery, other = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    tilted = np.array([0.9, 0.1, 0.4], np.float32) / np.linalg.norm([0.9, 0.1, 0.4])  # 0.9 alike to `livery`
    prepared = Prepared("t", np.stack([livery, tilted, other]), ["a", "b", "c"], np.zeros((0, 3), np.float32), [])
    assert prepared.cars_with_look_alikes(0.85)[:2] == (2, 3)
    assert prepared.cars_with_look_alikes(0.95)[:2] == (0, 3)
    assert prepared.cars_with_look_alikes(0.95)[2] == pytest.approx(float(tilted @ livery))  # median of 0.9, 0.9, 0.38


def test_eval_on_real_crops_ranks_neighbouring_views_first(engine: Engine, dev_data: Path, tmp_path: Path) -> None:
    frames = {(f.car, f.frame): f for f in epfl_frames()}
    manifest = {
        "name": "epfl-small",
        "references": [{"image": str(frames[(c, 1)].path), "car": str(c), "box": list(frames[(c, 1)].box)} for c in (1, 2, 3)],
        "queries": [{"image": str(frames[(c, 2)].path), "car": str(c), "box": list(frames[(c, 2)].box)} for c in (1, 2, 3)]
        + [{"image": str(frames[(5, 2)].path), "car": None, "box": list(frames[(5, 2)].box)}],
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    reports = prepare(engine, path).reports(MatchPolicy(0.875, 0.03, 5))
    assert [r.aggregate for r in reports] == [IDENTIFY_SCORING, "max", "mean"]
    assert reports[0].rank1 == 1.0 and reports[0].known_queries == 3 and reports[0].unknown_queries == 1


def test_eval_measures_the_detector_on_photos_whose_every_vehicle_is_boxed(engine: Engine, dev_data: Path,
                                                                          tmp_path: Path) -> None:
    frames = {(f.car, f.frame): f for f in epfl_frames()}
    shown = [frames[(car, 2)] for car in (6, 7, 8)]  # cars the detector never trains on
    wrongly_boxed = frames[(9, 2)]
    grey = tmp_path / "grey.png"  # a photo showing no vehicle
    cv2.imwrite(str(grey), np.full((300, 400, 3), 128, np.uint8))
    manifest = {
        "name": "epfl-detection",
        "references": [{"image": str(f.path), "car": str(f.car), "box": list(f.box)} for f in shown],
        "queries": [
            {"image": str(shown[0].path), "car": "6", "box": None},  # a vehicle of that photo unboxed: left out
            {"image": str(wrongly_boxed.path), "car": "9", "box": [0.0, 0.0, 20.0, 20.0]},  # the car is elsewhere
        ],
        "empty": ["grey.png"],  # relative to the manifest
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    seen: dict[Path, np.ndarray] = {}
    report = detection_report(engine, read_manifest(path), tmp_path, seen)
    assert report is not None
    assert (report.photos, report.vehicles, report.found, report.every) == (3, 3, 2, 2)
    assert report.other >= 1  # car 9's own box, off the wrong label
    assert (report.empty_photos, report.empty_boxes) == (1, 0)
    assert set(seen) == {shown[1].path, shown[2].path, wrongly_boxed.path, grey}
    # The boxes of a photo are found once per run, whichever manifests list it.
    emptied = {photo: np.empty((0, 4), np.float32) for photo in seen}
    emptied[grey] = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    assert (detection_report(engine, read_manifest(path), tmp_path, emptied)
            == DetectionReport("epfl-detection", 3, 3, 0, 0, 0, 1, 2))
    unboxed = tmp_path / "unboxed.json"
    unboxed.write_text(json.dumps({"name": "unboxed", "queries": manifest["queries"][:1]}))
    assert detection_report(engine, read_manifest(unboxed), tmp_path, {}) is None


def test_eval_prints_detection_alone_for_a_manifest_of_photos_showing_no_vehicle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((300, 400, 3), 128, np.uint8))
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"name": "pits", "empty": ["grey.png"]}))
    with pytest.raises(SystemExit) as exited:
        main(["eval", str(path)])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "| pits | 0 | 0 | - | - | - | 1 | 0.000 |" in out and "rank-1" not in out


def test_k_reciprocal_neighbourhoods_separate_two_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16))
    points = np.vstack([c + 0.05 * rng.normal(size=(6, 16)) for c in centres])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    from sidecar.evaluation import k_reciprocal_distance

    jaccard = k_reciprocal_distance(points @ points.T, k1=4, k2=1)
    within, across = jaccard[:6, :6][~np.eye(6, dtype=bool)], jaccard[:6, 6:]
    np.testing.assert_allclose(across, 1.0)  # the clusters share no neighbour
    assert within.mean() < 0.6
    np.testing.assert_allclose(np.diag(jaccard), 0.0, atol=1e-6)
