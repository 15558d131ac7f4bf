"""Replays protocol/conformance/vectors.jsonl, in order, over one sidecar
process per wire (and against the compiled binary when it is built): the
same vectors the JS suite replays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import FIXTURES
from tests.sidecar_process import PYTHON_SIDECAR, SidecarProcess, binary_sidecar

PROTOCOL = Path(__file__).resolve().parents[1] / "protocol"
VECTORS = [json.loads(line) for line in (PROTOCOL / "conformance/vectors.jsonl").read_text().splitlines() if line.strip()]
SCHEMA = json.loads((PROTOCOL / "schema.json").read_text())
PLACEHOLDER_TYPES = {"<number>": (int, float), "<string>": (str,), "<array>": (list,), "<object>": (dict,)}


def substitute(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        if value.startswith("$SIZE:"):
            return (FIXTURES / value[len("$SIZE:") :]).stat().st_size
        return value.replace("$FIXTURES", str(FIXTURES)).replace("$TMP", str(tmp))
    if isinstance(value, list):
        return [substitute(v, tmp) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, tmp) for k, v in value.items()}
    return value


def matches(expected: Any, actual: Any, wire: str) -> bool:
    if expected == "<vector>":
        if wire == "msgpack":
            return isinstance(actual, bytes) and len(actual) % 4 == 0 and len(actual) > 0
        return isinstance(actual, list) and len(actual) > 0 and all(isinstance(v, float) for v in actual)
    if isinstance(expected, str) and expected in PLACEHOLDER_TYPES:
        return isinstance(actual, PLACEHOLDER_TYPES[expected]) and not isinstance(actual, bool)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k], wire) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a, wire) for e, a in zip(expected, actual)
        )
    return bool(expected == actual)


def result_schema(method: str) -> dict[str, Any]:
    return {**SCHEMA["x-methods"][method]["result"], "$defs": SCHEMA["$defs"]}


def replay(process: SidecarProcess, tmp: Path) -> None:
    for vector in VECTORS:
        if "send_raw" in vector:
            raw = vector["send_raw"]
            process.send_bytes(raw["json"].encode() + b"\n" if process.wire == "json" else _msgpack_frame(raw["msgpack_hex"]))
        else:
            process.send(substitute(vector["send"], tmp))
        expected = vector["expect"]
        if expected is None:
            process.send({"jsonrpc": "2.0", "id": "after-silence", "method": "ping"})
            response = process.read()
            assert response.get("id") == "after-silence", f"{vector['name']}: got a response {response}"
            continue
        response = process.read()
        assert matches(expected, response, process.wire), f"{vector['name']}:\n expected {expected}\n got {response}"
        method = vector.get("send", {}).get("method") if isinstance(vector.get("send"), dict) else None
        if "result" in response and method and process.wire == "json":
            jsonschema.validate(response["result"], result_schema(method))


def _msgpack_frame(hex_bytes: str) -> bytes:
    body = bytes.fromhex(hex_bytes)
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_vectors_python_sidecar(wire: str, tmp_path: Path) -> None:
    process = SidecarProcess(wire, PYTHON_SIDECAR)
    try:
        replay(process, tmp_path)
        process.send({"jsonrpc": "2.0", "id": "bye", "method": "shutdown"})
        assert process.read() == {"jsonrpc": "2.0", "id": "bye", "result": None}
        assert process.wait() == 0
    finally:
        process.kill()


@pytest.mark.slow
@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_vectors_compiled_binary(wire: str, tmp_path: Path) -> None:
    command = binary_sidecar()
    if command is None:
        pytest.skip("no compiled binary: `python3 build.py test --binary` builds and tests it")
    process = SidecarProcess(wire, command)
    try:
        replay(process, tmp_path)
    finally:
        process.kill()
