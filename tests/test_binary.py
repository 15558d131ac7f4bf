"""The Nuitka-compiled sidecar answers exactly as the Python one does.
Runs when `python3 build.py test --binary` (CI) built it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.datasets import epfl_frames, f1_images
from tests.sidecar_process import PYTHON_SIDECAR, SidecarProcess, binary_sidecar

pytestmark = pytest.mark.slow


@pytest.fixture
def binary() -> list[str]:
    command = binary_sidecar()
    if command is None:
        pytest.skip("no compiled binary: `python3 build.py test --binary` builds and tests it")
    return command


def answers(command: list[str], photos: list[str]) -> tuple[dict, list[dict], list[bytes]]:
    process = SidecarProcess("msgpack", command)
    try:
        info = process.request("initialize", {"client_name": "binary-test"}, id=0)["result"]
        detections, vectors = [], []
        for i, photo in enumerate(photos):
            result = process.request("detect", {"image": {"path": photo}, "min_score": 0.2}, id=2 * i + 1)["result"]
            detections.append(result)
            box = result["vehicles"][0]["box"] if result["vehicles"] else None
            vectors.append(process.request("embed", {"image": {"path": photo}, "box": box}, id=2 * i + 2)["result"]["vector"])
        process.send({"jsonrpc": "2.0", "id": "end", "method": "shutdown"})
        process.read()
        assert process.wait() == 0
        return info, detections, vectors
    finally:
        process.kill()


def test_binary_matches_python_on_real_photos(binary: list[str], dev_data: Path) -> None:
    photos = [str(f1_images()[0][0]), str(f1_images()[-1][0]), str(epfl_frames()[0].path)]
    info_b, detections_b, vectors_b = answers(binary, photos)
    info_p, detections_p, vectors_p = answers(PYTHON_SIDECAR, photos)
    assert [m["status"] for m in info_b["models"]] == ["loaded"] * len(info_p["models"])  # detector, embedder, number reader
    assert [m["sha256"] for m in info_b["models"]] == [m["sha256"] for m in info_p["models"]]
    assert any(d["vehicles"] for d in detections_b)
    for from_binary, from_python in zip(detections_b, detections_p):
        assert [v["label"] for v in from_binary["vehicles"]] == [v["label"] for v in from_python["vehicles"]]
        for vb, vp in zip(from_binary["vehicles"], from_python["vehicles"]):
            np.testing.assert_allclose(vb["box"], vp["box"], atol=0.2)
            assert abs(vb["score"] - vp["score"]) < 1e-3
    for vb, vp in zip(vectors_b, vectors_p):
        np.testing.assert_allclose(np.frombuffer(vb, "<f4"), np.frombuffer(vp, "<f4"), atol=1e-4)


def test_binary_answers_adapt_with_a_clear_error(binary: list[str], tmp_path: Path) -> None:
    """The binary leaves torch out: adapt says what it needs and the process keeps serving."""
    process = SidecarProcess("json", binary)
    try:
        process.request("initialize", {"library": str(tmp_path / "lib")}, id=0)
        error = process.request("adapt", {"images": [str(tmp_path)]}, id=1)["error"]
        assert error["code"] == -32008 and "train" in error["message"]
        assert process.request("ping", id=2)["result"] is not None
    finally:
        process.kill()
