"""`python3 build.py import-yolo`: an ultralytics YOLOv8n, randomly initialised
from the yaml ultralytics ships (nothing downloaded), is exported, registered
in a manifest and then decoded by the sidecar exactly as ultralytics' own
predictor decodes the same ONNX file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import build
from tests.sidecar_process import SidecarProcess

ROOT = Path(__file__).resolve().parents[1]
# What ultralytics predicts with the exported file: its letterbox, decoding and NMS.
ULTRALYTICS_PREDICT = """
import json, sys
from ultralytics import YOLO
result = YOLO(sys.argv[1], task="detect").predict(sys.argv[2], imgsz=640, conf=0.3, iou=0.5, classes=[0], verbose=False)[0]
print(json.dumps({"boxes": result.boxes.xyxy.tolist(), "scores": result.boxes.conf.tolist()}))
"""


def scene(path: Path) -> None:
    """A 640x480 picture of coloured blocks: letterboxing pads it without resizing,
    so both sides feed the network the same pixels."""
    rng = np.random.default_rng(3)
    image = np.full((480, 640, 3), 90, np.uint8)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(0, [600, 440]))
        w, h = (int(v) for v in rng.integers([20, 20], [200, 120]))
        cv2.rectangle(image, (x, y), (x + w, y + h), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    cv2.imwrite(str(path), image)


@pytest.fixture(scope="module")
def yolo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder: the shipped models and manifest, plus the imported YOLO."""
    if shutil.which("npm") is None:
        pytest.skip("build.py needs Node.js and npm")
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(build.MODELS / "manifest.json", folder)
    for model in build.MODELS.glob("*.onnx"):
        (folder / model.name).symlink_to(model)
    weights = folder.parent / "random-yolov8n.pt"
    python = build.yolo_python()
    subprocess.run([str(python), str(build.MODELS / "import_yolo.py"), str(weights), "--make-random", "2"],
                   check=True, cwd=folder.parent, env=build.yolo_env())
    subprocess.run([sys.executable, str(ROOT / "build.py"), "import-yolo", str(weights), "--name", "yolo-test",
                    "--models", str(folder)], check=True, cwd=ROOT)
    return folder


def test_an_imported_yolo_is_registered_and_reported(yolo_models: Path) -> None:
    entry = next(m for m in json.loads((yolo_models / "manifest.json").read_text())["models"] if m["name"] == "yolo-test")
    assert entry["decoder"] == "yolo" and entry["heads"][0]["classes"] == ["class0", "class1"]
    assert entry["build"].startswith("python3 build.py import-yolo")
    process = SidecarProcess("json", extra_args=["--detector", "yolo-test"], env={"LIVERYID_MODELS_DIR": str(yolo_models)})
    try:
        models = process.request("initialize", {}, id=1)["result"]["models"]
        assert (models[0]["name"], models[0]["task"], models[0]["status"]) == ("yolo-test", "detect", "loaded")
        assert models[0]["sha256"] == entry["sha256"]
    finally:
        process.kill()


def test_the_sidecar_decodes_yolo_as_ultralytics_does(yolo_models: Path, tmp_path: Path) -> None:
    image = tmp_path / "scene.png"
    scene(image)
    reference = subprocess.run(
        [str(build.yolo_python()), "-c", ULTRALYTICS_PREDICT, str(yolo_models / "yolo-test.onnx"), str(image)],
        check=True, capture_output=True, text=True, env=build.yolo_env()).stdout
    expected = json.loads(reference.strip().splitlines()[-1])
    assert len(expected["boxes"]) >= 3  # the random model's scores make a handful of boxes
    process = SidecarProcess("json", extra_args=["--detector", "yolo-test"], env={"LIVERYID_MODELS_DIR": str(yolo_models)})
    try:
        found = process.request("detect", {"image": {"path": str(image)}, "min_score": 0.3, "classes": ["class0"]},
                                id=1)["result"]
    finally:
        process.kill()
    assert found["model"] == "yolo-test" and {v["label"] for v in found["vehicles"]} == {"class0"}
    np.testing.assert_allclose([v["box"] for v in found["vehicles"]], expected["boxes"], atol=0.1)
    np.testing.assert_allclose([v["score"] for v in found["vehicles"]], expected["scores"], atol=1e-4)
