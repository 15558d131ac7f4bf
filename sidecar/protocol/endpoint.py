"""JSON-RPC dispatch: one method table, requests run off the read loop.

The read loop only decodes envelopes and routes them. Requests run on a
bounded pool of worker threads, so `ping` and `$/cancelRequest` are answered
while inference runs; responses carry their request's id and may leave out
of order. Exactly one response per request, whatever happens to it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from sidecar.errors import InternalError, InvalidParams, InvalidRequest, MethodNotFound, ParseError, RequestCancelled, RpcError
from sidecar.protocol.framing import Codec, FrameTooLarge, FrameWriter
from sidecar.protocol.messages import (
    CancelParams, ErrorObject, Notification, PingResult, ProgressParams, Request, RequestId, Response,
    decode_error_path,
)
from sidecar.protocol.methods import METHODS, MethodSpec

log = logging.getLogger(__name__)


class CancelToken:
    """Set by `$/cancelRequest`; long handlers check it between stages (a
    running thread cannot be interrupted, so cancellation is cooperative)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise RequestCancelled("request cancelled")


@dataclass(frozen=True)
class RequestContext:
    id: RequestId
    token: CancelToken
    report_progress: bool
    _notify: Callable[[str, Any], None]

    def progress(self, done: int, total: int, stage: str, rate: float | None = None) -> None:
        """Mark a stage boundary: honour a pending cancel, and report progress
        if the client asked for it."""
        self.token.check()
        if self.report_progress:
            eta = round((total - done) / rate, 1) if rate else None
            rounded = None if rate is None else round(rate, 2)
            self._notify("$/progress", ProgressParams(id=self.id, done=done, total=total, stage=stage, rate=rounded, eta_s=eta))


def quiet_context() -> RequestContext:
    """For calling a handler directly (the CLI, benchmarks, tests): no progress reports, never cancelled."""
    return RequestContext(0, CancelToken(), False, lambda method, params: None)


Handler = Callable[[Any, RequestContext], Any]


class Endpoint:
    def __init__(self, handlers: dict[str, Handler], codec: Codec, writer: FrameWriter, workers: int) -> None:
        builtin: dict[str, Handler] = {
            "ping": self._ping,
            "shutdown": self._shutdown,
            "$/cancelRequest": self._cancel,
        }
        self._handlers = {**handlers, **builtin}
        missing = set(METHODS) - set(self._handlers)
        if missing:
            raise ValueError(f"no handler for {sorted(missing)}")
        self._codec = codec
        self._writer = writer
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="request")
        self._pending: dict[RequestId, tuple[Future[Any], CancelToken]] = {}
        self._pending_lock = threading.Lock()
        self._started = time.monotonic()
        self._stopping = False

    # --- read loop ---------------------------------------------------------

    def serve(self, frames: Iterable[bytes | FrameTooLarge]) -> None:
        """Handle frames until `shutdown` or end of input, then finish the
        requests already running (queued ones are answered as cancelled)."""
        try:
            for frame in frames:
                if isinstance(frame, FrameTooLarge):
                    self._send_error(None, InvalidRequest(str(frame)))
                    continue
                self._handle_frame(frame)
                if self._stopping:
                    break
        finally:
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _handle_frame(self, frame: bytes) -> None:
        try:
            request = self._codec.decode(frame, Request)
        except msgspec.ValidationError as exc:
            self._send_error(self._salvage_id(frame), InvalidRequest(f"not a JSON-RPC request: {exc}"))
            return
        except msgspec.DecodeError as exc:
            self._send_error(None, ParseError(f"malformed message: {exc}"))
            return
        is_notification = request.id is msgspec.UNSET
        request_id = None if is_notification else request.id
        if request.jsonrpc != "2.0":
            self._send_error(request_id, InvalidRequest('"jsonrpc" must be "2.0"'))
            return
        spec = METHODS.get(request.method)
        if spec is None:
            if not is_notification:
                self._send_error(request_id, MethodNotFound(f"method not found: {request.method}"))
            elif not request.method.startswith("$/"):
                log.warning("unknown notification %s ignored", request.method)
            return
        try:
            params = self._decode_params(spec, request.params)
        except RpcError as exc:
            if not is_notification:
                self._send_error(request_id, exc)
            return
        if is_notification:
            if spec.inline:  # a notification has no id to report progress or cancellation under
                self._handlers[spec.name](params, RequestContext("", CancelToken(), False, self._notify))
            return
        assert request_id is not None
        self._start(spec, request_id, params, len(frame))

    def _salvage_id(self, frame: bytes) -> RequestId | None:
        try:
            value = self._codec.decode(frame)
        except msgspec.DecodeError:
            return None
        request_id = value.get("id") if isinstance(value, dict) else None
        return request_id if isinstance(request_id, (int, str)) and not isinstance(request_id, bool) else None

    def _decode_params(self, spec: MethodSpec, raw: msgspec.Raw) -> Any:
        if spec.params is None:
            return None
        data = bytes(raw)
        if not data or data in (b"null", b"\xc0"):
            data = self._codec.encode({})
        try:
            return self._codec.decode(data, spec.params)
        except msgspec.ValidationError as exc:
            field = decode_error_path(exc)
            raise InvalidParams(f"invalid params: {exc}", {"field": field}) from None

    def _start(self, spec: MethodSpec, request_id: RequestId, params: Any, size: int) -> None:
        token = CancelToken()
        progress = bool(getattr(params, "progress", False))
        context = RequestContext(request_id, token, progress, self._notify)
        if spec.inline:
            self._complete(request_id, spec.name, time.perf_counter(), size, lambda: self._handlers[spec.name](params, context))
            return
        with self._pending_lock:
            if request_id in self._pending:
                self._send_error(request_id, InvalidRequest(f"request id {request_id!r} is already in flight"))
                return
            started = time.perf_counter()
            future = self._pool.submit(self._handlers[spec.name], params, context)
            self._pending[request_id] = (future, token)
        future.add_done_callback(lambda f: self._complete(request_id, spec.name, started, size, f.result, f))

    # --- completion --------------------------------------------------------

    def _complete(
        self, request_id: RequestId, method: str, started: float, size: int,
        outcome: Callable[[], Any], future: Future[Any] | None = None,
    ) -> None:
        if future is not None:
            with self._pending_lock:
                self._pending.pop(request_id, None)
        try:
            if future is not None and future.cancelled():
                raise RequestCancelled("request cancelled before it started")
            result = outcome()
            payload = self._codec.encode(Response(id=request_id, result=result))
        except RpcError as exc:
            payload = self._error_payload(request_id, exc)
        except Exception:  # a bug, never the client's fault: log it, answer -32603
            log.error("%s (id %r) failed:\n%s", method, request_id, traceback.format_exc())
            payload = self._error_payload(request_id, InternalError(f"internal error in {method}; see the sidecar log"))
        self._writer.write(payload)
        log.debug("%s id=%r in=%dB out=%dB %.1fms", method, request_id, size, len(payload), (time.perf_counter() - started) * 1e3)

    def _error_payload(self, request_id: RequestId | None, exc: RpcError) -> bytes:
        error = ErrorObject(code=exc.code, message=exc.message, data=msgspec.UNSET if exc.data is None else exc.data)
        return self._codec.encode(Response(id=request_id, error=error))

    def _send_error(self, request_id: RequestId | None, exc: RpcError) -> None:
        log.info("error %d for id %r: %s", exc.code, request_id, exc.message)
        self._writer.write(self._error_payload(request_id, exc))

    def _notify(self, method: str, params: Any) -> None:
        self._writer.write(self._codec.encode(Notification(method=method, params=params)))

    # --- built-in methods --------------------------------------------------

    def _ping(self, params: None, context: RequestContext) -> PingResult:
        return PingResult(uptime_s=round(time.monotonic() - self._started, 3))

    def _shutdown(self, params: None, context: RequestContext) -> None:
        self._stopping = True

    def _cancel(self, params: CancelParams, context: RequestContext) -> None:
        with self._pending_lock:
            entry = self._pending.get(params.id)
        if entry is None:
            return  # finished already, or never existed: nothing to cancel
        future, token = entry
        token.cancel()
        future.cancel()  # succeeds only while queued; the done callback answers
