"""A library folder: the database, the reference index of the active
embedder, and the writer lock, opened and kept consistent together."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np

from sidecar.errors import InvalidParams, NotFound
from sidecar.files import write_atomic
from sidecar.inference.manifest import EmbedderSpec
from sidecar.library.index import ReferenceIndex
from sidecar.library.lock import LibraryLock
from sidecar.library.store import CarRow, ReferenceEntry, ReferenceRow, Store
from sidecar.stages.match import unit_mean

log = logging.getLogger(__name__)
DATABASE = "library.sqlite"
# The library's own embedder (`adapt`): its spec here, its file in MODELS.
ADAPTED_EMBEDDER = "embedder.json"
MODELS = "models"
T = TypeVar("T")


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def locked(self: Library, *args: Any, **kwargs: Any) -> T:
        with self._writing:
            return method(self, *args, **kwargs)

    return locked


class EmbeddedReferences:
    """The references one model embedded, as identify searches them: the
    index, the car of each reference and each car's mean reference. A
    library changing model replaces it whole, so a search holding one stays
    consistent."""

    def __init__(self, index: ReferenceIndex, ids: np.ndarray, cars: list[str]) -> None:
        self.index = index
        self._car_of: dict[int, str] = {}
        self._references_of: dict[str, set[int]] = {}
        # Computed on first use; dropped whenever the car's references change (every rival then).
        self._means: dict[str, np.ndarray] = {}
        self._rivals: dict[str, float] = {}  # -inf: no other car
        self._stacked: tuple[list[str], np.ndarray] | None = None  # every car's mean, one row each
        self._generation = 0
        self._lock = threading.Lock()
        self.assign(ids.tolist(), cars)

    def ids(self) -> np.ndarray:
        return np.array(sorted(self._car_of), np.uint64)

    def car_of(self, reference_id: int) -> str | None:
        """The reference's car; None once removed (a search may still hold its id)."""
        return self._car_of.get(reference_id)

    def holds(self, reference_id: int) -> bool:
        return reference_id in self._car_of

    def mean_reference(self, car_id: str) -> np.ndarray | None:
        """The normalised mean of the car's reference vectors; None once it has none."""
        mean = self._means.get(car_id)
        if mean is None:
            with self._lock:
                references = self._references_of.get(car_id)
                if not references:
                    return None
                mean = self._means[car_id] = unit_mean(self.index.vectors(sorted(references)))
        return mean

    def look_alikes(self, car_id: str, threshold: float) -> list[tuple[str, float]]:
        """The other cars whose mean reference is at least `threshold` similar to this car's, with
        that similarity, most alike first."""
        return sorted([pair for pair in self._alike(car_id) if pair[1] >= threshold], key=lambda pair: -pair[1])

    def rival(self, car_id: str) -> float | None:
        """The similarity of the car's mean reference to its closest other car's (None: no other car)."""
        value = self._rivals.get(car_id)
        if value is None:
            generation = self._generation
            value = max((similarity for _, similarity in self._alike(car_id)), default=-np.inf)
            with self._lock:
                if generation == self._generation:  # no car changed meanwhile: the value is current
                    self._rivals[car_id] = value
        return None if value == -np.inf else value

    def _alike(self, car_id: str) -> list[tuple[str, float]]:
        """Every other car with its mean reference's similarity to this car's."""
        mine = self.mean_reference(car_id)
        if mine is None:
            return []
        cars, means = self._means_stacked()
        return [(car, float(similarity)) for car, similarity in zip(cars, means @ mine) if car != car_id]

    def _means_stacked(self) -> tuple[list[str], np.ndarray]:
        """Every car's mean reference, one row each: a car's similarity to all the others is one product."""
        stacked = self._stacked
        if stacked is None:
            generation = self._generation
            with self._lock:
                cars = list(self._references_of)
            means = [(car, mean) for car in cars if (mean := self.mean_reference(car)) is not None]
            stacked = ([car for car, _ in means],
                       np.stack([mean for _, mean in means]) if means else np.empty((0, self.index.dim), np.float32))
            with self._lock:
                if generation == self._generation:  # no car changed meanwhile: the matrix is current
                    self._stacked = stacked
        return stacked

    def assign(self, reference_ids: list[int], cars: list[str]) -> None:
        """Give references (already in the index) to cars, taking them from any car they had."""
        with self._lock:
            self._drop(reference_ids)
            for ref, car in zip(reference_ids, cars):
                self._car_of[ref] = car
                self._references_of.setdefault(car, set()).add(ref)
                self._means.pop(car, None)
            self._rivals.clear()
            self._stacked = None
            self._generation += 1

    def forget(self, reference_ids: list[int]) -> None:
        """Before removing them from the index: a mean is never taken over a vector it no longer has."""
        with self._lock:
            self._drop(reference_ids)

    def _drop(self, reference_ids: list[int]) -> None:
        for ref in reference_ids:
            car = self._car_of.pop(ref, None)
            if car is not None:
                self._references_of[car].discard(ref)
                if not self._references_of[car]:
                    del self._references_of[car]
                self._means.pop(car, None)
        self._rivals.clear()
        self._stacked = None
        self._generation += 1


class Library:
    def __init__(self, folder: Path, model: str, dim: int) -> None:
        self.folder = folder
        self.model = model
        self.dim = dim
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = LibraryLock(folder)
        self._lock.acquire()
        # Requests run on several threads: one library write (database, then
        # index and its fingerprint) at a time keeps the two in step.
        self._writing = threading.RLock()
        self._car_words: dict[str, set[str]] | None = None  # read on first use, dropped by every change of references
        try:
            self.store = Store(folder / DATABASE)
            self.use_model(model, dim)
        except BaseException:
            self._lock.release()
            raise
        self.models_dir = folder / MODELS
        adapted = folder / ADAPTED_EMBEDDER
        self.adapted: EmbedderSpec | None = (
            msgspec.json.decode(adapted.read_bytes(), type=EmbedderSpec) if adapted.exists() else None)

    def set_adapted(self, spec: EmbedderSpec | None) -> None:
        """Make `spec` (a model file already in `models_dir`) the library's
        embedder, or go back to the shipped one; an atomic replace, so a crash
        leaves one or the other."""
        path = self.folder / ADAPTED_EMBEDDER
        if spec is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, msgspec.json.format(msgspec.json.encode(spec)).decode())
        self.adapted = spec

    def use_model(self, model: str, dim: int) -> None:
        """Search the references as embedded by `model` (its index is memory-mapped, or rebuilt from the database)."""
        with self._writing:
            index = ReferenceIndex(self.folder, model, dim)
            ids, cars, vectors = self.store.reference_vectors(model, dim)
            index.open(ids, vectors)
            self.references, self.model, self.dim = EmbeddedReferences(index, ids, cars), model, dim

    @property
    def index(self) -> ReferenceIndex:
        return self.references.index

    def close(self) -> None:
        self.store.close()
        self._lock.release()

    # --- writes: the database first (the truth), then the index ----------------

    @_serialised
    def enroll(
        self, car_id: str | None, fields: dict[str, Any],
        entries: list[ReferenceEntry], model: str,
    ) -> tuple[CarRow, list[ReferenceRow]]:
        """Create or extend a car with references embedded by `model`,
        atomically. Enrolled while the library switched to another model, they
        wait outside its index until that model embeds them."""
        car_id = car_id or f"car-{uuid.uuid4().hex[:10]}"
        if self.store.car(car_id) is None and not fields.get("label"):
            raise InvalidParams("a new car needs a label", {"field": "params.car.label"})
        with self.store.transaction() as db:
            car = self.store.save_car(db, car_id, fields)
            references = self.store.add_references(db, car_id, model, entries)
        self._car_words = None
        if references and model == self.model:
            self.index.add(np.array([r.id for r in references], np.uint64), np.stack([e.embedding for e in entries]))
            self.references.assign([r.id for r in references], [car_id] * len(references))
            self._save_index()
        return self.store.car(car_id) or car, references

    @_serialised
    def add_words(self, words: list[tuple[int, frozenset[str]]]) -> None:
        """The words read on existing references (reference id, words)."""
        self.store.set_words(words)
        self._car_words = None

    @_serialised
    def update_car(self, car_id: str, fields: dict[str, Any]) -> CarRow:
        self.require_car(car_id)
        with self.store.transaction() as db:
            return self.store.save_car(db, car_id, fields)

    @_serialised
    def save_cars(self, cars: list[tuple[str, dict[str, Any]]]) -> list[CarRow]:
        """Create or update several cars (id, fields) in one transaction: all or none."""
        with self.store.transaction() as db:
            return [self.store.save_car(db, car_id, fields) for car_id, fields in cars]

    @_serialised
    def remove_car(self, car_id: str) -> None:
        references = [r.id for r in self.store.references(self.require_car(car_id).id) if self.references.holds(r.id)]
        self.store.remove_car(car_id)
        self._car_words = None
        self._forget(references)

    @_serialised
    def merge(self, into: str, sources: list[str]) -> CarRow:
        for car_id in (into, *sources):
            self.require_car(car_id)
        if into in sources:
            raise InvalidParams("a car cannot be merged into itself", {"field": "params.sources"})
        moved = [r.id for car_id in sources for r in self.store.references(car_id) if self.references.holds(r.id)]
        self.store.merge_cars(into, sources)
        self._car_words = None
        self.references.assign(moved, [into] * len(moved))
        return self.require_car(into)

    @_serialised
    def remove_reference(self, reference_id: int) -> str:
        car_id = self.store.remove_reference(reference_id)
        if car_id is None:
            raise NotFound(f"no reference {reference_id}", {"reference": reference_id})
        self._car_words = None
        if self.references.holds(reference_id):
            self._forget([reference_id])
        return car_id

    def _forget(self, reference_ids: list[int]) -> None:
        if reference_ids:
            self.references.forget(reference_ids)
            self.index.remove(reference_ids)
            self._save_index()

    def _save_index(self) -> None:
        self.index.save(self.references.ids())

    # --- reads -----------------------------------------------------------------

    def require_car(self, car_id: str) -> CarRow:
        car = self.store.car(car_id)
        if car is None:
            raise NotFound(f"no car with id {car_id!r}", {"car": car_id})
        return car

    def car_words(self) -> dict[str, set[str]]:
        """Each car's words, read on its references: what breaks appearance's ties (`sidecar/stages/words.py`)."""
        words = self._car_words
        if words is None:
            with self._writing:  # a change of references waits, so what is kept is current
                words = self._car_words = self.store.car_words()
        return words

    def matching(self) -> tuple[str, EmbeddedReferences]:
        """The model and its references at this moment, together: a search
        made with them stays consistent while another model takes over."""
        with self._writing:
            return self.model, self.references
