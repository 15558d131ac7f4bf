"""Dispatch over in-memory streams with hand-written handlers: no models."""

from __future__ import annotations

import io
import threading
from typing import Any

import msgspec
import pytest

from sidecar.errors import ImageUnreadable
from sidecar.protocol.endpoint import Endpoint, RequestContext
from sidecar.protocol.framing import Codec, FrameWriter, read_frames
from sidecar.protocol.messages import DetectResult, InitializeResult
from sidecar.protocol.methods import METHODS


class Handlers:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def unused(self, params: Any, context: RequestContext) -> InitializeResult:
        raise AssertionError("not used")

    def detect(self, params: Any, context: RequestContext) -> DetectResult:
        if params.image.path == "block":
            self.started.set()
            assert self.release.wait(5)
            context.progress(1, 2, "after-block")
        if params.image.path == "bug":
            raise ZeroDivisionError("a bug")
        if params.image.path == "missing":
            raise ImageUnreadable("no such file: missing", {"path": "missing"})
        return DetectResult(vehicles=[], width=1, height=2, model="fake")

    def table(self) -> dict[str, Any]:
        return {**{name: self.unused for name in METHODS}, "detect": self.detect}


def run(lines: list[bytes], handlers: Handlers | None = None, workers: int = 2) -> list[dict[str, Any]]:
    out = io.BytesIO()
    endpoint = Endpoint((handlers or Handlers()).table(), Codec("json"), FrameWriter(out, "json"), workers)
    endpoint.serve(read_frames(io.BytesIO(b"\n".join(lines) + b"\n"), "json", 10_000))
    return [msgspec.json.decode(line) for line in out.getvalue().splitlines()]


def detect(id: Any, path: str, **extra: Any) -> bytes:
    return msgspec.json.encode({"jsonrpc": "2.0", "id": id, "method": "detect", "params": {"image": {"path": path}, **extra}})


def test_a_result_carries_its_request_id() -> None:
    assert run([detect(41, "x.jpg")]) == [
        {"jsonrpc": "2.0", "id": 41, "result": {"vehicles": [], "width": 1, "height": 2, "model": "fake"}}
    ]


def test_application_errors_keep_their_code_and_data() -> None:
    (response,) = run([detect(1, "missing")])
    assert response["error"] == {"code": -32001, "message": "no such file: missing", "data": {"path": "missing"}}


def test_a_bug_is_an_internal_error_without_a_traceback_on_the_wire() -> None:
    (response,) = run([detect(1, "bug")])
    assert response["error"]["code"] == -32603
    assert "Traceback" not in response["error"]["message"] and "ZeroDivision" not in response["error"]["message"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"image": {"path": 3}}, "params.image.path"),
        ({"image": {"path": "a"}, "min_score": 2}, "params.min_score"),
        ({"image": {}}, "params.image"),
        ({"image": {"mmap": {"path": "a", "offset": -1, "length": 1, "encoding": "raw"}}}, "params.image.mmap.offset"),
        ({"image": {"mmap": {"path": "a", "offset": 0, "encoding": "raw"}}}, "params.image.mmap.length"),
    ],
)
def test_invalid_params_name_the_field(params: dict[str, Any], field: str) -> None:
    line = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": "detect", "params": params})
    (response,) = run([line])
    assert response["error"]["code"] == -32602
    assert response["error"]["data"] == {"field": field}


def test_exactly_one_response_per_request_in_a_mixed_stream() -> None:
    lines = [detect(i, ["x", "missing", "bug"][i % 3]) for i in range(30)] + [b"garbage", b"[]"]
    responses = run(lines)
    ids = [r["id"] for r in responses if r["id"] is not None]
    assert sorted(ids) == list(range(30))
    assert [r["error"]["code"] for r in responses if r["id"] is None] == [-32700, -32600]


def busy_endpoint(id: str) -> tuple[Endpoint, Handlers, io.BytesIO]:
    """An endpoint whose only worker is blocked inside request `id`."""
    handlers = Handlers()
    out = io.BytesIO()
    endpoint = Endpoint(handlers.table(), Codec("json"), FrameWriter(out, "json"), workers=1)
    endpoint._handle_frame(detect(id, "block"))
    assert handlers.started.wait(5)
    return endpoint, handlers, out


def test_ping_is_answered_while_every_worker_is_busy() -> None:
    endpoint, handlers, out = busy_endpoint("blocked")
    endpoint._handle_frame(b'{"jsonrpc":"2.0","id":"ping","method":"ping"}')
    assert msgspec.json.decode(out.getvalue().splitlines()[0])["id"] == "ping"
    handlers.release.set()
    endpoint.close()
    assert msgspec.json.decode(out.getvalue().splitlines()[1])["id"] == "blocked"


def test_cancel_reaches_a_running_handler_at_its_next_stage() -> None:
    endpoint, handlers, out = busy_endpoint("c")
    endpoint._handle_frame(b'{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":"c"}}')
    handlers.release.set()
    endpoint.close()
    (response,) = [msgspec.json.decode(line) for line in out.getvalue().splitlines()]
    assert response["id"] == "c" and response["error"]["code"] == -32800


def test_notifications_get_no_response_even_when_malformed() -> None:
    assert run([
        b'{"jsonrpc":"2.0","method":"detect","params":{"image":{"path":"x"}}}',
        b'{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"wrong":1}}',
        b'{"jsonrpc":"2.0","method":"$/somethingNew"}',
    ]) == []
