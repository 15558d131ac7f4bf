"""The method table: the only list of what the sidecar answers.

Dispatch, the JSON Schema, the methods reference and the TypeScript client
are all driven from it. Handlers are bound at start-up (sidecar.serve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.protocol.messages import (
    CancelParams, DetectParams, DetectResult, EmbedParams, EmbedResult, InitializeParams, InitializeResult,
    PingResult, ProgressParams,
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
    )
}

# Server-to-client notifications, for the schema and the client.
NOTIFICATIONS: dict[str, type] = {"$/progress": ProgressParams}
