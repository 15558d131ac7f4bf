"""The library database: cars, their reference embeddings, tagged photos and
their detections. SQLite in WAL mode; every public write is one transaction,
so a crash at any moment leaves everything committed before it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.errors import LibraryTooNew
from sidecar.stages.detect import box_iou

SCHEMA_VERSION = 5
SCHEMA = """
CREATE TABLE IF NOT EXISTS cars (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    number TEXT,
    team TEXT,
    driver TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY,
    car_id TEXT NOT NULL REFERENCES cars(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    box TEXT NOT NULL,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,
    quality REAL NOT NULL,
    added_at REAL NOT NULL,
    -- The livery's words read on it (JSON list); NULL: never read.
    words TEXT
);
CREATE INDEX IF NOT EXISTS refs_by_model ON refs(model, id);
-- A car's references are counted with it (cars.list, identify's labels) and go
-- with it when it is removed: without this, a scan of every reference per car.
CREATE INDEX IF NOT EXISTS refs_by_car ON refs(car_id);
-- The same references embedded again by other models (a library's adapted
-- embedder): `refs` keeps the enrolling model's vector, this table the rest.
CREATE TABLE IF NOT EXISTS ref_embeddings (
    ref_id INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (model, ref_id)
);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    models TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sensor_scale REAL,
    tagged_at REAL NOT NULL,
    camera TEXT,
    captured_at REAL,
    UNIQUE (content_hash, models)
);
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY,
    photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    box TEXT NOT NULL,
    detector_score REAL NOT NULL,
    label TEXT NOT NULL,
    decision TEXT NOT NULL,
    car_id TEXT REFERENCES cars(id) ON DELETE SET NULL,
    score REAL,
    candidates TEXT NOT NULL,
    review TEXT,
    embedding BLOB NOT NULL,
    number TEXT,
    evidence TEXT,
    -- The tagging (models key) that computed this embedding when it is not its photo's:
    -- a confirmed vehicle kept from an earlier tagging that the latest did not find.
    models TEXT
);
CREATE INDEX IF NOT EXISTS detections_by_car ON detections(car_id);
-- Tagging a photo again deletes its row and, through the cascade, its detections
-- (their reviews move to the new ones first: Store.save_photo).
CREATE INDEX IF NOT EXISTS detections_by_photo ON detections(photo_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns each schema version added, for libraries made by an earlier one.
# Version 2: the racing number read on a detection and the evidence of its
# decision; 3: the camera and capture time of a photo (bursts); 4: the tagging a
# kept detection's embedding comes from; 5: the words read on a reference.
MIGRATIONS = {
    2: [("detections", "number", "TEXT"), ("detections", "evidence", "TEXT")],
    3: [("photos", "camera", "TEXT"), ("photos", "captured_at", "REAL")],
    4: [("detections", "models", "TEXT")],
    5: [("refs", "words", "TEXT")],
}
INDEXES = "CREATE INDEX IF NOT EXISTS detections_by_number ON detections(number);"
REVIEW_KEPT_IOU = 0.5
"""A review of a photo tagged again passes to the new detection overlapping the reviewed box this much:
the same vehicle, boxed by another detector, score or tiling (the usual test of one box for another)."""


@dataclass(frozen=True)
class CarRow:
    id: str
    label: str
    number: str | None
    team: str | None
    driver: str | None
    meta: dict[str, Any]
    references: int


@dataclass(frozen=True)
class ReferenceRow:
    id: int
    car_id: str
    source: str
    box: list[float]
    model: str
    quality: float
    added_at: float
    words: list[str] | None
    """The livery's words read on it; None: never read."""


@dataclass(frozen=True)
class ReferenceEntry:
    """A reference to add: where it comes from, its box, its vector, the detector's score of the box."""

    source: str
    box: list[float]
    embedding: np.ndarray
    quality: float
    words: frozenset[str] | None = None
    """The livery's words read on it; None: not read."""


@dataclass(frozen=True, kw_only=True)
class DetectionFields:
    """What tagging decided about one vehicle of a photo."""

    box: list[float]
    detector_score: float
    label: str
    decision: str
    car_id: str | None
    score: float | None
    candidates: list[dict[str, Any]]
    number: str | None = None
    """The racing number read on the vehicle."""
    evidence: dict[str, Any] | None = None
    """Why it got its decision (the protocol's Evidence); None when tagged by schema version 1."""


@dataclass(frozen=True, kw_only=True)
class NewDetection(DetectionFields):
    """A detection of a photo being tagged, as `save_photo` stores it."""

    embedding: np.ndarray


@dataclass(frozen=True)
class SavedPhoto:
    detection_ids: list[int]
    """The new detections' ids, in order."""
    replaced: bool
    """An earlier tagging of the same content was replaced."""


@dataclass(frozen=True, kw_only=True)
class DetectionRow(DetectionFields):
    """A stored detection, with its photo."""

    id: int
    photo_id: int
    path: str
    review: str | None
    sensor_scale: float | None
    """RAW photos: sensor pixels per pixel of the analysed preview."""


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        # The sidecar's worker threads share this connection; sqlite3 calls
        # are serialised by the writer lock below and by SQLite itself.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.RLock()
        try:
            self._db.executescript(SCHEMA)
            self._migrate()
            self._db.executescript(INDEXES)
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Bring a library made by an earlier version to SCHEMA_VERSION, in
        one transaction (a crash leaves the old schema, migrated next time)."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = SCHEMA_VERSION if row is None else int(row["value"])  # no row: a new library
            if version > SCHEMA_VERSION:
                raise LibraryTooNew(
                    f"the library {self.path.parent} was written by a newer liveryid (schema {version}, this one reads {SCHEMA_VERSION})",
                    {"schema_version": version})
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for table, column, kind in MIGRATIONS[target]:
                    present = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write. Worker threads share the connection, so the
        lock keeps one thread's statements out of another's transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # --- cars ----------------------------------------------------------------

    def _car(self, db: sqlite3.Connection, car_id: str) -> CarRow | None:
        row = db.execute(
            "SELECT c.*, (SELECT COUNT(*) FROM refs r WHERE r.car_id = c.id) AS n FROM cars c WHERE c.id = ?", (car_id,)
        ).fetchone()
        return None if row is None else _car_row(row)

    def car(self, car_id: str) -> CarRow | None:
        with self._lock:
            return self._car(self._db, car_id)

    def cars(self) -> list[CarRow]:
        rows = self._rows(
            "SELECT c.*, (SELECT COUNT(*) FROM refs r WHERE r.car_id = c.id) AS n FROM cars c ORDER BY c.created_at, c.id"
        )
        return [_car_row(r) for r in rows]

    def save_car(self, db: sqlite3.Connection, car_id: str, fields: dict[str, Any]) -> CarRow:
        """Insert the car, or update the given fields of an existing one (inside a transaction)."""
        existing = self._car(db, car_id)
        if existing is None:
            db.execute(
                "INSERT INTO cars (id, label, number, team, driver, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (car_id, fields["label"], fields.get("number"), fields.get("team"), fields.get("driver"),
                 json.dumps(fields.get("meta") or {}), time.time()),
            )
        else:
            for column in ("label", "number", "team", "driver"):
                if column in fields:
                    db.execute(f"UPDATE cars SET {column} = ? WHERE id = ?", (fields[column], car_id))
            if "meta" in fields:
                db.execute("UPDATE cars SET meta = ? WHERE id = ?", (json.dumps(fields["meta"] or {}), car_id))
        car = self._car(db, car_id)
        assert car is not None
        return car

    def add_references(
        self, db: sqlite3.Connection, car_id: str, model: str,
        entries: list[ReferenceEntry],
    ) -> list[ReferenceRow]:
        """The references of one car (inside a transaction)."""
        now = time.time()
        rows = []
        for entry in entries:
            words = None if entry.words is None else sorted(entry.words)
            cursor = db.execute(
                "INSERT INTO refs (car_id, source, box, model, embedding, quality, added_at, words)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (car_id, entry.source, json.dumps(entry.box), model, _blob(entry.embedding), entry.quality, now,
                 None if words is None else json.dumps(words)),
            )
            assert cursor.lastrowid is not None
            rows.append(ReferenceRow(cursor.lastrowid, car_id, entry.source, entry.box, model, entry.quality, now, words))
        return rows

    def remove_car(self, car_id: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM cars WHERE id = ?", (car_id,)).rowcount > 0

    def merge_cars(self, into: str, sources: list[str]) -> None:
        with self.transaction() as db:
            for source in sources:
                db.execute("UPDATE refs SET car_id = ? WHERE car_id = ?", (into, source))
                db.execute("UPDATE detections SET car_id = ? WHERE car_id = ?", (into, source))
                db.execute("DELETE FROM cars WHERE id = ?", (source,))

    def remove_reference(self, reference_id: int) -> str | None:
        """Deletes a reference; returns its car's id, or None if there was none."""
        with self.transaction() as db:
            row = db.execute("SELECT car_id FROM refs WHERE id = ?", (reference_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM refs WHERE id = ?", (reference_id,))
            return str(row["car_id"])

    def references(self, car_id: str | None = None) -> list[ReferenceRow]:
        """The references of one car, or of every car."""
        rows = (self._rows("SELECT * FROM refs ORDER BY id") if car_id is None
                else self._rows("SELECT * FROM refs WHERE car_id = ? ORDER BY id", (car_id,)))
        return [_reference_row(r) for r in rows]

    def car_words(self) -> dict[str, set[str]]:
        """Each car's words, read on its references (cars with none read are left out)."""
        words: dict[str, set[str]] = {}
        for row in self._rows("SELECT car_id, words FROM refs WHERE words IS NOT NULL AND words != '[]'"):
            words.setdefault(row["car_id"], set()).update(json.loads(row["words"]))
        return words

    def references_never_read(self) -> list[ReferenceRow]:
        """References whose words were never read (enrolled by an earlier version, or their photo was unreadable)."""
        return [_reference_row(r) for r in self._rows("SELECT * FROM refs WHERE words IS NULL ORDER BY id")]

    def set_words(self, words: list[tuple[int, frozenset[str]]]) -> None:
        """(reference id, the words read on it) of existing references; one transaction."""
        with self.transaction() as db:
            db.executemany("UPDATE refs SET words = ? WHERE id = ?",
                           [(json.dumps(sorted(read)), reference_id) for reference_id, read in words])

    def references_without(self, model: str) -> list[ReferenceRow]:
        """References that `model` has not embedded (enrolled while another model was active)."""
        rows = self._rows(
            "SELECT * FROM refs WHERE model != ? AND id NOT IN (SELECT ref_id FROM ref_embeddings WHERE model = ?)"
            " ORDER BY id", (model, model))
        return [_reference_row(r) for r in rows]

    def add_embeddings(self, model: str, embeddings: list[tuple[int, np.ndarray]]) -> None:
        """(reference id, vector) of existing references, as embedded by `model`; one transaction."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO ref_embeddings (ref_id, model, embedding) VALUES (?, ?, ?)",
                           [(ref_id, model, _blob(vector)) for ref_id, vector in embeddings])

    def reference_vectors(self, model: str, dim: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(ids, car ids, (N, dim) embeddings) of every reference embedded by `model`."""
        rows = self._rows(
            "SELECT id, car_id, embedding FROM refs WHERE model = ?"
            " UNION ALL SELECT r.id, r.car_id, e.embedding FROM ref_embeddings e JOIN refs r ON r.id = e.ref_id"
            " WHERE e.model = ? ORDER BY id",
            (model, model),
        )
        ids = np.array([r["id"] for r in rows], dtype=np.uint64)
        vectors = np.frombuffer(b"".join(r["embedding"] for r in rows), "<f4").reshape(len(rows), dim)
        return ids, [r["car_id"] for r in rows], vectors

    # --- tagged photos -------------------------------------------------------

    def photo_done(self, content_hash: str, models: str) -> bool:
        return bool(self._rows("SELECT 1 FROM photos WHERE content_hash = ? AND models = ?", (content_hash, models)))

    def save_photo(
        self, path: str, content_hash: str, models: str, width: int, height: int, sensor_scale: float | None,
        detections: list[NewDetection], camera: str | None = None, captured_at: float | None = None,
    ) -> SavedPhoto:
        """One photo and its detections, replacing every earlier tagging of the
        same content: a photo's result is its latest tagging, whatever models
        or settings it ran with, so results and exports hold each photo once.
        The user's reviews outlive it: each passes to the new detection boxing
        the same vehicle (IoU >= REVIEW_KEPT_IOU), and a confirmed vehicle the
        new tagging does not find is kept as it was confirmed."""
        with self.transaction() as db:
            reviewed = db.execute(
                "SELECT d.*, COALESCE(d.models, p.models) AS tagged_with FROM detections d JOIN photos p ON p.id = d.photo_id"
                " WHERE p.content_hash = ? AND d.review IS NOT NULL ORDER BY d.id", (content_hash,)).fetchall()
            replaced = db.execute("DELETE FROM photos WHERE content_hash = ?", (content_hash,)).rowcount > 0
            cursor = db.execute(
                "INSERT INTO photos (path, content_hash, models, width, height, sensor_scale, tagged_at, camera, captured_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (path, content_hash, models, width, height, sensor_scale, time.time(), camera, captured_at),
            )
            photo_id = cursor.lastrowid
            ids = []
            for d in detections:
                cursor = db.execute(
                    "INSERT INTO detections (photo_id, box, detector_score, label, decision, car_id, score, candidates,"
                    " embedding, number, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (photo_id, json.dumps(d.box), d.detector_score, d.label, d.decision, d.car_id, d.score,
                     json.dumps(d.candidates), _blob(d.embedding), d.number,
                     None if d.evidence is None else json.dumps(d.evidence)),
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            self._keep_reviews(db, photo_id, reviewed, ids, [d.box for d in detections])
            return SavedPhoto(ids, replaced)

    @staticmethod
    def _keep_reviews(db: sqlite3.Connection, photo_id: int | None, reviewed: list[sqlite3.Row], ids: list[int],
                      boxes: list[list[float]]) -> None:
        """The reviews of a photo's earlier tagging, moved onto its new detections `ids` (with `boxes`)."""
        overlap = box_iou(np.asarray([json.loads(r["box"]) for r in reviewed], np.float32).reshape(-1, 4),
                          np.asarray(boxes, np.float32).reshape(-1, 4))
        taken: set[int] = set()
        for row, ious in zip(reviewed, overlap):
            free = [j for j in np.argsort(-ious, kind="stable").tolist() if j not in taken]
            if free and ious[free[0]] >= REVIEW_KEPT_IOU:
                taken.add(free[0])
                _set_review(db, ids[free[0]], row["review"], row["car_id"])
            elif row["review"] == "confirmed":
                db.execute(
                    "INSERT INTO detections (photo_id, box, detector_score, label, decision, car_id, score, candidates,"
                    " review, embedding, number, evidence, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (photo_id, row["box"], row["detector_score"], row["label"], row["decision"], row["car_id"],
                     row["score"], row["candidates"], row["review"], row["embedding"], row["number"], row["evidence"],
                     row["tagged_with"]),
                )

    def match_detections(self, matches: list[tuple[int, str, float | None, dict[str, Any]]]) -> None:
        """(detection id, car id, score, evidence) of detections matched after
        tagging (by their burst); one transaction. Reviewed ones are the user's and stay."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE detections SET decision = 'match', car_id = ?, score = ?, evidence = ? WHERE id = ? AND review IS NULL",
                [(car_id, score, json.dumps(evidence), detection_id) for detection_id, car_id, score, evidence in matches])

    def query_detections(
        self, car_id: str | None, number: str | None, decision: str | None, min_score: float | None,
        review: str | None, limit: int, offset: int,
    ) -> tuple[list[DetectionRow], int]:
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        for column, value in (("d.car_id", car_id), ("d.number", number), ("d.decision", decision)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if min_score is not None:
            where.append("d.score >= ?")
            args.append(min_score)
        if review is not None:
            where.append("d.review IS NULL" if review == "pending" else "d.review = ?")
            args += [] if review == "pending" else [review]
        clause = " AND ".join(where)
        total = self._rows(f"SELECT COUNT(*) AS n FROM detections d WHERE {clause}", args)[0]["n"]
        rows = self._rows(
            f"SELECT d.*, p.path, p.sensor_scale FROM detections d JOIN photos p ON p.id = d.photo_id WHERE {clause}"
            " ORDER BY p.path, d.id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [_detection_row(r) for r in rows], int(total)

    def detection(self, detection_id: int) -> tuple[DetectionRow, np.ndarray, str] | None:
        """A detection, its embedding, and the models key of the tagging that computed it (its photo's,
        unless it is a confirmed vehicle kept from an earlier tagging)."""
        rows = self._rows(
            "SELECT d.*, p.path, p.sensor_scale, COALESCE(d.models, p.models) AS tagged_with FROM detections d"
            " JOIN photos p ON p.id = d.photo_id WHERE d.id = ?",
            (detection_id,))
        if not rows:
            return None
        return _detection_row(rows[0]), np.frombuffer(rows[0]["embedding"], "<f4").copy(), rows[0]["tagged_with"]

    def detection_vectors(self, detection_ids: list[int]) -> np.ndarray:
        """(N, dim) embeddings of detections, in the order given."""
        marks = ",".join("?" * len(detection_ids))
        rows = {r["id"]: r["embedding"] for r in self._rows(f"SELECT id, embedding FROM detections WHERE id IN ({marks})", detection_ids)}
        return np.stack([np.frombuffer(rows[i], "<f4") for i in detection_ids])

    def review(self, detection_id: int, state: str, car_id: str | None) -> None:
        with self.transaction() as db:
            _set_review(db, detection_id, state, car_id)


def _set_review(db: sqlite3.Connection, detection_id: int, state: str, car_id: str | None) -> None:
    """Confirmed: the detection is that car, a match; rejected: its match is ignored."""
    if state == "confirmed":
        db.execute("UPDATE detections SET review = ?, car_id = ?, decision = 'match' WHERE id = ?",
                   (state, car_id, detection_id))
    else:
        db.execute("UPDATE detections SET review = ? WHERE id = ?", (state, detection_id))


def _reference_row(r: sqlite3.Row) -> ReferenceRow:
    return ReferenceRow(r["id"], r["car_id"], r["source"], json.loads(r["box"]), r["model"], r["quality"], r["added_at"],
                        None if r["words"] is None else json.loads(r["words"]))


def _car_row(row: sqlite3.Row) -> CarRow:
    return CarRow(row["id"], row["label"], row["number"], row["team"], row["driver"], json.loads(row["meta"]), row["n"])


def _detection_row(row: sqlite3.Row) -> DetectionRow:
    return DetectionRow(
        id=row["id"], photo_id=row["photo_id"], path=row["path"], box=json.loads(row["box"]),
        detector_score=row["detector_score"], label=row["label"], decision=row["decision"], car_id=row["car_id"],
        score=row["score"], candidates=json.loads(row["candidates"]), review=row["review"],
        sensor_scale=row["sensor_scale"], number=row["number"],
        evidence=None if row["evidence"] is None else json.loads(row["evidence"]),
    )
