"""Export an ultralytics YOLO detection checkpoint (v8, 11: one output of
4 box values + one score per class for every anchor) to ONNX for the
sidecar's detector, and describe it for the manifest.

Runs in the YOLO environment that `python3 build.py import-yolo` makes
(ultralytics and its torch); the sidecar never imports ultralytics.

    python models/import_yolo.py weights.pt --output models/x.onnx --describe x.json [--imgsz 640]

`--make-random N_CLASSES` writes a randomly initialised yolov8n checkpoint
(from the yaml ultralytics ships, nothing downloaded) to `weights.pt`
instead, for the tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import ultralytics
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

OPSET = 13
CLASS_WEIGHT_STD = 1e-4  # 1e-3 already saturates some anchors' scores at 1.0


def make_random(weights: Path, classes: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = DetectionModel("yolov8n.yaml", nc=classes, verbose=False)
    model.names = {i: f"class{i}" for i in range(classes)}
    # A fresh head predicts the same box and its prior score (~1e-3) at every
    # anchor; random last layers and a lifted prior give a test image boxes
    # that differ in place and score, above a usable threshold.
    head = model.model[-1]
    for branch in head.cv2:
        torch.nn.init.normal_(branch[-1].weight, std=0.002)
    for branch in head.cv3:
        torch.nn.init.normal_(branch[-1].weight, std=CLASS_WEIGHT_STD)
        torch.nn.init.constant_(branch[-1].bias, -1.5)
    # Untrained batch-norm statistics let activations vanish layer after
    # layer: measure them on random images, as a first training step would.
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in batch_norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(2, 3, 320, 320))
    torch.save({"model": model.eval(), "train_args": {"imgsz": 640, "task": "detect"}, "version": ultralytics.__version__},
               weights)


def export(weights: Path, output: Path, describe: Path, imgsz: int) -> None:
    model = YOLO(str(weights))
    if model.task != "detect":
        raise SystemExit(f"{weights} is a YOLO {model.task} model: only detection models are supported")
    exported = Path(model.export(format="onnx", imgsz=imgsz, opset=OPSET, simplify=False, dynamic=False, nms=False,
                                 half=False, device="cpu"))
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(exported, output)
    names = model.names
    description = {
        "classes": [names[i] for i in range(len(names))], "input": "images", "output": "output0",
        "imgsz": imgsz, "ultralytics": ultralytics.__version__, "weights": weights.name,
    }
    describe.write_text(json.dumps(description, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--describe", type=Path)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--make-random", type=int, metavar="N_CLASSES")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.make_random:
        make_random(args.weights, args.make_random, args.seed)
    else:
        if args.output is None or args.describe is None:
            parser.error("--output and --describe are needed to export")
        export(args.weights, args.output, args.describe, args.imgsz)


if __name__ == "__main__":
    main()
