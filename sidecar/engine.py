"""The engine: composes the stages into the protocol's methods.

Models load once, on `initialize` or on first use, under a lock; a missing
or corrupt model is reported by name (initialize lists it, the methods that
need it answer -32004) while everything else keeps working.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import msgspec

from sidecar import __version__
from sidecar.config import Settings
from sidecar.errors import InvalidParams, LibraryNotOpen, ModelMissing
from sidecar.inference.manifest import DetectorSpec, EmbedderSpec, Manifest, ModelBase, load_manifest, verified_path
from sidecar.inference.session import OrtSession
from sidecar.library.library import Library
from sidecar.protocol.endpoint import RequestContext
from sidecar.protocol.framing import WIRES
from sidecar.protocol.messages import (
    PROTOCOL_VERSION, Capabilities, Detection, DetectParams, DetectResult, EmbedParams, EmbedResult,
    InitializeParams, InitializeResult, LibraryInfo, ModelInfo,
)
from sidecar.protocol.methods import METHODS
from sidecar.stages.decode import IMAGE_FORMATS, ImageLimits, decode_image, load_image
from sidecar.stages.detect import Detections, NanoDetDetector
from sidecar.stages.embed import Embedder, appearance_dim, crop

log = logging.getLogger(__name__)
Stage = TypeVar("Stage")


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = ImageLimits(settings.max_image_pixels, settings.max_file_bytes)
        self._manifest: Manifest | None = None
        self._stages: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self._library: Library | None = None

    # --- models --------------------------------------------------------------

    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(self.settings.models_dir)
        return self._manifest

    def _stage(self, name: str, build: Callable[[Any, OrtSession], Stage]) -> Stage:
        with self._load_lock:
            if name not in self._stages:
                spec = self.manifest().get(name)
                path = verified_path(spec, self.settings.models_dir)
                self._stages[name] = build(spec, OrtSession(path, self.settings.intra_op_threads))
                log.info("loaded %s %s from %s", spec.name, spec.version, path)
            return self._stages[name]

    def library(self) -> Library:
        if self._library is None:
            raise LibraryNotOpen("no library is open: send initialize with `library` (the CLI's --library)")
        return self._library

    def open_library(self, folder: Path) -> Library:
        """Open (or create) the library, closing any other; its index belongs to the active embedder."""
        embedder = self.embedder()
        if self._library is not None:
            self._library.close()
            self._library = None
        self._library = Library(folder, embedder.key, embedder.dim)
        return self._library

    def close(self) -> None:
        if self._library is not None:
            self._library.close()
            self._library = None

    def models_key(self) -> str:
        """Names and hashes of the models a tagging result depends on."""
        detector, embedder = self.detector(), self.embedder()
        return f"{detector.spec.name}@{detector.spec.sha256[:12]}+{embedder.key}@{embedder.spec.sha256[:12]}"

    def vehicle_classes(self, names: list[str] | None) -> list[int]:
        detector = self.detector()
        if names is None:
            return detector.vehicle_class_ids
        try:
            return detector.class_ids(names)
        except KeyError as exc:
            raise InvalidParams(f"unknown classes {exc.args[0]}; the detector knows {detector.labels}",
                                {"field": "params.classes"}) from None

    def detector(self) -> NanoDetDetector:
        return self._stage(self.settings.detector, NanoDetDetector)

    def embedder(self) -> Embedder:
        return self._stage(self.settings.embedder, self._embedder)

    def _embedder(self, spec: EmbedderSpec, session: OrtSession) -> Embedder:
        if self.settings.colour_weight is not None:
            spec = msgspec.structs.replace(spec, colour_weight=self.settings.colour_weight)
        return Embedder(spec, session)

    def _model_info(self, name: str, load: Callable[[], object]) -> ModelInfo:
        spec: ModelBase = self.manifest().get(name)
        status, problem = "loaded", None
        try:
            load()
        except ModelMissing as exc:
            status = "checksum_mismatch" if (exc.data or {}).get("reason") == "checksum_mismatch" else "missing"
            problem = exc.message
        task: Literal["detect", "embed"] = "detect" if isinstance(spec, DetectorSpec) else "embed"
        return ModelInfo(
            name=spec.name, task=task, version=spec.version, file=spec.file, sha256=spec.sha256,
            input_size=[spec.input.width, spec.input.height], status=status,  # type: ignore[arg-type]
            output_dim=appearance_dim(spec) if isinstance(spec, EmbedderSpec) else None, problem=problem,
        )

    # --- methods -------------------------------------------------------------

    def initialize(self, params: InitializeParams, context: RequestContext) -> InitializeResult:
        if params.client_name:
            log.info("client %s %s, protocol %s", params.client_name, params.client_version, params.protocol_version)
        models = [
            self._model_info(self.settings.detector, self.detector),
            self._model_info(self.settings.embedder, self.embedder),
        ]
        library_info = None
        if params.library:
            library = self.open_library(Path(params.library))
            library_info = LibraryInfo(
                path=str(library.folder), cars=len(library.store.cars()), references=len(library.index),
                index_rebuilt=library.index.rebuilt,
            )
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

    def detect(self, params: DetectParams, context: RequestContext) -> DetectResult:
        detector = self.detector()
        class_ids = self.vehicle_classes(params.classes)
        context.progress(0, 2, "decode")
        decoded = decode_image(params.image, self.limits)
        image = decoded.pixels
        context.progress(1, 2, "detect")
        found = detector(image, params.min_score, class_ids)
        context.progress(2, 2, "done")
        return DetectResult(
            vehicles=self._detections(found, detector.labels),
            width=image.shape[1], height=image.shape[0], model=detector.spec.name, sensor_scale=decoded.sensor_scale,
        )

    def embed(self, params: EmbedParams, context: RequestContext) -> EmbedResult:
        embedder = self.embedder()
        if params.box is not None and not (params.box[2] > params.box[0] and params.box[3] > params.box[1]):
            raise InvalidParams("box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1", {"field": "params.box"})
        context.progress(0, 2, "decode")
        image = load_image(params.image, self.limits)
        context.progress(1, 2, "embed")
        vector = embedder([crop(image, params.box)])[0]
        context.progress(2, 2, "done")
        return EmbedResult(vector=vector, model=embedder.key, dim=int(vector.shape[0]))  # type: ignore[arg-type]

    @staticmethod
    def _detections(found: Detections, classes: list[str]) -> list[Detection]:
        return [
            Detection(box=box, score=score, label=classes[int(found.class_ids[i])])
            for i, (box, score) in enumerate(map(found.reported, range(len(found))))
        ]

    def handlers(self) -> dict[str, Callable[[Any, RequestContext], Any]]:
        return {"initialize": self.initialize, "detect": self.detect, "embed": self.embed}
