"""The reference index of one embedding model: usearch HNSW over cosine
distance, keyed by reference id, saved beside the database.

Vectors are stored as 16-bit floats: half the memory and file size of
float32, and similarities off by less than 1e-4 (`python -m bench.matching`
prints the largest error). 8-bit integers would halve it again but move
similarities by up to 0.02, as much as the steps between thresholds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

# onnxruntime (1.32) segfaults on import when usearch (2.26) was loaded
# first; loading it here makes every import order safe.
import sidecar.inference.session  # noqa: F401  isort: skip
from usearch.index import Index  # noqa: E402  isort: skip

from sidecar.files import write_atomic  # noqa: E402

log = logging.getLogger(__name__)


DTYPE = "f16"


def fingerprint(model: str, ids: np.ndarray) -> str:
    return hashlib.sha256(model.encode() + b"\0" + np.ascontiguousarray(ids, dtype="<u8").tobytes()).hexdigest()


class ReferenceIndex:
    def __init__(self, folder: Path, model: str, dim: int) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        self.path = folder / f"refs-{safe}.usearch"
        self.meta_path = folder / f"refs-{safe}.json"
        self.model = model
        self.dim = dim
        self._lock = threading.Lock()
        self._index = self._empty()
        self._viewed = False
        self.rebuilt = False

    def _empty(self) -> Index:
        return Index(ndim=self.dim, metric="cos", dtype=DTYPE)

    def open(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Memory-map the saved index if it matches the database's references, else rebuild it."""
        expected = fingerprint(self.model, ids)
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("fingerprint") != expected or meta.get("dim") != self.dim or meta.get("dtype") != DTYPE:
                raise ValueError("stale")
            index = Index.restore(str(self.path), view=True)
            if index is None or len(index) != len(ids):
                raise ValueError("unreadable")
            self._index, self._viewed = index, True
            log.info("opened index %s (%d references)", self.path.name, len(ids))
            return
        except (OSError, ValueError, RuntimeError) as exc:
            if self.path.exists() or self.meta_path.exists():
                log.warning("rebuilding index %s from the database (%s)", self.path.name, exc)
            elif len(ids):
                log.info("building index %s from the database (%d references)", self.path.name, len(ids))
        self._index, self._viewed = self._empty(), False
        if len(ids):
            self._index.add(ids, vectors)
        self.rebuilt = bool(len(ids))
        self.save(ids)

    def save(self, ids: np.ndarray) -> None:
        """Atomic: write beside, then rename over, index first, fingerprint
        last. `ids` are the database's reference ids the index now holds."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._index.save(str(tmp))
        os.replace(tmp, self.path)
        write_atomic(self.meta_path, json.dumps({"model": self.model, "dim": self.dim, "dtype": DTYPE, "count": len(ids),
                                                 "fingerprint": fingerprint(self.model, ids)}))

    def __len__(self) -> int:
        return len(self._index)

    def search(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) reference ids and cosine similarities, best first; k <= count."""
        k = min(count, len(self._index))
        if k == 0 or len(queries) == 0:
            return np.empty((len(queries), 0), np.uint64), np.empty((len(queries), 0), np.float32)
        with self._lock:
            matches = self._index.search(np.ascontiguousarray(queries, dtype=np.float32).reshape(len(queries), -1), k)
        # HNSW may find fewer than k: one query gives only what it found, a
        # batch pads each row and says how many are real.
        counts = np.asarray(getattr(matches, "counts", [len(matches.keys)])).reshape(-1)
        keys = np.zeros((len(queries), k), np.uint64)
        similarities = np.full((len(queries), k), -np.inf, np.float32)
        found_keys = np.asarray(matches.keys, dtype=np.uint64).reshape(len(queries), -1)
        found_distances = np.asarray(matches.distances, dtype=np.float32).reshape(len(queries), -1)
        for row, count in enumerate(counts):
            keys[row, :count] = found_keys[row, :count]
            similarities[row, :count] = 1.0 - found_distances[row, :count]
        return keys, similarities

    def vectors(self, ids: list[int]) -> np.ndarray:
        """(len(ids), dim) stored vectors of references the index holds."""
        with self._lock:
            found = self._index.get(np.array(ids, np.uint64), dtype="f32")
        vectors = [v for v in (found if isinstance(found, tuple) else [found]) if v is not None]
        if len(vectors) != len(ids):
            raise KeyError(f"references missing from the index {self.path.name}")
        return np.stack(vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock:
            self._writable().add(ids, vectors)

    def remove(self, ids: list[int]) -> None:
        with self._lock:
            index = self._writable()
            for key in ids:
                index.remove(key)

    def _writable(self) -> Index:
        """A memory-mapped index is read-only: the first write copies it into memory."""
        if self._viewed:
            self._index = self._index.copy()
            self._viewed = False
        return self._index
