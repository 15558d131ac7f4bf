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


class ModelInfo(Message):
    name: str
    task: Literal["detect", "embed"]
    version: str
    file: str
    sha256: str
    input_size: list[int]
    status: Literal["loaded", "missing", "checksum_mismatch"]
    output_dim: Annotated[int | None, Meta(description="Embedding size, for embedders.")] = None
    problem: Annotated[str | None, Meta(description="Why the model is not loaded, and the command that builds it.")] = None


class Capabilities(Message):
    methods: list[str]
    wires: list[str]
    image_formats: list[str]
    max_image_pixels: int


class InitializeResult(Message):
    server_name: str
    server_version: str
    protocol_version: str
    models: list[ModelInfo]
    capabilities: Capabilities


class PingResult(Message):
    uptime_s: float


class CancelParams(Message):
    id: RequestId


class ProgressParams(Message):
    id: Annotated[RequestId, Meta(description="The request this progress belongs to.")]
    done: int
    total: int
    stage: Annotated[str, Meta(description="What the request is doing now.")]


class DetectParams(RequestParams, kw_only=True):
    image: ImageRef
    min_score: Annotated[float, Meta(ge=0.0, le=1.0, description="Lowest detector score reported.")] = 0.3
    classes: Annotated[
        list[str] | None,
        Meta(description="Detector class names to keep; default: the detector's vehicle classes."),
    ] = None


class Detection(Message):
    box: Box
    score: Score
    label: str


class DetectResult(Message):
    vehicles: list[Detection]
    width: int
    height: int
    model: str


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
