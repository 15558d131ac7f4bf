"""Detector accuracy on the development data, for each detector in the manifest.

- EPFL (real cars, one ground-truth box per frame): cars 06-10 only, which
  the project's detector never trains on (`--all-epfl` adds cars 01-05).
  Recall at IoU 0.5; off-car boxes per photo: boxes touching no part of
  the labelled car (IoU < 0.1; the motor-show backgrounds hold other real
  cars, so these are not all false); and second boxes on the car per photo
  (every box touching it but the one that matches it: false, the car counted
  twice).
- F1 game images with hand-labelled boxes (bench/labels, one car each, so
  every other box is false): the share of images with a correct box (IoU
  0.5), and false boxes per photo (every box but the one matching the car).

    .venv/bin/python -m bench.detection [--detectors a,b] [--all-epfl]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from bench.datasets import DATA_DIR, DETECTOR_TRAIN_CARS, epfl_frames, f1_boxes
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.stages.detect import Detector, box_iou

THRESHOLDS: tuple[float | None, ...] = (0.5, 0.4, 0.35, 0.3, 0.25, 0.2, None)
"""None: each head's own min_score from the manifest, as identify and tag run it."""
DETECTORS = ("nanodet-m-coco", "liveryid-vehicle-nanodet")


def overlaps(detector: Detector, images: Sequence[tuple[Path, Sequence[float]]]
             ) -> dict[float | None, list[np.ndarray]]:
    """Per threshold and image, each reported box's IoU with the labelled car. Each threshold is
    a run of its own: a detector with several heads falls back on the next one only when the first
    finds nothing at that threshold."""
    found: dict[float | None, list[np.ndarray]] = {threshold: [] for threshold in THRESHOLDS}
    for path, box in images:
        image = cv2.imread(str(path))
        if image is None:
            sys.exit(f"cannot read {path}")
        for threshold in THRESHOLDS:
            detections = detector(image, threshold, detector.vehicle_class_ids)
            found[threshold].append(box_iou(detections.boxes, np.asarray([box], np.float32))[:, 0])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="manifest names, comma-separated")
    parser.add_argument("--all-epfl", action="store_true", help="include the EPFL cars the detector trains on")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    epfl = [(f.path, f.box) for f in epfl_frames() if args.all_epfl or f.car not in DETECTOR_TRAIN_CARS]
    f1 = f1_boxes()
    print(f"EPFL frames: {len(epfl)} ({'all cars' if args.all_epfl else 'cars 06-10, never trained on'}); "
          f"F1 game images with a labelled box: {len(f1)}")
    print("| detector | min_score | EPFL recall @IoU0.5 | EPFL off-car boxes/photo | EPFL second boxes on the car/photo "
          "| F1 images with a correct box | F1 false boxes/photo |")
    print("|---|---|---|---|---|---|---|")
    for name in args.detectors.split(","):
        detector = Engine(settings_from_env(detector=name)).detector()
        on_epfl, on_f1 = overlaps(detector, epfl), overlaps(detector, f1)
        for threshold in THRESHOLDS:
            recall = np.mean([bool((o >= 0.5).any()) for o in on_epfl[threshold]])
            off_car = np.mean([int((o < 0.1).sum()) for o in on_epfl[threshold]])
            second = np.mean([int((o >= 0.1).sum()) - int((o >= 0.5).any()) for o in on_epfl[threshold]])
            f1_found = [bool((o >= 0.5).any()) for o in on_f1[threshold]]
            f1_false = np.mean([len(o) - hit for o, hit in zip(on_f1[threshold], f1_found)])
            shown = "default" if threshold is None else f"{threshold:.2f}"
            print(f"| {name} | {shown} | {recall:.1%} | {off_car:.3f} | {second:.3f} | {np.mean(f1_found):.1%} "
                  f"| {f1_false:.3f} |")


if __name__ == "__main__":
    main()
