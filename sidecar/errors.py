"""JSON-RPC errors: one class per code.

Standard codes are the JSON-RPC 2.0 spec's. Application codes live in
-32000..-32099; cancellation uses LSP's RequestCancelled (-32800) because the
cancel/progress conventions are LSP's. protocol/methods.md documents them all.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RpcError(Exception):
    code: ClassVar[int]

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ParseError(RpcError):
    code = -32700


class InvalidRequest(RpcError):
    code = -32600


class MethodNotFound(RpcError):
    code = -32601


class InvalidParams(RpcError):
    code = -32602


class InternalError(RpcError):
    code = -32603


class ImageUnreadable(RpcError):
    code = -32001


class ImageTooLarge(RpcError):
    code = -32002


class MmapOutOfRange(RpcError):
    code = -32003


class ModelMissing(RpcError):
    code = -32004


class LibraryInUse(RpcError):
    code = -32005


class LibraryNotOpen(RpcError):
    code = -32006


class NotFound(RpcError):
    code = -32007


class TrainingUnavailable(RpcError):
    """The method trains a model and this installation has no torch (the binary, or no `train` extra)."""

    code = -32008


class LibraryTooNew(RpcError):
    """The library was written by a newer liveryid (a later database schema): opening it could lose data."""

    code = -32009


class RequestCancelled(RpcError):
    code = -32800


ERROR_CLASSES: tuple[type[RpcError], ...] = (
    ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError,
    ImageUnreadable, ImageTooLarge, MmapOutOfRange, ModelMissing, LibraryInUse, LibraryNotOpen, NotFound,
    TrainingUnavailable, LibraryTooNew, RequestCancelled,
)
