"""models/manifest.json: what each model is, where it came from, and how to
feed it. Read at start-up; every model is checked against its sha256 before
a session is created, so a half-written or swapped file is refused by name."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from sidecar.errors import ModelMissing

log = logging.getLogger(__name__)

LOCAL_BUILDS_FILE = "local-builds.json"
"""Beside the models, written by `build.py models` (never committed): each trained model it built on
an instruction set the manifest pins no build for, by name: {"sha256", "built_on", "manifest_sha256"}."""

BUILD_COMMAND = "python3 build.py models"


class Source(Struct, frozen=True, forbid_unknown_fields=True):
    registry: Literal["npm", "pypi", "local"]
    package: str
    version: str
    files: list[str]
    licence: str
    upstream: str = ""


class InputSpec(Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    height: int
    width: int
    channel_order: Literal["rgb", "bgr"]
    scale: float
    """Multiply 0-255 pixels by this first ..."""
    mean: Annotated[list[float], Meta(min_length=3, max_length=3)]
    std: Annotated[list[float], Meta(min_length=3, max_length=3)]
    """... then subtract mean and divide by std, per channel."""
    resize: Literal["letterbox", "stretch", "fit"]
    """fit: scaled to `height` rows keeping the aspect ratio, at most `width` columns (text lines)."""


class ModelBase(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="task"):
    name: str
    version: str
    file: str
    sha256: str
    source: Source
    input: InputSpec
    build: str = BUILD_COMMAND
    rebuilt: dict[str, str] = msgspec.field(default_factory=dict)
    """The same build's sha256 on other instruction sets (named as `Training.built_on`), also accepted:
    torch rounds its sums per instruction set, so a model it trains or exports comes out in other
    bytes on each."""


class Training(Struct, frozen=True, forbid_unknown_fields=True):
    """How a model the project trained itself was made, and how good it is."""

    starting_weights: str
    data: list[str]
    recipe: str
    validation: dict[str, str]
    """Figures on data never trained on, from the command in `measured_with`."""
    measured_with: str
    built_on: str = ""
    """The machine and vector instructions of the build `sha256` pins and `validation` measured
    (empty: not recorded, as for a library's adapted embedder, made and checked on its own machine).
    Training's floating-point sums round differently with other vector instructions (AVX-512
    against AVX2, in torch and in onnxruntime alike), so the same seeded recipe gives other bytes there."""


class DetectorHead(Struct, frozen=True, forbid_unknown_fields=True):
    """One set of per-stride outputs of a detector graph and what its classes are."""

    score_outputs: list[str]
    """nanodet-gfl: per-stride class-score outputs (sigmoid applied), in the
    detector's `strides` order; yolo: the one output holding boxes and scores."""
    box_outputs: list[str]
    """nanodet-gfl: per-stride box-distribution outputs (4 x (reg_max+1)
    logits), in `strides` order; yolo: the same one output."""
    classes: list[str]
    vehicle_classes: list[str]
    """Classes reported by default: the head's names for vehicles. None: the
    head answers only when asked for its classes by name (the project's
    detector keeps the COCO head so, bench.decoding says why)."""
    min_score: float = 0.3
    """Lowest score reported by default: each head scores on its own scale
    (`python -m bench.detection` prints recall and false boxes per threshold)."""
    lone_score: float | None = None
    """Where the head finds nothing at `min_score`, its best box from this
    score is reported alone: a photo taken at a race mostly shows a car, and
    the head's best box just under its threshold is mostly that car. One box,
    so a photo of the pits or the crowd gets at most one false box; at the
    default scores only, and never in tiles (`python -m bench.detection`
    measures it on photos with a car and without). None: no such box."""
    drop_nested: float | None = None
    """Of two boxes of the head one of which lies this share or more inside
    the other, keep the better-scoring one (detect.drop_nested): the pieces
    of a car (nose, rear wing) a head boxes beside the whole car, and the
    loose boxes it draws around a car, mostly track. None keeps them;
    `python -m bench.containment` measures it, with its cost on photos of
    several cars."""


class DetectorSpec(ModelBase, tag="detect"):
    decoder: Literal["nanodet-gfl", "yolo"]
    """sidecar/stages/detect.py: NanoDet's GFL heads, or an ultralytics YOLOv8/11 export."""
    heads: Annotated[list[DetectorHead], Meta(min_length=1)]
    """Tried in order: the first head that finds a vehicle answers for the image."""
    strides: list[int] = []
    reg_max: int = 0
    """nanodet-gfl: the grid strides of each head's outputs and the box distributions' last bin."""
    training: Training | None = None


class EmbedderSpec(ModelBase, tag="embed"):
    output: str
    output_dim: int
    match_threshold: float
    """Cosine similarity a match needs by default: each embedder has its own
    scale, so each carries the value calibrated for it (`liveryid eval --sweep`)."""
    match_margin: float
    """Lead over the runner-up car a match needs by default."""
    colour_weight: float = 0.0
    """Share of the livery colour histogram in the appearance similarity
    (sidecar/stages/colour.py); 0 uses the embedding alone."""
    box_jitter: float = 0.0
    """Each box is embedded as it is, grown and shrunk by this share of its
    width and height on each side, and the three vectors averaged
    (sidecar/stages/embed.py, bench.box_jitter); 0 embeds the box alone."""
    training: Training | None = None
    adapted_from: str | None = None
    """A library's own model (`liveryid adapt`): the shipped embedder it was
    fine-tuned from, and which it stands in for in that library."""


class TextDetectorSpec(ModelBase, tag="detect-text"):
    """A DB text detector (PP-OCR): a per-pixel text probability map."""

    output: str
    longest_side: int
    """Larger images are shrunk to this longest side; each side is then rounded to a multiple of 32."""
    threshold: float
    """Pixels above this probability are text."""
    box_threshold: float
    """A region is kept when its mean probability reaches this."""
    unclip_ratio: float
    """Regions are grown by area x ratio / perimeter: the map marks the shrunk core of each text line."""


class TextReaderSpec(ModelBase, tag="read-text"):
    """A CTC text recogniser (PP-OCR): per-column character probabilities."""

    output: str
    alphabet_metadata: str
    """The model's metadata key holding its characters, one per line (index 0 is the CTC blank)."""


ModelSpec = DetectorSpec | EmbedderSpec | TextDetectorSpec | TextReaderSpec


class Manifest(Struct, frozen=True, forbid_unknown_fields=True):
    schema_version: int
    models: list[ModelSpec]

    def get(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise ModelMissing(f"model {name!r} is not in the manifest", {"model": name})


def load_manifest(models_dir: Path) -> Manifest:
    path = models_dir / "manifest.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise ModelMissing(f"no model manifest at {path}", {"path": str(path)}) from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def accepted_sha256(spec: ModelBase) -> set[str]:
    """The pinned sha256 and its builds on other instruction sets."""
    return {spec.sha256, *spec.rebuilt.values()}


def local_build_sha256(spec: ModelBase, models_dir: Path) -> str | None:
    """The sha256 of this machine's own build of a trained model, where the manifest pins none for its
    instruction set (floating-point sums round differently there, so the bytes differ from every
    pinned build), if recorded against this manifest entry; None otherwise."""
    try:
        record = json.loads((models_dir / LOCAL_BUILDS_FILE).read_text()).get(spec.name) or {}
    except (OSError, ValueError, AttributeError):
        return None
    return record.get("sha256") if record.get("manifest_sha256") == spec.sha256 else None


def verified_path(spec: ModelBase, models_dir: Path) -> Path:
    """The model file, after checking it exists and matches its sha256."""
    return verified_file(spec, models_dir)[0]


def verified_file(spec: ModelBase, models_dir: Path) -> tuple[Path, str]:
    """The model file and its sha256 (one of the pinned ones, or this machine's own build of a trained
    model where none is pinned for it), after checking it exists and matches."""
    path = models_dir / spec.file
    data = {"model": spec.name, "file": str(path), "build": spec.build}
    if not path.is_file():
        raise ModelMissing(f"model {spec.name} is missing: {path} does not exist; build it with `{spec.build}`", data)
    actual = sha256_of(path)
    if actual in accepted_sha256(spec):
        return path, actual
    if actual == local_build_sha256(spec, models_dir):
        training = getattr(spec, "training", None)
        log.warning("%s is this machine's own build (%s), which the manifest does not pin: its figures were "
                    "measured on the %s build", spec.name, actual[:12], training.built_on if training else "pinned")
        return path, actual
    raise ModelMissing(
        f"model {spec.name} at {path} has sha256 {actual}, the manifest expects {spec.sha256}; "
        f"rebuild it with `{spec.build}`",
        {**data, "sha256": actual, "expected": spec.sha256, "reason": "checksum_mismatch"},
    )
