"""Wire framing and encoding, kept apart from dispatch.

Two wires carry the same messages:
- `json`: one UTF-8 JSON document per line (`\\n`-terminated).
- `msgpack`: each message is a 4-byte big-endian length, then that many
  bytes of msgpack. msgpack bytes may contain 0x0A, so no delimiter would do.

A reader yields whole frames (bytes) and raises FramingLost when the stream
can no longer be split into messages; the caller then stops rather than
guess where the next message starts.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal

import msgspec
import numpy as np

WireName = Literal["json", "msgpack"]
WIRES: tuple[WireName, ...] = ("json", "msgpack")
_LENGTH = struct.Struct(">I")


class FramingLost(Exception):
    """The byte stream can no longer be split into messages."""


class FrameTooLarge(Exception):
    """One message exceeded the size limit; the stream is still in step."""


def _enc_hook_json(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _enc_hook_msgpack(obj: Any) -> Any:
    # Vectors travel as little-endian float32 bytes (msgpack bin), not lists.
    if isinstance(obj, np.ndarray):
        return np.ascontiguousarray(obj, dtype="<f4").tobytes()
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


class Codec:
    """Encodes and decodes messages for one wire; encoders built once."""

    def __init__(self, wire: WireName) -> None:
        self.wire = wire
        if wire == "json":
            self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.json.Encoder(enc_hook=_enc_hook_json)
            self._decode_module: Any = msgspec.json
        else:
            self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook_msgpack)
            self._decode_module = msgspec.msgpack
        self._decoders: dict[Any, Any] = {}

    def encode(self, message: Any) -> bytes:
        return self._encoder.encode(message)

    def decode(self, data: bytes, type_: Any = Any) -> Any:
        decoder = self._decoders.get(type_)
        if decoder is None:
            decoder = self._decoders[type_] = self._decode_module.Decoder(type_)
        return decoder.decode(data)


def read_frames(stream: BinaryIO, wire: WireName, max_bytes: int) -> Iterator[bytes | FrameTooLarge]:
    """Yield each frame's bytes until end of stream.

    An oversized JSON line is skipped to its newline and reported in place
    (the stream stays in step); an oversized or truncated msgpack frame loses
    the framing and raises FramingLost.
    """
    if wire == "json":
        yield from _read_lines(stream, max_bytes)
    else:
        yield from _read_length_prefixed(stream, max_bytes)


def _read_lines(stream: BinaryIO, max_bytes: int) -> Iterator[bytes | FrameTooLarge]:
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:  # discard the rest of the oversized line
                rest = stream.readline(max_bytes)
                if not rest or rest.endswith(b"\n"):
                    break
            yield FrameTooLarge(f"message larger than {max_bytes} bytes")
            continue
        line = line.strip()
        if line:
            yield line


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_length_prefixed(stream: BinaryIO, max_bytes: int) -> Iterator[bytes | FrameTooLarge]:
    while True:
        header = _read_exact(stream, _LENGTH.size)
        if not header:
            return
        if len(header) < _LENGTH.size:
            raise FramingLost("stream ended inside a frame header")
        (size,) = _LENGTH.unpack(header)
        if size > max_bytes:
            raise FramingLost(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
        body = _read_exact(stream, size)
        if len(body) < size:
            raise FramingLost(f"stream ended {size - len(body)} bytes into a frame")
        yield body


class FrameWriter:
    """The only writer of the wire: one message per call, under a lock,
    flushed, so concurrent responses never interleave."""

    def __init__(self, stream: BinaryIO, wire: WireName) -> None:
        self._stream = stream
        self._wire = wire
        self._lock = threading.Lock()

    def write(self, payload: bytes) -> None:
        if self._wire == "json":
            frame = payload + b"\n"
        else:
            frame = _LENGTH.pack(len(payload)) + payload
        with self._lock:
            self._stream.write(frame)
            self._stream.flush()
