from __future__ import annotations

import io
import struct
import threading

import msgspec
import numpy as np
import pytest

from sidecar.protocol.framing import Codec, FrameTooLarge, FrameWriter, FramingLost, read_frames


def test_json_lines_split_on_newlines_and_skip_blank_lines() -> None:
    stream = io.BytesIO(b'{"a":1}\n\n  {"b":2}\r\n{"c":3}')
    assert list(read_frames(stream, "json", 100)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_an_oversized_json_line_is_reported_and_the_next_line_still_read() -> None:
    stream = io.BytesIO(b'{"big":"' + b"x" * 50 + b'"}\n{"ok":1}\n')
    frames = list(read_frames(stream, "json", 20))
    assert isinstance(frames[0], FrameTooLarge)
    assert frames[1:] == [b'{"ok":1}']


def test_msgpack_frames_may_contain_newline_bytes() -> None:
    body = msgspec.msgpack.encode({"n": 10, "s": "a\nb"})
    assert b"\n" in body
    stream = io.BytesIO(struct.pack(">I", len(body)) + body + struct.pack(">I", 1) + b"\xc0")
    assert list(read_frames(stream, "msgpack", 1000)) == [body, b"\xc0"]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00\x00", "inside a frame header"),
        (struct.pack(">I", 10) + b"abc", "bytes into a frame"),
        (struct.pack(">I", 5000), "exceeds"),
    ],
)
def test_broken_msgpack_framing_is_lost_not_guessed(data: bytes, reason: str) -> None:
    with pytest.raises(FramingLost, match=reason):
        list(read_frames(io.BytesIO(data), "msgpack", 1000))


def test_writer_frames_each_message_whole_under_concurrency() -> None:
    out = io.BytesIO()
    writer = FrameWriter(out, "msgpack")
    payloads = [msgspec.msgpack.encode({"i": i, "pad": "z" * i}) for i in range(200)]
    threads = [threading.Thread(target=writer.write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.seek(0)
    assert sorted(read_frames(out, "msgpack", 10_000)) == sorted(payloads)


def test_vectors_encode_as_numbers_in_json_and_float32_bytes_in_msgpack() -> None:
    vector = np.array([0.5, -0.25, 1.0], np.float32)
    assert msgspec.json.decode(Codec("json").encode({"v": vector})) == {"v": [0.5, -0.25, 1.0]}
    raw = msgspec.msgpack.decode(Codec("msgpack").encode({"v": vector}))["v"]
    assert np.frombuffer(raw, "<f4").tolist() == [0.5, -0.25, 1.0]
