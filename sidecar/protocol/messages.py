"""Every message of the protocol, declared once.

protocol/schema.json and js-bindings' TypeScript types are generated from
these Structs (`python build.py generate`); CI fails when they drift.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

PROTOCOL_VERSION = "1.0"

RequestId = int | str
Score = Annotated[float, Meta(ge=0.0, le=1.0)]
Box = Annotated[
    list[float],
    Meta(min_length=4, max_length=4, description="[x1, y1, x2, y2] in original-image pixels"),
]


class Message(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Base of every protocol struct: immutable, strict about field names."""


# --- envelope ----------------------------------------------------------------


class Request(Struct, frozen=True, omit_defaults=True):
    """A request or notification as read off the wire. Params stay raw until
    the method is known, then decode into that method's own type."""

    jsonrpc: str
    method: str
    id: RequestId | None | UnsetType = UNSET
    params: Raw = Raw(b"")


class ErrorObject(Message):
    code: int
    message: str
    data: Any = UNSET


class Response(Struct, frozen=True):
    """`result` or `error`: UNSET fields are left out of the encoding."""

    id: RequestId | None
    result: Any = UNSET
    error: ErrorObject | UnsetType = UNSET
    jsonrpc: str = "2.0"


class Notification(Struct, frozen=True):
    method: str
    params: Any
    jsonrpc: str = "2.0"


# --- images ------------------------------------------------------------------


class MmapImage(Message):
    """Bytes the client wrote to a file: an encoded image, or raw pixels."""

    path: str
    offset: Annotated[int, Meta(ge=0)]
    length: Annotated[int, Meta(gt=0)]
    encoding: Literal["jpeg", "png", "webp", "tiff", "raw"]
    shape: Annotated[list[Annotated[int, Meta(gt=0)]], Meta(min_length=2, max_length=3)] | None = None
    dtype: Literal["uint8"] | None = None
    channel_order: Literal["rgb", "bgr", "rgba", "bgra", "gray"] | None = None


class ImageRef(Message):
    """Exactly one of `path` (JPEG, PNG, WebP or TIFF file) or `mmap`."""

    path: str | None = None
    mmap: MmapImage | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.mmap is None):
            raise ValueError("image needs exactly one of `path` or `mmap`")


# --- methods -----------------------------------------------------------------


class RequestParams(Message):
    progress: Annotated[bool, Meta(description="Send `$/progress` notifications for this request.")] = False


class InitializeParams(Message):
    client_name: str | None = None
    client_version: str | None = None
    protocol_version: str | None = None
    library: Annotated[
        str | None,
        Meta(description="Folder of the library to open (created if absent); needed by enroll, identify, tag and the rest."),
    ] = None


class ModelInfo(Message):
    name: str
    task: Literal["detect", "embed", "detect-text", "read-text"]
    version: str
    file: str
    sha256: Annotated[str, Meta(description=(
        "The loaded file's; else the manifest's pin. A model the project trains is pinned per instruction set "
        "(its build differs on AVX-512 and AVX2 machines), so two machines can report two values; where the "
        "manifest pins none for the machine, `build.py models` records the machine's own build, which loads with "
        "a warning on stderr (the manifest's figures are the pinned build's)."))]
    input_size: list[int]
    status: Literal["loaded", "missing", "checksum_mismatch"]
    output_dim: Annotated[int | None, Meta(description="Embedding size, for embedders.")] = None
    problem: Annotated[str | None, Meta(description="Why the model is not loaded, and the command that builds it.")] = None
    adapted_from: Annotated[str | None, Meta(
        description="The library's own embedder (made by `adapt`): the shipped model it was fine-tuned from.")] = None


class Capabilities(Message):
    methods: list[str]
    wires: list[str]
    image_formats: list[str]
    max_image_pixels: int


class LibraryInfo(Message):
    path: str
    cars: int
    references: int
    index_rebuilt: Annotated[bool, Meta(description="The reference index was missing or stale and was rebuilt from the database.")]


class InitializeResult(Message):
    server_name: str
    server_version: str
    protocol_version: str
    models: list[ModelInfo]
    capabilities: Capabilities
    library: LibraryInfo | None = None


class PingResult(Message):
    uptime_s: float


class CancelParams(Message):
    id: RequestId


class ProgressParams(Message):
    id: Annotated[RequestId, Meta(description="The request this progress belongs to.")]
    done: int
    total: int
    stage: Annotated[str, Meta(description="What the request is doing now.")]
    rate: Annotated[float | None, Meta(description="Items per second so far (tag: photos per second).")] = None
    eta_s: Annotated[float | None, Meta(description="Seconds left at that rate.")] = None


Tiles = Annotated[int, Meta(ge=1, le=3, description=(
    "Also look for small, distant cars in a tiles x tiles grid of overlapping parts of the photo, each seen at the "
    "detector's full input size: tiles^2 + 1 detector runs a photo, and more false boxes; 2 finds the most "
    "(`python -m bench.tiling`). 1: the whole photo only."))]


class DetectParams(RequestParams, kw_only=True):
    image: ImageRef
    min_score: Annotated[Score | None, Meta(description="Lowest detector score reported; default: the detector's calibrated one, and where nothing reaches it, the best box from the detector's lower lone score, alone.")] = None
    tiles: Tiles = 1
    classes: Annotated[
        list[str] | None,
        Meta(description="Detector class names to keep; default: the detector's vehicle classes."),
    ] = None


class Detection(Message):
    box: Box
    score: Score
    label: str


SensorScale = Annotated[
    float | None,
    Meta(description="For a camera RAW (its embedded JPEG preview is what is analysed): sensor pixels per image "
                     "pixel, so sensor coordinates are box x scale. Null for other images."),
]


class DetectResult(Message):
    vehicles: list[Detection]
    width: int
    height: int
    model: str
    sensor_scale: SensorScale = None


class EmbedParams(RequestParams, kw_only=True):
    image: ImageRef
    box: Annotated[Box | None, Meta(description="Region to embed; the whole image when absent.")] = None


class EmbedResult(Message):
    vector: Annotated[
        list[float],
        Meta(description="L2-normalised float32. On the msgpack wire: binary, little-endian float32 (4 x dim bytes)."),
    ]
    model: str
    dim: int


class EmbedderUseParams(RequestParams, kw_only=True):
    embedder: Annotated[str | None, Meta(
        description="A model of the manifest (`initialize` lists them); null: the one the sidecar started with.")] = None


class EmbedderUseResult(Message):
    model: Annotated[str, Meta(description="The embedder the library uses now (its adaptation, if it has one).")]
    embedded: Annotated[int, Meta(description="References embedded by it now (others were already).")]
    unreadable: Annotated[int, Meta(description="References whose photo could not be read again: left out of its index.")]
    references: Annotated[int, Meta(description="References in its index.")]


def decode_error_path(error: msgspec.ValidationError) -> str:
    """The offending field as `params.a.b`, from msgspec's message
    (`... - at `$.a.b``, and `Object missing required field `c`` for a
    field that is absent)."""
    text = str(error)
    path = "params"
    marker = " - at `$"
    if marker in text:
        text, location = text.rsplit(marker, 1)
        path += location.rstrip("`")
    missing = re.search(r"missing required field `(\w+)`", text)
    return f"{path}.{missing.group(1)}" if missing else path


# --- library: cars and references ---------------------------------------------

# Free metadata of a car (class, car model, colours, ...): any JSON object.
Metadata = Annotated[dict[str, Any], Meta(extra_json_schema={"additionalProperties": True})]


class CarChanges(Message):
    """A car's descriptive fields; on an existing car, only the fields given change."""

    label: str | UnsetType = UNSET
    number: str | None | UnsetType = UNSET
    team: str | None | UnsetType = UNSET
    driver: str | None | UnsetType = UNSET
    meta: Metadata | UnsetType = UNSET


class CarFields(CarChanges, kw_only=True):
    id: Annotated[str | UnsetType, Meta(description="Existing car to extend, or the id for a new one (generated if absent).")] = UNSET


class Car(Message):
    id: str
    label: str
    number: str | None
    team: str | None
    driver: str | None
    meta: Metadata
    references: Annotated[int, Meta(description="Number of reference images.")]


class Reference(Message):
    id: int
    car_id: str
    source: str
    box: Box
    quality: Annotated[float, Meta(description="Detector score of the reference box; 1 for a box the user gave, 0 for a whole image.")]
    added_at: float
    words: Annotated[list[str] | None, Meta(description=(
        "Words read on the reference's livery (sponsors, names), which break appearance's ties between cars; "
        "null when never read: added by an earlier version, or from a tagged detection, and its photo could not be "
        "read again (opening the library reads the words of those whose photo is there)."))] = None


class EnrollParams(RequestParams, kw_only=True):
    car: CarFields
    images: Annotated[list[ImageRef], Meta(min_length=1)]
    boxes: Annotated[
        list[Box | None] | None,
        Meta(description="One box per image (null: detect it). Without boxes the dominant vehicle of each image is used."),
    ] = None


class EnrollWarning(Message):
    image: Annotated[int, Meta(description="Index into `images`.")]
    problem: Literal["no_vehicle", "several_vehicles"]
    message: str
    boxes: list[Box] = []


class LookAlike(Message):
    car_id: str
    label: str
    similarity: Annotated[float, Meta(description="Of the two cars' mean references (each car's livery over its views).")]


class EnrollResult(Message):
    car: Car
    references: list[Reference]
    warnings: list[EnrollWarning]
    look_alikes: Annotated[list[LookAlike], Meta(description=(
        "Enrolled cars as alike as the match threshold or more, most alike first: appearance alone confuses "
        "photos of them with this car (cars of one make and shape, liveries alike), so the racing number, more "
        "references, or review decide."))] = []


class Entry(Message):
    """One row of an entry list. Other columns of a CSV land in `meta`."""

    number: Annotated[str | None, Meta(description="Racing number; an existing car with it (and the same class) is updated.")] = None
    label: Annotated[str | None, Meta(description="Default: `#<number> <driver or team>`.")] = None
    driver: Annotated[str | None, Meta(description="Driver(s), as the list writes them (e.g. `A. Driver / B. Driver`).")] = None
    team: str | None = None
    car_class: Annotated[str | None, Meta(description="The class the car races in (meta.class).")] = msgspec.field(default=None, name="class")
    car: Annotated[str | None, Meta(description="Car model (meta.car).")] = None
    colours: Annotated[list[str] | None, Meta(description="Livery colours (meta.colours).")] = None
    meta: Metadata = {}


class EntriesImportParams(RequestParams, kw_only=True):
    """Exactly one of `csv` or `rows`."""

    csv: Annotated[str | None, Meta(description=(
        "Path of a CSV entry list with a header row: number, driver(s), team, class, car, colours, label "
        "(usual synonyms and `,` `;` or tab separators are understood)."))] = None
    rows: list[Entry] | None = None

    def __post_init__(self) -> None:
        if (self.csv is None) == (self.rows is None):
            raise ValueError("entries.import needs exactly one of `csv` or `rows`")


class EntryProblem(Message):
    row: Annotated[int, Meta(description="Index of the row (0 = the first after a CSV's header).")]
    message: str


class EntriesImportResult(Message):
    created: int
    updated: int
    cars: Annotated[list[Car], Meta(description="The cars of the imported rows, in their order.")]
    problems: Annotated[list[EntryProblem], Meta(description="Rows left out, and why; the others are imported.")]


class CarUpdateParams(CarChanges, kw_only=True):
    id: str


class CarIdParams(Message):
    id: str


class CarsMergeParams(Message):
    into: str
    sources: Annotated[list[str], Meta(min_length=1, description="Cars whose references and results move into `into`; they are then removed.")]


class ReferenceIdParams(Message):
    id: int


class CarsListResult(Message):
    cars: list[Car]


class CarDetail(Message):
    car: Car
    references: list[Reference]


class Removed(Message):
    removed: str


# --- identification ----------------------------------------------------------------

Decision = Literal["match", "ambiguous", "unknown"]
ReadNumbers = bool | Literal["unsure"]


class MatchOptions(RequestParams, kw_only=True):
    top_k: Annotated[int, Meta(ge=1, le=100, description="Candidates reported per vehicle.")] = 5
    read_numbers: Annotated[ReadNumbers, Meta(
        description="Read the racing number on each vehicle and fuse it with appearance (true; 10-150 ms a vehicle, "
                    "with its size), only on vehicles appearance alone does not match (\"unsure\": faster, but a clear "
                    "appearance match is not checked against the number), or on none (false). Where it reads, the "
                    "livery's words are read too on vehicles whose appearance ties cars (`evidence.words`).")] = True
    threshold: Annotated[float | None, Meta(description="Lowest similarity for a match; default: the calibrated one.")] = None
    margin: Annotated[float | None, Meta(description="Lead over the runner-up a match needs; default: the calibrated one.")] = None
    min_score: Annotated[Score | None, Meta(description="Lowest detector score considered; default: the detector's calibrated one, and where nothing reaches it, the best box from the detector's lower lone score, alone.")] = None
    tiles: Tiles = 1


class IdentifyParams(MatchOptions, kw_only=True):
    image: ImageRef


class Candidate(Message):
    car_id: str
    label: str
    score: Annotated[float | None, Meta(
        description="Similarity of the car's closest reference, which the match threshold applies to; null for a car "
                    "that only the racing number read names.")]
    mean_score: Annotated[float | None, Meta(
        description="Similarity of the mean of the car's references (its livery over every view): appearance ranks "
                    "the candidates by it, and a match must lead the runner-up on it by the margin; null as `score`.")] = None
    rival_score: Annotated[float | None, Meta(
        description="Similarity of this car's mean reference to its closest other enrolled car's: appearance "
                    "matches the car only if `mean_score` reaches it (it looks more like the car than the car's "
                    "look-alike does); null when no other car is enrolled, or as `score`.")] = None


class AppearanceEvidence(Message):
    """What appearance alone decided."""

    decision: Decision
    car_id: str | None
    score: float | None


class NumberEvidence(Message):
    text: Annotated[str, Meta(description="The racing number read, e.g. `7` or `24B`.")]
    confidence: Annotated[Score, Meta(description="Probability of its least sure character.")]
    box: Box
    car_ids: Annotated[list[str], Meta(description="Enrolled cars carrying this number.")]


class SequenceEvidence(Message):
    """The burst this vehicle was shot in named its car (tag only)."""

    car_id: str
    frames: Annotated[int, Meta(description="Photos of the burst in which this vehicle was followed.")]
    confident: Annotated[int, Meta(description="Of them, those matched to the car on their own.")]


Signal = Literal["appearance", "words", "number", "sequence"]


class Evidence(Message):
    """Why a vehicle got its decision."""

    decided_by: Annotated[list[Signal], Meta(
        description="The signals that made the decision (empty for unknown, or ambiguous on a conflict).")]
    appearance: AppearanceEvidence
    number: Annotated[NumberEvidence | None, Meta(
        description="The number read on the vehicle: the surest naming an enrolled car, else the surest.")] = None
    conflict: Annotated[str | None, Meta(description="Why the signals disagree (the decision is then ambiguous).")] = None
    sequence: SequenceEvidence | None = None
    words: Annotated[list[str], Meta(description=(
        "Words read on the vehicle's livery (sponsors, names) that the references of cars appearance could not "
        "tell apart carry. They are read only where appearance ties cars within the margin and the numbers are "
        "read; the car with the most of them goes first, and is matched when it clears the threshold (decided by "
        "appearance and words)."))] = []


class IdentifiedVehicle(Message):
    box: Box
    detector_score: float
    label: str
    decision: Decision
    car_id: str | None
    score: Annotated[float | None, Meta(
        description="Appearance similarity of the decided car (match) or the best one (ambiguous); null when "
                    "the number alone named the car.")]
    candidates: list[Candidate]
    evidence: Evidence


class IdentifyResult(Message):
    vehicles: list[IdentifiedVehicle]
    width: int
    height: int
    sensor_scale: SensorScale = None


class TagParams(MatchOptions, kw_only=True):
    images: Annotated[list[str], Meta(min_length=1, description="Paths of photos and folders (folders are walked).")]
    recursive: bool = True
    rescan: Annotated[bool, Meta(description=(
        "Tag again photos already tagged with the same models and settings (min_score, tiles, read_numbers, threshold, "
        "margin). A photo tagged again, with these or others, has its result replaced; the user's reviews move to the "
        "new detections of the same vehicles."))] = False
    sequence_gap_s: Annotated[float, Meta(ge=0.0, le=60.0, description=(
        "Photos of one camera (EXIF body serial, else make and model) taken at most this many seconds apart form "
        "a burst, whose confident frames name the car in the others; 0 turns bursts off."))] = 2.0


class TagFailure(Message):
    path: str
    code: int
    message: str


class TagResult(Message):
    total: int
    tagged: int
    skipped: Annotated[int, Meta(description="Already tagged with the same models and settings (same content hash).")]
    replaced: Annotated[int, Meta(description=(
        "Of `tagged`, photos whose earlier result (with other models or settings, or `rescan`) this run replaced."))]
    failed: list[TagFailure]
    matched: int
    ambiguous: int
    unknown: int
    numbers: Annotated[int, Meta(description="Vehicles whose racing number was read.")]
    by_sequence: Annotated[int, Meta(description="Vehicles that only their burst named (counted in `matched`).")]
    seconds: Annotated[float, Meta(description="Wall time of the run.")]
    stage_seconds: Annotated[dict[str, float], Meta(description=(
        "Seconds per stage (read, decode, detect, embed, match, number, store, bursts), summed over threads: "
        "photos are decoded ahead while the models run, so the stages add up to more than `seconds`."))]


class ResultsQueryParams(Message):
    car_id: str | None = None
    number: Annotated[str | None, Meta(description="Only vehicles on which this racing number was read.")] = None
    decision: Decision | None = None
    min_score: float | None = None
    review: Literal["pending", "confirmed", "rejected"] | None = None
    limit: Annotated[int, Meta(ge=1, le=10000)] = 500
    offset: Annotated[int, Meta(ge=0)] = 0


class ResultDetection(Message):
    detection_id: int
    photo_id: int
    path: str
    box: Box
    detector_score: float
    label: str
    decision: Decision
    car_id: str | None
    score: float | None
    candidates: list[Candidate]
    review: Literal["confirmed", "rejected"] | None
    sensor_scale: SensorScale = None
    evidence: Annotated[Evidence | None, Meta(description="Null for photos tagged before numbers were fused.")] = None


class ResultsQueryResult(Message):
    detections: list[ResultDetection]
    total: int


class ReviewParams(Message):
    detection_id: int
    car_id: Annotated[str | None, Meta(description="confirm: the right car (default: the matched one); reject: ignored.")] = None
    add_as_reference: Annotated[bool, Meta(description="confirm: also enroll this crop as a reference of the car.")] = False


class ReviewResult(Message):
    detection: ResultDetection
    reference: Reference | None = None


class ExportParams(Message):
    format: Literal["csv", "json", "xmp"]
    output: Annotated[str | None, Meta(description="csv/json: the file to write (default: export.<format> in the library).")] = None
    overwrite: Annotated[bool, Meta(description="xmp: replace .xmp files that already exist beside photos (default: skip them).")] = False


class ExportResult(Message):
    format: str
    files: list[str]
    skipped: list[str]
    rows: int


# --- adapting the embedder to an event -------------------------------------


class AdaptParams(RequestParams, kw_only=True):
    images: Annotated[list[str], Meta(
        min_length=1, description="Photos and folders of the event (unlabelled; folders are walked).")]
    recursive: bool = True
    rounds: Annotated[int, Meta(ge=1, le=5, description="Cluster-then-train rounds.")] = 2
    iterations: Annotated[int, Meta(
        ge=1, le=1000, description="Training steps per round (64 crops each; about 2.5 s a step on 2 cores).")] = 60
    max_photos: Annotated[int, Meta(ge=10, description="Photos used at most, spread over the event.")] = 1000
    switch: Annotated[bool, Meta(
        description="Use the new model when it is better on the enrolled references (false: measure only).")] = True
    whole_field: Annotated[bool, Meta(description=(
        "Every car in the photos is enrolled (the whole entry list): crops that look like unenrolled cars are "
        "enrolled ones the current model misses, and the new model may match them."))] = False


class ReferenceCheck(Message):
    references: Annotated[int, Meta(description="References of cars with two or more, each matched against the rest.")]
    rank1: Score
    true_match: Score
    false_match: Annotated[float, Meta(
        ge=0.0, le=1.0, description="References matched to another car when their own car is left out.")]


class UnknownCheck(Message):
    crops: Annotated[int, Meta(ge=0, description=(
        "Event crops in clusters none of whose crops the current model matches to an enrolled car: "
        "as far as adapt can tell, cars nobody enrolled."))]
    matched: Annotated[int, Meta(ge=0, description=(
        "Of those, crops the new model matches to an enrolled car. More than 1% keeps the current model "
        "(unless `whole_field`): an unenrolled car learnt as an enrolled look-alike, which the references cannot "
        "show."))]


class AdaptResult(Message):
    model: Annotated[str, Meta(description="The adapted model's name (kept in the library).")]
    adapted_from: str
    photos: int
    crops: Annotated[int, Meta(description="Vehicle crops found in the photos: the unlabelled training data.")]
    radius: Annotated[float, Meta(
        description="Clustering radius of the last round: the one that best kept the references' cars apart.")]
    clusters: Annotated[int, Meta(description="Pseudo-identities in the last round.")]
    clustered: Annotated[int, Meta(description="Crops in some cluster in the last round (the rest sat out).")]
    before: ReferenceCheck
    after: ReferenceCheck
    better: Annotated[bool, Meta(description="The new model is better on the enrolled references.")]
    unknowns: UnknownCheck
    switched: bool
    reason: str
    failed: list[TagFailure]
    stage_seconds: Annotated[dict[str, float], Meta(description=(
        "Seconds per stage: references (read and embed the enrolled references), event (read the photos and find "
        "their vehicles), train (the rounds and the export), check (the new model on the references, and the "
        "event's apparently unenrolled cars under both models)."))]


class AdaptRevertResult(Message):
    model: Annotated[str, Meta(description="The embedder the library uses now.")]
