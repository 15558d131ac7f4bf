"""The method table: the only list of what the sidecar answers.

Dispatch, the JSON Schema, the methods reference and the TypeScript client
are all driven from it. Handlers are bound at start-up (sidecar.serve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.protocol.messages import (
    AdaptParams, AdaptResult, AdaptRevertResult, CancelParams, Car, CarDetail, CarIdParams, CarsListResult, CarsMergeParams, CarUpdateParams, DetectParams,
    DetectResult, EmbedderUseParams, EmbedderUseResult, EmbedParams, EmbedResult, EnrollParams, EntriesImportParams, EntriesImportResult, EnrollResult, ExportParams, ExportResult, IdentifyParams,
    IdentifyResult, InitializeParams, InitializeResult, PingResult, ProgressParams, ReferenceIdParams, Removed,
    ResultsQueryParams, ResultsQueryResult, ReviewParams, ReviewResult, TagParams, TagResult,
)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: type | None
    result: Any
    summary: str
    inline: bool = False
    """Answered on the read loop: only for instant, model-free methods."""
    notification: bool = False


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("initialize", InitializeParams, InitializeResult,
                   "Load the models (verifying their sha256) and report versions, models and capabilities."),
        MethodSpec("ping", None, PingResult, "Liveness check; answered even while other requests run.", inline=True),
        MethodSpec("shutdown", None, None,
                   "Finish running requests, answer queued ones as cancelled, flush and exit 0.", inline=True),
        MethodSpec("$/cancelRequest", CancelParams, None,
                   "Cancel a request by id; it is answered with error -32800.", inline=True, notification=True),
        MethodSpec("detect", DetectParams, DetectResult,
                   "Find the vehicles in an image: boxes in original-image pixels, best first."),
        MethodSpec("embed", EmbedParams, EmbedResult,
                   "Appearance embedding of an image region (L2-normalised float32)."),
        MethodSpec("embedder.use", EmbedderUseParams, EmbedderUseResult,
                   "Switch the library to another embedder: its references are embedded first (progress, cancellable) "
                   "while identify and tag keep the current model; the new index replaces the old only when complete."),
        MethodSpec("enroll", EnrollParams, EnrollResult,
                   "Create a car, or add references to one, from reference images (the dominant vehicle unless boxes are given)."),
        MethodSpec("entries.import", EntriesImportParams, EntriesImportResult,
                   "Create or update cars from an entry list (CSV file or rows): number, driver(s), team, class, car, colours."),
        MethodSpec("cars.update", CarUpdateParams, Car, "Change a car's label, number, team, driver or metadata."),
        MethodSpec("cars.remove", CarIdParams, Removed, "Remove a car and its references; its results become unmatched."),
        MethodSpec("cars.merge", CarsMergeParams, Car, "Move the references and results of `sources` into `into`, then remove them."),
        MethodSpec("references.remove", ReferenceIdParams, Removed, "Remove one reference image of a car."),
        MethodSpec("cars.list", None, CarsListResult, "Every enrolled car."),
        MethodSpec("cars.get", CarIdParams, CarDetail, "One car and its references."),
        MethodSpec("identify", IdentifyParams, IdentifyResult,
                   "Detect the vehicles of an image and name each: match, ambiguous or unknown, with candidates."),
        MethodSpec("tag", TagParams, TagResult,
                   "Identify every photo of folders or lists, storing results; photos already tagged are skipped. "
                   "Runs in the background: detect, embed, enroll and identify sent meanwhile go first."),
        MethodSpec("results.query", ResultsQueryParams, ResultsQueryResult,
                   "Stored detections by car, decision, score or review state."),
        MethodSpec("results.confirm", ReviewParams, ReviewResult,
                   "The user confirms a detection's car (optionally adding its crop as a reference)."),
        MethodSpec("results.reject", ReviewParams, ReviewResult, "The user rejects a detection's match."),
        MethodSpec("export", ExportParams, ExportResult,
                   "Write the results as CSV or JSON, or as XMP sidecar files beside the photos."),
        MethodSpec("adapt", AdaptParams, AdaptResult,
                   "Fine-tune the embedder on the event's unlabelled photos; use it when it is better on the enrolled "
                   "references. A car in the photos that nobody enrolled is not checked: among cars of one shape it "
                   "can be learnt as an enrolled car (README: Adapting the embedder to an event). Runs in the "
                   "background, as tag does."),
        MethodSpec("adapt.revert", None, AdaptRevertResult,
                   "Go back to the shipped embedder (the adapted model stays in the library)."),
    )
}

# Server-to-client notifications, for the schema and the client.
NOTIFICATIONS: dict[str, type] = {"$/progress": ProgressParams}
