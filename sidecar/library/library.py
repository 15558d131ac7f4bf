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
from sidecar.library.store import CarRow, ReferenceRow, Store

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
            self.index, self.model, self.dim = index, model, dim
            self._ref_cars = dict(zip(ids.tolist(), cars))

    def close(self) -> None:
        self.store.close()
        self._lock.release()

    # --- writes: the database first (the truth), then the index ----------------

    @_serialised
    def enroll(
        self, car_id: str | None, fields: dict[str, Any],
        entries: list[tuple[str, list[float], np.ndarray, float]], model: str,
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
        if references and model == self.model:
            self.index.add(np.array([r.id for r in references], np.uint64), np.stack([e[2] for e in entries]))
            self._ref_cars.update({r.id: car_id for r in references})
            self._save_index()
        return self.store.car(car_id) or car, references

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
        references = [r.id for r in self.store.references(self.require_car(car_id).id) if r.id in self._ref_cars]
        self.store.remove_car(car_id)
        self._forget(references)

    @_serialised
    def merge(self, into: str, sources: list[str]) -> CarRow:
        for car_id in (into, *sources):
            self.require_car(car_id)
        if into in sources:
            raise InvalidParams("a car cannot be merged into itself", {"field": "params.sources"})
        self.store.merge_cars(into, sources)
        self._ref_cars.update({ref: into for ref, car in self._ref_cars.items() if car in sources})
        return self.require_car(into)

    @_serialised
    def remove_reference(self, reference_id: int) -> str:
        car_id = self.store.remove_reference(reference_id)
        if car_id is None:
            raise NotFound(f"no reference {reference_id}", {"reference": reference_id})
        if reference_id in self._ref_cars:
            self._forget([reference_id])
        return car_id

    def _forget(self, reference_ids: list[int]) -> None:
        if reference_ids:
            self.index.remove(reference_ids)
            for ref in reference_ids:
                self._ref_cars.pop(ref, None)
            self._save_index()

    def _save_index(self) -> None:
        self.index.save(np.array(sorted(self._ref_cars), np.uint64))

    # --- reads -----------------------------------------------------------------

    def require_car(self, car_id: str) -> CarRow:
        car = self.store.car(car_id)
        if car is None:
            raise NotFound(f"no car with id {car_id!r}", {"car": car_id})
        return car

    def car_of(self, reference_id: int) -> str:
        return self._ref_cars[reference_id]

    def matching(self) -> tuple[str, ReferenceIndex, Callable[[int], str]]:
        """The model, index and reference-to-car lookup of this moment, together:
        a search made with them stays consistent while another model takes over."""
        with self._writing:
            return self.model, self.index, self._ref_cars.__getitem__
