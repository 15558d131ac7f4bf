"""End to end against the real sidecar subprocess and the default models:
concurrency, cancellation, progress, lifecycle, broken clients, and the
stdout guard."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import FIXTURES
from tests.sidecar_process import ROOT, SidecarProcess

BLANK = {"path": str(FIXTURES / "blank.png")}


@pytest.fixture(scope="module")
def slow_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 48-megapixel noise JPEG: hundreds of milliseconds to decode here."""
    path = tmp_path_factory.mktemp("slow") / "big.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (6000, 8000, 3), dtype=np.uint8)
    cv2.imwrite(str(path), noise, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return {"path": str(path)}


def detect(process: SidecarProcess, id: int | str, image: dict[str, str], **params: object) -> None:
    process.send({"jsonrpc": "2.0", "id": id, "method": "detect", "params": {"image": image, **params}})


def test_ping_is_answered_while_a_slow_request_runs(sidecar: SidecarProcess, slow_image: dict[str, str]) -> None:
    detect(sidecar, "slow", slow_image)
    sidecar.send({"jsonrpc": "2.0", "id": "ping", "method": "ping"})
    assert sidecar.read()["id"] == "ping"
    assert "result" in sidecar.read()


def test_responses_leave_in_completion_order(sidecar: SidecarProcess, slow_image: dict[str, str]) -> None:
    detect(sidecar, 1, slow_image)
    detect(sidecar, 2, BLANK)
    assert [sidecar.read()["id"], sidecar.read()["id"]] == [2, 1]


def test_cancelling_a_running_request_answers_it_cancelled(sidecar: SidecarProcess, slow_image: dict[str, str]) -> None:
    detect(sidecar, 7, slow_image)
    sidecar.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 7}})
    response = sidecar.read()
    assert response["id"] == 7 and response["error"]["code"] == -32800
    assert sidecar.request("ping", id=8)["id"] == 8


def test_cancelling_a_queued_request_answers_it_at_once(slow_image: dict[str, str]) -> None:
    process = SidecarProcess("json", extra_args=["--workers", "1"])
    try:
        detect(process, "running", slow_image)
        detect(process, "queued", slow_image)
        process.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "queued"}})
        first = process.read()
        assert first["id"] == "queued" and first["error"]["code"] == -32800
        assert process.read()["id"] == "running"
    finally:
        process.kill()


def test_progress_notifications_precede_the_response(sidecar: SidecarProcess) -> None:
    detect(sidecar, "p", BLANK, progress=True)
    messages = [sidecar.read() for _ in range(4)]
    stages = [m["params"]["stage"] for m in messages[:3]]
    assert [m.get("method") for m in messages[:3]] == ["$/progress"] * 3
    assert all(m["params"]["id"] == "p" for m in messages[:3])
    assert stages == ["decode", "detect", "done"]
    assert messages[3]["id"] == "p" and "result" in messages[3]


def test_a_second_request_with_an_id_in_flight_is_refused(sidecar: SidecarProcess, slow_image: dict[str, str]) -> None:
    detect(sidecar, 5, slow_image)
    detect(sidecar, 5, BLANK)
    refused = sidecar.read()
    assert refused["id"] == 5 and refused["error"]["code"] == -32600
    assert "result" in sidecar.read()


def test_end_of_input_finishes_running_work_then_exits_zero(slow_image: dict[str, str]) -> None:
    process = SidecarProcess("json")
    detect(process, 1, slow_image)
    process.close_stdin()
    assert "result" in process.read()
    assert process.wait() == 0


def test_shutdown_answers_queued_requests_as_cancelled(slow_image: dict[str, str]) -> None:
    process = SidecarProcess("msgpack", extra_args=["--workers", "1"])
    detect(process, 1, slow_image)
    detect(process, 2, slow_image)
    process.send({"jsonrpc": "2.0", "id": 3, "method": "shutdown"})
    responses = {m["id"]: m for m in (process.read(), process.read(), process.read())}
    assert responses[3]["result"] is None
    assert "result" in responses[1]
    assert responses[2]["error"]["code"] == -32800
    assert process.wait() == 0


def test_a_lost_msgpack_frame_ends_the_process_cleanly() -> None:
    process = SidecarProcess("msgpack")
    assert process.request("ping")["id"] == 1
    process.send_bytes(struct.pack(">I", 1 << 30) + b"\x80")  # claims 1 GiB
    assert process.wait() == 2
    assert any("framing lost" in line for line in process.stderr_lines)


def test_an_oversized_json_line_is_refused_and_serving_goes_on() -> None:
    process = SidecarProcess("json", env={"LIVERYID_MAX_FRAME_BYTES": "1000"})
    try:
        process.send({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 5000}})
        assert process.read()["error"]["code"] == -32600
        assert process.request("ping", id=2)["id"] == 2
    finally:
        process.kill()


def test_msgpack_vectors_are_float32_bytes_equal_to_the_json_numbers() -> None:
    params = {"image": BLANK, "box": [4, 4, 60, 44]}
    vectors = {}
    for wire in ("json", "msgpack"):
        process = SidecarProcess(wire)
        try:
            vectors[wire] = process.request("embed", params)["result"]["vector"]
        finally:
            process.kill()
    from_bytes = np.frombuffer(vectors["msgpack"], "<f4")
    assert from_bytes.shape == (1388,)
    np.testing.assert_allclose(from_bytes, np.asarray(vectors["json"], np.float32), rtol=0, atol=0)
    assert abs(float(np.linalg.norm(from_bytes)) - 1.0) < 1e-5


def test_missing_and_corrupt_models_are_named_and_the_rest_keeps_working(tmp_path: Path) -> None:
    models = ROOT / "models"
    shutil.copy(models / "manifest.json", tmp_path / "manifest.json")
    if (models / "local-builds.json").exists():  # this machine's own builds, where the manifest pins none for it
        shutil.copy(models / "local-builds.json", tmp_path / "local-builds.json")
    shutil.copy(models / "liveryid-vehicle-nanodet-416.onnx", tmp_path / "liveryid-vehicle-nanodet-416.onnx")
    (tmp_path / "liveryid-reid-mnv2-224.onnx").write_bytes(b"not the model")
    process = SidecarProcess("json", extra_args=["--models", str(tmp_path)])
    try:
        info = process.request("initialize", {}, id=1)["result"]
        status = {m["name"]: m for m in info["models"]}
        assert status["liveryid-vehicle-nanodet"]["status"] == "loaded"
        # A loaded model reports its file's sha256 (its build for this instruction set); a refused one, the pin.
        detector_bytes = (tmp_path / "liveryid-vehicle-nanodet-416.onnx").read_bytes()
        assert status["liveryid-vehicle-nanodet"]["sha256"] == hashlib.sha256(detector_bytes).hexdigest()
        assert status["liveryid-reid-mnv2"]["status"] == "checksum_mismatch"
        pins = {m["name"]: m["sha256"] for m in json.loads((models / "manifest.json").read_text())["models"]}
        assert status["liveryid-reid-mnv2"]["sha256"] == pins["liveryid-reid-mnv2"]
        assert "build.py models" in status["liveryid-reid-mnv2"]["problem"]
        error = process.request("embed", {"image": BLANK}, id=2)["error"]
        assert error["code"] == -32004 and error["data"]["model"] == "liveryid-reid-mnv2"
        assert "result" in process.request("detect", {"image": BLANK}, id=3)
        (tmp_path / "liveryid-vehicle-nanodet-416.onnx").unlink()
        fresh = SidecarProcess("json", extra_args=["--models", str(tmp_path)])
        try:
            error = fresh.request("detect", {"image": BLANK}, id=4)["error"]
            assert error["code"] == -32004 and "does not exist" in error["message"]
        finally:
            fresh.kill()
    finally:
        process.kill()


NOISY_SIDECAR = """
import os, sys
import sidecar.engine
original = sidecar.engine.Engine.initialize
def noisy_initialize(self, params, context):
    print("a library banner on Python's stdout")
    sys.stdout.flush()
    os.write(1, b"bytes a C library writes to file descriptor 1\\n")
    return original(self, params, context)
sidecar.engine.Engine.initialize = noisy_initialize
from sidecar.cli import main
main(["serve", "--wire", sys.argv[1]])
"""


@pytest.mark.parametrize("wire", ["json", "msgpack"])
def test_library_prints_never_reach_the_wire(wire: str) -> None:
    # The helper appends `serve --wire W` to the command; the script reads only its first argument.
    process = SidecarProcess(wire, command=[sys.executable, "-c", NOISY_SIDECAR, wire])
    try:
        assert process.request("initialize", {}, id=1)["result"]["server_name"] == "liveryid"
        assert process.request("ping", id=2)["id"] == 2
        process.send({"jsonrpc": "2.0", "id": 3, "method": "shutdown"})
        process.read()
        assert process.wait() == 0  # wait() also fails on any non-protocol byte
        assert any("library banner" in line for line in process.stderr_lines)
        assert any("file descriptor 1" in line for line in process.stderr_lines)
    finally:
        process.kill()
