"""The library without models: store, index and lock, with synthetic vectors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sidecar.errors import InvalidParams, LibraryInUse, LibraryTooNew, NotFound
from sidecar.evaluation import IDENTIFY_SCORING, car_similarities
from sidecar.library.library import Library
from sidecar.library.store import SCHEMA, SCHEMA_VERSION, NewDetection, ReferenceEntry
from sidecar.stages.match import CarScore, MatchPolicy, car_scores, decide

DIM = 8


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def entries(*seeds: int) -> list[ReferenceEntry]:
    return [ReferenceEntry(f"ref{s}.jpg", [0.0, 0.0, 10.0, 10.0], unit(s), 0.9) for s in seeds]


def nearest_car(library: Library, query: np.ndarray) -> str:
    references = library.references
    ids, sims = references.index.search(query[None], 10)
    return car_scores(query, ids[0], sims[0], references.car_of, references.mean_reference, references.rival)[0].car_id


def test_enroll_extend_update_merge_and_remove(tmp_path: Path) -> None:
    library = Library(tmp_path, "m", DIM)
    try:
        red, refs = library.enroll("red", {"label": "#1 Red", "team": "R"}, entries(1, 2), "m")
        assert red.references == 2 and [r.car_id for r in refs] == ["red", "red"]
        blue, _ = library.enroll(None, {"label": "#2 Blue"}, entries(3), "m")
        assert blue.id.startswith("car-")
        assert nearest_car(library, unit(3)) == blue.id
        extended, _ = library.enroll("red", {}, entries(4), "m")
        assert extended.references == 3 and extended.label == "#1 Red"
        assert library.update_car("red", {"number": "1"}).number == "1"
        merged = library.merge("red", [blue.id])
        assert merged.references == 4 and nearest_car(library, unit(3)) == "red"
        with pytest.raises(NotFound):
            library.require_car(blue.id)
        library.remove_reference(refs[0].id)
        assert library.require_car("red").references == 3
        library.remove_car("red")
        assert library.store.cars() == [] and len(library.index) == 0
    finally:
        library.close()


def test_each_cars_words_follow_its_references(tmp_path: Path) -> None:
    """The words identify breaks ties with: read again after every change of references."""
    library = Library(tmp_path, "m", DIM)

    def worded(seed: int, *words: str) -> ReferenceEntry:
        return ReferenceEntry(f"ref{seed}.jpg", [0.0, 0.0, 10.0, 10.0], unit(seed), 0.9, frozenset(words))

    try:
        _, (esso, _) = library.enroll("a", {"label": "A"}, [worded(1, "ESSO", "HONDA"), worded(2, "REDBULL")], "m")
        library.enroll("b", {"label": "B"}, [worded(3, "PEAK"), *entries(4)], "m")  # entries(4): never read
        assert library.car_words() == {"a": {"ESSO", "HONDA", "REDBULL"}, "b": {"PEAK"}}
        assert [r.words for r in library.store.references("b")] == [["PEAK"], None]
        library.remove_reference(esso.id)
        assert library.car_words() == {"a": {"REDBULL"}, "b": {"PEAK"}}
        library.enroll("c", {"label": "C"}, [worded(5, "RICH")], "m")
        library.merge("a", ["c"])
        assert library.car_words() == {"a": {"REDBULL", "RICH"}, "b": {"PEAK"}}
        library.remove_car("b")
        assert library.car_words() == {"a": {"REDBULL", "RICH"}}
    finally:
        library.close()


def test_invalid_library_operations_are_named(tmp_path: Path) -> None:
    library = Library(tmp_path, "m", DIM)
    try:
        with pytest.raises(InvalidParams):
            library.enroll("new", {}, entries(1), "m")  # a new car needs a label
        library.enroll("a", {"label": "A"}, entries(1), "m")
        with pytest.raises(InvalidParams):
            library.merge("a", ["a"])
        with pytest.raises(NotFound):
            library.merge("a", ["ghost"])
        with pytest.raises(NotFound):
            library.remove_reference(999)
    finally:
        library.close()


def test_the_index_survives_reopening_and_is_rebuilt_when_missing_stale_or_corrupt(tmp_path: Path) -> None:
    library = Library(tmp_path, "m", DIM)
    library.enroll("a", {"label": "A"}, entries(1, 2), "m")
    library.enroll("b", {"label": "B"}, entries(3), "m")
    library.close()

    reopened = Library(tmp_path, "m", DIM)
    assert not reopened.index.rebuilt and nearest_car(reopened, unit(3)) == "b"
    reopened.close()

    for damage in (
        lambda: reopened.index.path.unlink(),
        lambda: reopened.index.path.write_bytes(b"garbage"),
        lambda: reopened.index.meta_path.write_text('{"fingerprint": "from before a crash", "dim": 8}'),
    ):
        damage()
        library = Library(tmp_path, "m", DIM)
        assert library.index.rebuilt and len(library.index) == 3
        assert nearest_car(library, unit(1)) == "a" and nearest_car(library, unit(3)) == "b"
        library.close()


def test_another_model_gets_its_own_index(tmp_path: Path) -> None:
    first = Library(tmp_path, "m", DIM)
    first.enroll("a", {"label": "A"}, entries(1), "m")
    first.close()
    other = Library(tmp_path, "other-model", 16)
    try:
        assert len(other.index) == 0 and other.store.car("a") is not None
    finally:
        other.close()


def test_a_second_writer_is_refused_while_the_first_holds_the_library(tmp_path: Path) -> None:
    library = Library(tmp_path, "m", DIM)
    try:
        with pytest.raises(LibraryInUse):
            Library(tmp_path, "m", DIM)
        holder = (
            "import sys; from sidecar.library.library import Library\n"
            "try:\n    Library(__import__('pathlib').Path(sys.argv[1]), 'm', 8)\n"
            "except Exception as e:\n    print(type(e).__name__)\n"
        )
        out = subprocess.run([sys.executable, "-c", holder, str(tmp_path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "LibraryInUse"
    finally:
        library.close()
    Library(tmp_path, "m", DIM).close()  # free again once closed


@pytest.mark.parametrize(
    "scores, decision, car",
    [
        ([("a", 0.9), ("b", 0.5)], "match", "a"),
        ([("a", 0.9), ("b", 0.89)], "ambiguous", None),
        ([("a", 0.6), ("b", 0.5)], "unknown", None),
        ([], "unknown", None),
        ([("a", 0.8)], "match", "a"),
    ],
)
def test_open_set_decisions(scores: list[tuple[str, float]], decision: str, car: str | None) -> None:
    verdict = decide([CarScore(c, s) for c, s in scores], MatchPolicy(threshold=0.75, margin=0.03, top_k=1))
    assert verdict.decision == decision and verdict.car_id == car
    assert len(verdict.candidates) == min(1, len(scores))


def test_car_scores_rank_by_mean_reference_and_keep_the_best() -> None:
    cars = {1: "a", 2: "b", 3: "a"}
    means = {"a": np.array([0.6, 0.8], np.float32), "b": np.array([1.0, 0.0], np.float32)}
    query = np.array([1.0, 0.0], np.float32)
    scores = car_scores(query, np.array([2, 3, 1], np.uint64), np.array([0.8, 0.7, 0.95], np.float32), cars.__getitem__,
                        means.__getitem__, lambda car: None)
    # b's mean reference is closer (1.0 against 0.6), so b ranks first although a has the closest reference.
    assert [(s.car_id, s.score, s.mean_score) for s in scores] == [("b", 0.8, 1.0), ("a", 0.95, 0.6)]
    assert car_scores(query, np.array([0], np.uint64), np.array([-np.inf], np.float32), cars.__getitem__,
                      means.__getitem__, lambda car: None) == []


def test_a_car_removed_while_a_search_runs_is_left_out(tmp_path: Path) -> None:
    library = Library(tmp_path, "m", DIM)
    try:
        library.enroll("a", {"label": "A"}, entries(1, 2), "m")
        library.enroll("b", {"label": "B"}, entries(3), "m")
        references = library.references  # what a tag run holds
        ids, sims = references.index.search(unit(3)[None], 10)
        library.remove_car("b")  # between the search and the scoring
        scores = car_scores(unit(3), ids[0], sims[0], references.car_of, references.mean_reference, references.rival)
        assert [s.car_id for s in scores] == ["a"]
    finally:
        library.close()


@pytest.mark.parametrize(("candidates", "decision", "car"), [
    ([CarScore("b", 0.80, 0.90), CarScore("a", 0.95, 0.60)], "match", "b"),  # first by mean, its best reference clears 0.75
    ([CarScore("b", 0.70, 0.90), CarScore("a", 0.95, 0.60)], "unknown", None),  # first by mean, no reference close enough
    ([CarScore("b", 0.80, 0.90), CarScore("a", 0.95, 0.89)], "ambiguous", None),  # means too close
    # b's closest enrolled rival resembles it more (0.92) than the vehicle does (0.90): one of b's look-alikes
    ([CarScore("b", 0.80, 0.90, 0.92), CarScore("a", 0.95, 0.60, 0.92)], "ambiguous", None),
    ([CarScore("b", 0.80, 0.90, 0.88), CarScore("a", 0.95, 0.60, 0.88)], "match", "b"),  # more like b than its rival
])
def test_decide_ranks_by_mean_and_thresholds_the_best_reference(candidates: list[CarScore], decision: str,
                                                                car: str | None) -> None:
    verdict = decide(candidates, MatchPolicy(threshold=0.75, margin=0.03, top_k=2))
    assert (verdict.decision, verdict.car_id) == (decision, car)


def test_identify_scores_cars_as_eval_does_through_enroll_merge_and_removal(tmp_path: Path) -> None:
    """The library's cached mean references and rivals follow every change of
    a car's references, so identify's scores stay those `liveryid eval` measures."""

    Scores = list[tuple[str, float | None, float | None, float]]

    def both_ways(query: np.ndarray) -> tuple[Scores, Scores]:
        references = library.references
        ids, sims = references.index.search(query[None], 50)
        identify = car_scores(query, ids[0], sims[0], references.car_of, references.mean_reference, references.rival)
        held = references.ids()
        evaluated = car_similarities(query[None], references.index.vectors(held.tolist()),
                                     [references.car_of(int(i)) or "" for i in held], IDENTIFY_SCORING).candidates(0)
        return ([(c.car_id, c.score, c.mean_score, -9.0 if c.rival_score is None else c.rival_score) for c in identify],
                [(c.car_id, c.score, c.mean_score, -9.0 if c.rival_score is None else c.rival_score) for c in evaluated])

    library = Library(tmp_path, "m", DIM)
    try:
        library.enroll("a", {"label": "A"}, entries(1, 2), "m")
        library.enroll("b", {"label": "B"}, entries(3), "m")
        library.enroll("c", {"label": "C"}, entries(4, 5, 6), "m")
        queries = [unit(s) + 0.5 * unit(s + 100) for s in range(1, 7)]
        queries = [q / np.linalg.norm(q) for q in queries]
        steps = [
            lambda: library.enroll("b", {}, entries(7), "m"),
            lambda: library.merge("a", ["c"]),
            lambda: library.remove_reference(library.store.references("a")[0].id),
            lambda: library.remove_car("b"),
        ]
        for step in [lambda: None, *steps]:
            step()
            for query in queries:
                identify, evaluated = both_ways(query)
                assert [c[0] for c in identify] == [c[0] for c in evaluated]
                assert [v for c in identify for v in c[1:]] == pytest.approx([v for c in evaluated for v in c[1:]], abs=1e-3)
        assert [c[0] for c in identify] == ["a"]
    finally:
        library.close()


def test_raw_photos_keep_their_sensor_scale_for_the_exports(tmp_path: Path) -> None:
    from sidecar.export import sensor_box

    library = Library(tmp_path, "m", DIM)
    try:
        detection = NewDetection(box=[10.0, 20.0, 110.0, 70.0], detector_score=0.8, label="car", decision="unknown",
                                 car_id=None, score=None, candidates=[], embedding=unit(1))
        library.store.save_photo("/e/IMG_1.NEF", "hash-raw", "models", 640, 480, 6.25, [detection])
        library.store.save_photo("/e/IMG_2.JPG", "hash-jpg", "models", 640, 480, None, [detection])
        rows, total = library.store.query_detections(None, None, None, None, None, 10, 0)
        assert total == 2
        by_path = {r.path: r for r in rows}
        assert sensor_box(by_path["/e/IMG_1.NEF"]) == [62.5, 125.0, 687.5, 437.5]
        assert sensor_box(by_path["/e/IMG_2.JPG"]) is None
    finally:
        library.close()


def test_tagging_a_photo_again_replaces_its_result_and_keeps_the_users_reviews(tmp_path: Path) -> None:
    library = Library(tmp_path, "m", DIM)
    library.enroll("a", {"label": "#1"}, entries(1), "m")
    store = library.store

    def found(box: list[float], seed: int) -> NewDetection:
        return NewDetection(box=box, detector_score=0.8, label="vehicle", decision="unknown", car_id=None, score=None,
                            candidates=[], embedding=unit(seed))

    try:
        first = store.save_photo("/e/1.jpg", "h", "models-1", 640, 480, None, [
            found([0, 0, 100, 100], 1), found([200, 0, 300, 100], 2), found([400, 0, 500, 100], 3), found([0, 300, 50, 350], 4)])
        store.review(first.detection_ids[0], "confirmed", "a")
        store.review(first.detection_ids[1], "rejected", None)
        store.review(first.detection_ids[2], "confirmed", "a")
        # Tagged again with other models or settings: the first and second vehicles boxed a little
        # differently, the third not found, a new one found.
        second = store.save_photo("/e/1.jpg", "h", "models-2", 640, 480, None, [
            found([205, 5, 300, 100], 5), found([5, 0, 100, 105], 6), found([600, 0, 640, 50], 7)])
        assert store.photo_done("h", "models-2") and not store.photo_done("h", "models-1")
        assert (first.replaced, second.replaced) == (False, True)
        rows, total = store.query_detections(None, None, None, None, None, 10, 0)
        assert total == 4  # the photo once: three new detections and the confirmed vehicle not found again
        by_box = {tuple(r.box): r for r in rows}
        assert (by_box[(5, 0, 100, 105)].review, by_box[(5, 0, 100, 105)].car_id) == ("confirmed", "a")
        assert by_box[(5, 0, 100, 105)].decision == "match" and by_box[(5, 0, 100, 105)].id == second.detection_ids[1]
        assert by_box[(205, 5, 300, 100)].review == "rejected"
        assert by_box[(600, 0, 640, 50)].review is None
        kept = by_box[(400, 0, 500, 100)]
        assert (kept.review, kept.car_id, kept.decision) == ("confirmed", "a", "match")
        np.testing.assert_array_equal(store.detection_vectors([kept.id]), unit(3)[None])
        # Its embedding is the first tagging's: confirming it as a reference must know to embed it again.
        assert [store.detection(i)[2] for i in (kept.id, second.detection_ids[1])] == ["models-1", "models-2"]
    finally:
        library.close()


# The tables schema version 1 made that later versions extend (numbers, bursts).
SCHEMA_1_TABLES = """CREATE TABLE photos (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, content_hash TEXT NOT NULL, models TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, sensor_scale REAL, tagged_at REAL NOT NULL,
    UNIQUE (content_hash, models));
CREATE TABLE detections (
    id INTEGER PRIMARY KEY, photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE, box TEXT NOT NULL,
    detector_score REAL NOT NULL, label TEXT NOT NULL, decision TEXT NOT NULL,
    car_id TEXT REFERENCES cars(id) ON DELETE SET NULL, score REAL, candidates TEXT NOT NULL, review TEXT,
    embedding BLOB NOT NULL)"""


def test_references_of_schema_4_get_words_never_read(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "library.sqlite")
    db.executescript("""CREATE TABLE cars (id TEXT PRIMARY KEY, label TEXT NOT NULL, number TEXT, team TEXT, driver TEXT,
        meta TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL);
    CREATE TABLE refs (id INTEGER PRIMARY KEY, car_id TEXT NOT NULL REFERENCES cars(id) ON DELETE CASCADE,
        source TEXT NOT NULL, box TEXT NOT NULL, model TEXT NOT NULL, embedding BLOB NOT NULL, quality REAL NOT NULL,
        added_at REAL NOT NULL);""" + SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    db.execute("INSERT INTO cars VALUES ('a', 'A', NULL, NULL, NULL, '{}', 0)")
    db.execute("INSERT INTO refs VALUES (1, 'a', 'old.jpg', '[0, 0, 9, 9]', 'm', ?, 0.9, 0)", (unit(1).tobytes(),))
    db.commit()
    db.close()
    library = Library(tmp_path, "m", DIM)
    try:
        assert [(r.source, r.words) for r in library.store.references()] == [("old.jpg", None)]
        assert library.car_words() == {} and nearest_car(library, unit(1)) == "a"
        library.enroll("a", {}, [ReferenceEntry("new.jpg", [0.0, 0.0, 9.0, 9.0], unit(2), 0.9, frozenset({"ESSO"}))], "m")
        assert library.car_words() == {"a": {"ESSO"}}
    finally:
        library.close()


def test_a_library_from_schema_1_is_migrated_and_keeps_its_results(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "library.sqlite")
    db.executescript(SCHEMA_1_TABLES + ";" + SCHEMA)  # SCHEMA leaves the existing tables as they are
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO photos VALUES (1, '/e/a.jpg', 'h', 'models', 640, 480, NULL, 0)")
    db.execute("INSERT INTO detections VALUES (1, 1, '[1, 2, 3, 4]', 0.9, 'car', 'unknown', NULL, NULL, '[]', NULL, ?)",
               (unit(1).tobytes(),))
    db.commit()
    db.close()
    library = Library(tmp_path, "m", DIM)
    try:
        (old,), _ = library.store.query_detections(None, None, None, None, None, 10, 0)
        assert (old.box, old.number, old.evidence) == ([1, 2, 3, 4], None, None)
        library.store.save_photo("/e/b.jpg", "h2", "models", 640, 480, None, [NewDetection(
            box=[0, 0, 9, 9], detector_score=0.5, label="car", decision="match", car_id=None, score=None, candidates=[],
            embedding=unit(2), number="7", evidence={"decided_by": ["number"]})], camera="serial 1", captured_at=12.5)
        (new,), total = library.store.query_detections(None, "7", None, None, None, 10, 0)
        assert total == 1 and new.evidence == {"decided_by": ["number"]}
        np.testing.assert_array_equal(library.store.detection_vectors([new.id, old.id]), np.stack([unit(2), unit(1)]))
    finally:
        library.close()
    library = Library(tmp_path, "m", DIM)  # migrating again is a no-op
    library.close()
    db = sqlite3.connect(tmp_path / "library.sqlite")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    for _ in range(2):  # the refused open lets go of the lock: the second is refused for the same reason
        with pytest.raises(LibraryTooNew):
            Library(tmp_path, "m", DIM)


def test_counting_a_cars_references_and_dropping_a_photos_detections_use_indexes(tmp_path: Path) -> None:
    # Without them identify, which reads every car with its reference count, took 2 s at 10,000 references.
    library = Library(tmp_path, "m", DIM)
    try:
        plans = {
            sql: " ".join(row[-1] for row in library.store._db.execute("EXPLAIN QUERY PLAN " + sql, ("x",)))
            for sql in ("SELECT COUNT(*) FROM refs WHERE car_id = ?", "DELETE FROM detections WHERE photo_id = ?")
        }
    finally:
        library.close()
    assert all("USING" in plan and "INDEX" in plan for plan in plans.values()), plans


def test_concurrent_writes_leave_the_index_in_step_with_the_database(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    library = Library(tmp_path, "m", DIM)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: library.enroll(f"car{i}", {"label": f"C{i}"}, entries(i, 100 + i), "m"), range(40)))
    library.close()
    reopened = Library(tmp_path, "m", DIM)
    try:
        assert not reopened.index.rebuilt and len(reopened.index) == 80
        assert nearest_car(reopened, unit(117)) == "car17"
    finally:
        reopened.close()


def test_the_index_module_can_be_imported_before_onnxruntime() -> None:
    # usearch loaded before onnxruntime crashes the interpreter (segfault) unless the index module orders them.
    done = subprocess.run([sys.executable, "-c", "import sidecar.library.index; import onnxruntime"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
