"""A real sidecar subprocess driven over either wire, for end-to-end tests.

Every byte the process writes to stdout must parse as a protocol frame: a
reader thread decodes strictly and records anything else as garbage, so a
stray print anywhere in the sidecar fails the test that caused it.
"""

from __future__ import annotations

import os
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]


PYTHON_SIDECAR = [sys.executable, "-m", "sidecar"]


def binary_sidecar() -> list[str] | None:
    """The compiled sidecar that `build.py test --binary` names, if any."""
    binary = os.environ.get("LIVERYID_BINARY")
    return [binary] if binary else None


class SidecarProcess:
    def __init__(self, wire: str = "json", command: list[str] | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.wire = wire
        args = [*(command or PYTHON_SIDECAR), *(extra_args or []), "serve", "--wire", wire]
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.messages: queue.Queue[Any] = queue.Queue()
        self.garbage: list[bytes] = []
        self.stderr_lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # --- writing -------------------------------------------------------------

    def encode(self, message: Any) -> bytes:
        if self.wire == "json":
            return msgspec.json.encode(message) + b"\n"
        body = msgspec.msgpack.encode(message)
        return struct.pack(">I", len(body)) + body

    def send(self, message: Any) -> None:
        self.send_bytes(self.encode(message))

    def send_bytes(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def request(self, method: str, params: Any = None, id: int | str = 1, timeout: float = 60) -> Any:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.read(timeout)

    # --- reading -------------------------------------------------------------

    def read(self, timeout: float = 60) -> Any:
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s; stderr:\n" + "\n".join(self.stderr_lines[-20:])) from None
        assert not self.garbage, f"non-protocol bytes on stdout: {self.garbage[:3]!r}"
        return message

    def _read_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            if self.wire == "json":
                line = stream.readline()
                if not line:
                    break
                try:
                    message = msgspec.json.decode(line)
                    assert isinstance(message, dict) and message.get("jsonrpc") == "2.0"
                except (msgspec.DecodeError, AssertionError):
                    self.garbage.append(line)
                    continue
            else:
                header = stream.read(4)
                if len(header) < 4:
                    if header:
                        self.garbage.append(header)
                    break
                (size,) = struct.unpack(">I", header)
                body = stream.read(size)
                try:
                    message = msgspec.msgpack.decode(body)
                    assert isinstance(message, dict) and message.get("jsonrpc") == "2.0"
                except (msgspec.DecodeError, AssertionError):
                    self.garbage.append(header + body[:200])
                    break  # framing cannot be trusted any more
            self.messages.put(message)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.decode(errors="replace").rstrip())

    # --- ending --------------------------------------------------------------

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        assert not self.garbage, f"non-protocol bytes on stdout: {self.garbage[:3]!r}"
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
