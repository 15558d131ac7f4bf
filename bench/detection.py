"""Detector accuracy on the development data.

EPFL (real cars, one ground-truth box per frame): recall at IoU 0.5, and
boxes per photo that touch no part of the labelled car (IoU < 0.1; the
motor-show background holds other real cars, so these are not all false).
F1 game images (every one shows at least one F1 car, no boxes): the share in
which at least one vehicle is found.

    .venv/bin/python -m bench.detection [--every N]
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from bench.datasets import DATA_DIR, epfl_frames, f1_images
from sidecar.config import settings_from_env
from sidecar.engine import Engine

THRESHOLDS = (0.4, 0.35, 0.3, 0.25, 0.2)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box in (N, 4) `a` with the one box `b`."""
    x1, y1 = np.maximum(a[:, 0], b[0]), np.maximum(a[:, 1], b[1])
    x2, y2 = np.minimum(a[:, 2], b[2]), np.minimum(a[:, 3], b[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=1, help="use every Nth image (1 = all)")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    detector = Engine(settings_from_env()).detector()
    vehicles = detector.vehicle_class_ids
    lowest = min(THRESHOLDS)

    frames = epfl_frames()[:: args.every]
    epfl = []
    for frame in frames:
        found = detector(cv2.imread(str(frame.path)), lowest, vehicles)
        epfl.append((found.scores, iou(found.boxes, np.asarray(frame.box))))
    f1 = [detector(cv2.imread(str(path)), lowest, vehicles).scores for path, _ in f1_images()[:: args.every]]

    print(f"detector {detector.spec.name}, letterbox {detector.spec.input.width}, classes {detector.spec.vehicle_classes}")
    print(f"EPFL frames: {len(frames)}; F1 game images: {len(f1)}")
    print("| min_score | EPFL recall @IoU0.5 | EPFL off-car boxes/photo | F1 images with a vehicle |")
    print("|---|---|---|---|")
    for threshold in THRESHOLDS:
        recall = np.mean([bool(((s >= threshold) & (o >= 0.5)).any()) for s, o in epfl])
        off_car = np.mean([int(((s >= threshold) & (o < 0.1)).sum()) for s, o in epfl])
        f1_found = np.mean([bool((s >= threshold).any()) for s in f1])
        print(f"| {threshold:.2f} | {recall:.1%} | {off_car:.2f} | {f1_found:.1%} |")


if __name__ == "__main__":
    main()
