"""The engine: composes the stages into the protocol's methods.

Models load once, on `initialize` or on first use, under a lock; a missing
or corrupt model is reported by name (initialize lists it, the methods that
need it answer -32004) while everything else keeps working.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import msgspec
import numpy as np

from sidecar import __version__
from sidecar.config import Settings
from sidecar.errors import InvalidParams, LibraryNotOpen, ModelMissing, RpcError
from sidecar.inference.manifest import (
    DetectorSpec, EmbedderSpec, Manifest, ModelSpec, TextDetectorSpec, TextReaderSpec, load_manifest,
    verified_file, verified_path,
)
from sidecar.inference.session import OrtSession
from sidecar.inference.turns import background, interactive
from sidecar.library.library import EmbeddedReferences, Library
from sidecar.library.store import ReferenceRow
from sidecar.protocol.endpoint import RequestContext
from sidecar.protocol.framing import WIRES
from sidecar.protocol.messages import (
    PROTOCOL_VERSION, Capabilities, Detection, DetectParams, DetectResult, EmbedderUseParams, EmbedderUseResult,
    EmbedParams, EmbedResult,
    InitializeParams, InitializeResult, LibraryInfo, ModelInfo, ReadNumbers,
)
from sidecar.protocol.methods import METHODS
from sidecar.stages.decode import IMAGE_FORMATS, ImageLimits, decode_image, load_image, reopen
from sidecar.stages.detect import Detections, Detector, build_detector, detect_tiled
from sidecar.stages.embed import Embedder, appearance_dim, crop
from sidecar.stages.number import NumberReader, TextDetector, TextReader

log = logging.getLogger(__name__)
Stage = TypeVar("Stage")
REEMBED_BATCH = 16  # references decoded again and committed together (embedded, or their words read)
TASKS: dict[type, Literal["detect", "embed", "detect-text", "read-text"]] = {
    DetectorSpec: "detect", EmbedderSpec: "embed", TextDetectorSpec: "detect-text", TextReaderSpec: "read-text",
}


@dataclass(frozen=True)
class Matcher:
    embedder: Embedder
    references: EmbeddedReferences


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = ImageLimits(settings.max_image_pixels, settings.max_file_bytes)
        self._manifest: Manifest | None = None
        self._stages: dict[str, Any] = {}
        # Each loaded model's file sha256, taken when it was checked: the pin of its build on this machine.
        self._file_sha256: dict[str, str] = {}
        self._load_lock = threading.Lock()
        self._library: Library | None = None
        # The embedder chosen at start-up, or since by `embedder.use`.
        self._embedder = settings.embedder
        # Held while the library changes embedder, so `matcher` sees one model or the other, whole.
        self._switching = threading.RLock()

    # --- models --------------------------------------------------------------

    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(self.settings.models_dir)
        return self._manifest

    def _spec(self, name: str) -> tuple[ModelSpec, Path]:
        """A model's spec and folder: the open library's own embedder, else the shipped manifest's."""
        library = self._library
        if library is not None and library.adapted is not None and library.adapted.name == name:
            return library.adapted, library.models_dir
        return self.manifest().get(name), self.settings.models_dir

    def model_file(self, name: str) -> Path:
        """A model's file, checked against its sha256 (the library's own embedder or a shipped model)."""
        return verified_path(*self._spec(name))

    def _stage(self, name: str, build: Callable[[Any, OrtSession], Stage]) -> Stage:
        with self._load_lock:
            if name not in self._stages:
                spec, folder = self._spec(name)
                path, self._file_sha256[name] = verified_file(spec, folder)
                self._stages[name] = build(spec, OrtSession(path, self.settings.intra_op_threads, self.settings.spin_wait))
                log.info("loaded %s %s from %s", spec.name, spec.version, path)
            return self._stages[name]

    def library(self) -> Library:
        if self._library is None:
            raise LibraryNotOpen("no library is open: send initialize with `library` (the CLI's --library)")
        return self._library

    def open_library(self, folder: Path) -> Library:
        """Open (or create) the library, closing any other; its index belongs
        to the active embedder: the library's adapted one when it has one for
        the configured embedder and its file is intact, else the configured one."""
        embedder = self.embedder()
        if self._library is not None:
            self._library.close()
            self._library = None
        library = Library(folder, embedder.key, embedder.dim)
        self._library = library
        if self.embedder_name() != self._embedder:
            try:
                embedder = self.embedder()
            except ModelMissing as exc:
                log.warning("the library's adapted embedder cannot load, using %s: %s", self._embedder, exc.message)
                library.adapted = None
        if self._embed_missing_references(library, embedder)[0] or embedder.key != library.model:
            library.use_model(embedder.key, embedder.dim)
        self._read_missing_words(library)
        return library

    def _read_missing_words(self, library: Library) -> None:
        """Read, from their photos, the livery's words of references that have
        none on record (enrolled before words were read); those whose photo is
        gone stay unread, and are tried again at the next open."""
        missing = library.store.references_never_read()
        if not missing:
            return  # the usual open: the text models stay unloaded
        reader = self.number_reader()

        def store_words(readable: list[tuple[ReferenceRow, np.ndarray]]) -> None:
            library.add_words([(row.id, reader.read(crop(image, row.box), words=True).words) for row, image in readable])

        read, unreadable = self._read_references_again(missing, store_words)
        if read:
            log.info("read the words of %d reference(s) enrolled before words were read", read)
        if unreadable:
            log.warning("%d reference(s) cannot be read again to read their words: they break no ties", unreadable)

    def use_adapted(self, spec: EmbedderSpec | None) -> Embedder:
        """Switch the open library to its adapted embedder `spec` (None: back to
        the configured one), embedding any reference it has not embedded yet."""
        library = self.library()
        with self._switching:
            library.set_adapted(spec)
            embedder = self.embedder()
            self._embed_missing_references(library, embedder)
            library.use_model(embedder.key, embedder.dim)
        return embedder

    def _embed_missing_references(self, library: Library, embedder: Embedder,
                                  progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
        """Embed, from their photos, the references enrolled while another
        embedder was active, committing every batch (an interrupted run
        resumes where it stopped); those whose photo is gone stay out of this
        model's index (logged) and keep their rows. Returns (embedded, unreadable)."""
        def store_vectors(readable: list[tuple[ReferenceRow, np.ndarray]]) -> None:
            vectors = embedder([(image, row.box) for row, image in readable])
            library.store.add_embeddings(embedder.key, [(row.id, v) for (row, _), v in zip(readable, vectors)])

        embedded, unreadable = self._read_references_again(library.store.references_without(embedder.key),
                                                           store_vectors, progress)
        if unreadable:
            log.warning("%d reference(s) cannot be read again to embed them with %s", unreadable, embedder.key)
        return embedded, unreadable

    def _read_references_again(self, references: list[ReferenceRow],
                               commit: Callable[[list[tuple[ReferenceRow, np.ndarray]]], None],
                               progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
        """Read the references' photos again, REEMBED_BATCH at a time, and hand
        each batch's readable ones ((reference, photo)) to `commit`, which
        stores what it computes from them: an interrupted run resumes where it
        stopped. Returns (read, unreadable)."""
        read = unreadable = 0
        for start in range(0, len(references), REEMBED_BATCH):
            if progress is not None:
                progress(start, len(references))
            batch = [(r, self.reference_image(r.source)) for r in references[start : start + REEMBED_BATCH]]
            readable = [(row, image) for row, image in batch if image is not None]
            if readable:
                commit(readable)
            read += len(readable)
            unreadable += len(batch) - len(readable)
        return read, unreadable

    @background()
    def use_embedder(self, params: EmbedderUseParams, context: RequestContext) -> EmbedderUseResult:
        """Switch the open library to another embedder. Its references are
        embedded first, while identify and tag keep using the current model
        and index; only a complete new index replaces them. Cancelled, the
        library stays as it was, and the vectors made so far are kept for the next try."""
        library = self.library()
        requested = params.embedder or self.settings.embedder
        adapted = library.adapted
        # The library's adaptation of the requested model stands in for it, as on open.
        name = adapted.name if adapted is not None and adapted.adapted_from == requested else requested
        spec = self._spec(name)[0]
        if not isinstance(spec, EmbedderSpec):
            raise InvalidParams(f"{name} is a {TASKS[type(spec)]} model, not an embedder", {"field": "params.embedder"})
        embedder = self._stage(name, self._build_embedder)
        embedded, unreadable = self._embed_missing_references(
            library, embedder, lambda done, total: context.progress(done, total, "embedding references"))
        context.progress(1, 1, "index")
        with self._switching:
            library.use_model(embedder.key, embedder.dim)
            self._embedder = spec.adapted_from or name
        return EmbedderUseResult(model=embedder.key, embedded=embedded, unreadable=unreadable, references=len(library.index))

    def reference_image(self, source: str) -> np.ndarray | None:
        """The photo a reference was made from, read again (None when it is gone or was a buffer)."""
        ref = reopen(source)
        if ref is None:
            return None
        try:
            return load_image(ref, self.limits)
        except RpcError as exc:
            log.warning("reference image %s cannot be read again: %s", source, exc.message)
            return None

    def close(self) -> None:
        if self._library is not None:
            self._library.close()
            self._library = None

    def models_key(self, read_numbers: ReadNumbers, embedder: Embedder, min_score: float | None = None,
                   tiles: int = 1, threshold: float | None = None, margin: float | None = None) -> str:
        """Names and hashes of the models a tagging result depends on, and the
        settings that change what they find or decide: whether numbers were read
        on unsure vehicles only, a detector score other than the calibrated one,
        tiles, a match threshold or margin other than the embedder's. Tagging
        again with any of them changed is not a repeat; nor with the detector's
        heads changed (which classes it reports, its scores and rules), which
        change what the same file finds."""
        detector = self.detector()
        models = [(detector.spec.name, detector.spec), (embedder.key, embedder.spec)]
        if read_numbers:
            reader = self.number_reader()
            models += [(reader.detector.spec.name, reader.detector.spec), (reader.reader.spec.name, reader.reader.spec)]
        key = "+".join(f"{name}@{spec.sha256[:12]}" for name, spec in models)
        heads = hashlib.sha256(msgspec.json.encode(detector.spec.heads)).hexdigest()[:8]
        settings = [f"heads{heads}"]
        settings += ["numbers-if-unsure"] if read_numbers == "unsure" else []
        settings += [] if min_score is None else [f"min-score{min_score:g}"]
        settings += [] if tiles == 1 else [f"tiles{tiles}"]
        settings += [] if threshold in (None, embedder.spec.match_threshold) else [f"threshold{threshold:g}"]
        settings += [] if margin in (None, embedder.spec.match_margin) else [f"margin{margin:g}"]
        return "+".join([key, *settings])

    def vehicle_classes(self, names: list[str] | None) -> list[int]:
        detector = self.detector()
        if names is None:
            return detector.vehicle_class_ids
        try:
            return detector.class_ids(names)
        except KeyError as exc:
            raise InvalidParams(f"unknown classes {exc.args[0]}; the detector knows {detector.labels}",
                                {"field": "params.classes"}) from None

    def detector(self) -> Detector:
        return self._stage(self.settings.detector, build_detector)

    def number_reader(self) -> NumberReader:
        detector = self._stage(self.settings.text_detector, TextDetector)
        return NumberReader(detector, self._stage(self.settings.text_reader, TextReader))

    def matcher(self) -> Matcher:
        """The active embedder with the library's index of it, taken together:
        a photo embedded and searched with them stays consistent while the
        library switches models (tag takes one for its whole run)."""
        with self._switching:
            embedder = self.embedder()
            model, references = self.library().matching()
            if model != embedder.key:  # only while a switch is half done, which the lock rules out
                raise RuntimeError(f"the library's index is {model}'s, the embedder {embedder.key}")
            return Matcher(embedder, references)

    def embedder_name(self) -> str:
        """The configured embedder, or the open library's adaptation of it."""
        library = self._library
        if library is not None and library.adapted is not None and library.adapted.adapted_from == self._embedder:
            return library.adapted.name
        return self._embedder

    def embedder(self) -> Embedder:
        return self._stage(self.embedder_name(), self._build_embedder)

    def _build_embedder(self, spec: EmbedderSpec, session: OrtSession) -> Embedder:
        if self.settings.colour_weight is not None:
            spec = msgspec.structs.replace(spec, colour_weight=self.settings.colour_weight)
        if self.settings.box_jitter is not None:
            spec = msgspec.structs.replace(spec, box_jitter=self.settings.box_jitter)
        return Embedder(spec, session)

    def _model_info(self, name: str, load: Callable[[], object]) -> ModelInfo:
        spec = self._spec(name)[0]
        status, problem, sha256 = "loaded", None, spec.sha256
        try:
            load()
            # The file's own: a trained model built on other vector instructions has another pinned sha256.
            sha256 = self._file_sha256[name]
        except ModelMissing as exc:
            status = "checksum_mismatch" if (exc.data or {}).get("reason") == "checksum_mismatch" else "missing"
            problem = exc.message
        task = TASKS[type(spec)]
        return ModelInfo(
            name=spec.name, task=task, version=spec.version, file=spec.file, sha256=sha256,
            input_size=[spec.input.width, spec.input.height], status=status,  # type: ignore[arg-type]
            output_dim=appearance_dim(spec) if isinstance(spec, EmbedderSpec) else None, problem=problem,
            adapted_from=spec.adapted_from if isinstance(spec, EmbedderSpec) else None,
        )

    # --- methods -------------------------------------------------------------

    def initialize(self, params: InitializeParams, context: RequestContext) -> InitializeResult:
        if params.client_name:
            log.info("client %s %s, protocol %s", params.client_name, params.client_version, params.protocol_version)
        library_info = None
        if params.library:
            library = self.open_library(Path(params.library))
            library_info = LibraryInfo(
                path=str(library.folder), cars=len(library.store.cars()), references=len(library.index),
                index_rebuilt=library.index.rebuilt,
            )
        models = [
            self._model_info(self.settings.detector, self.detector),
            self._model_info(self.embedder_name(), self.embedder),
            self._model_info(self.settings.text_detector, self.number_reader),
            self._model_info(self.settings.text_reader, self.number_reader),
        ]
        return InitializeResult(
            library=library_info,
            server_name="liveryid",
            server_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            models=models,
            capabilities=Capabilities(
                methods=sorted(METHODS),
                wires=list(WIRES),
                image_formats=IMAGE_FORMATS,
                max_image_pixels=self.settings.max_image_pixels,
            ),
        )

    @interactive()
    def detect(self, params: DetectParams, context: RequestContext) -> DetectResult:
        detector = self.detector()
        class_ids = self.vehicle_classes(params.classes)
        context.progress(0, 2, "decode")
        decoded = decode_image(params.image, self.limits)
        image = decoded.pixels
        context.progress(1, 2, "detect")
        found = detect_tiled(detector, image, params.min_score, class_ids, params.tiles)
        context.progress(2, 2, "done")
        return DetectResult(
            vehicles=self._detections(found, detector.labels),
            width=image.shape[1], height=image.shape[0], model=detector.spec.name, sensor_scale=decoded.sensor_scale,
        )

    @interactive()
    def embed(self, params: EmbedParams, context: RequestContext) -> EmbedResult:
        embedder = self.embedder()
        if params.box is not None and not (params.box[2] > params.box[0] and params.box[3] > params.box[1]):
            raise InvalidParams("box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1", {"field": "params.box"})
        context.progress(0, 2, "decode")
        image = load_image(params.image, self.limits)
        context.progress(1, 2, "embed")
        vector = embedder([(image, params.box)])[0]
        context.progress(2, 2, "done")
        return EmbedResult(vector=vector, model=embedder.key, dim=int(vector.shape[0]))  # type: ignore[arg-type]

    @staticmethod
    def _detections(found: Detections, classes: list[str]) -> list[Detection]:
        return [
            Detection(box=box, score=score, label=classes[int(found.class_ids[i])])
            for i, (box, score) in enumerate(map(found.reported, range(len(found))))
        ]

    def handlers(self) -> dict[str, Callable[[Any, RequestContext], Any]]:
        return {"initialize": self.initialize, "detect": self.detect, "embed": self.embed, "embedder.use": self.use_embedder}
