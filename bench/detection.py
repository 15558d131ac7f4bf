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
  0.5), and false boxes per photo (every box but the one matching the car),
  split by what they box: a part of the car (80% or more of the box lies
  on the car), the car with too much around it (the box holds 80% or more
  of the car), or something else.
- Khoa val crops (real road vehicles from traffic cameras, never trained
  on; the detector trains on the train split's crops), by kind: whether
  the retrained head, taught mostly on rendered cars, still finds
  motorcycles and trucks. Each crop is one vehicle's ground-truth box, so
  a vehicle is found when a box covers the crop at IoU 0.5. Lenient on the
  box's fit (the crop frames the vehicle as the training crops do); each
  head's default min_score only.
- The box enroll and `liveryid eval` take on each F1 image (the largest
  area x score from 0.2, `identification.reference_box`): how well it fits
  the hand-drawn one (mean IoU, share at IoU 0.8 or more), since that box
  is what identification embeds.

    .venv/bin/python -m bench.detection [--detectors a,b] [--all-epfl]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.datasets import DATA_DIR, DETECTOR_TRAIN_CARS, epfl_frames, f1_boxes, khoa_images, read_image
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.identification import reference_box
from sidecar.stages.detect import Detector, box_area, box_intersection, box_iou

LabelledImages = list[tuple[Path, Sequence[float]]]
"""Images, each with the box of its one labelled car [x1, y1, x2, y2]."""


THRESHOLDS: tuple[float | None, ...] = (0.5, 0.4, 0.35, 0.3, 0.25, 0.2, None)
"""None: each head's own min_score from the manifest, as identify and tag run it."""
DETECTORS = ("nanodet-m-coco", "liveryid-vehicle-nanodet")


PART_OR_LOOSE = 0.8
"""A false box with this share of itself on the car boxes a part of it; one holding this share of the car, a loose box."""


def overlaps(detector: Detector, images: LabelledImages,
             thresholds: Sequence[float | None] = THRESHOLDS) -> dict[float | None, list[np.ndarray]]:
    """Per threshold and image, for each reported box: its IoU with the labelled car, the share of
    the box on the car and the share of the car in the box (boxes, 3). Each threshold is a run of
    its own: a detector with several heads falls back on the next one only when the first finds
    nothing at that threshold."""
    found: dict[float | None, list[np.ndarray]] = {threshold: [] for threshold in thresholds}
    for path, box in images:
        image = read_image(path)
        car = np.asarray([box], np.float32)
        for threshold in thresholds:
            boxes = detector(image, threshold, detector.vehicle_class_ids).boxes
            iou = box_iou(boxes, car)[:, 0]
            shared = box_intersection(boxes, car)[:, 0]
            found[threshold].append(np.stack([iou, shared / box_area(boxes), shared / box_area(car)], axis=1))
    return found


@dataclass(frozen=True)
class Figures:
    """One detector's figures at one threshold."""

    epfl_recall: float
    epfl_off_car: float
    epfl_second: float
    f1_correct: float
    f1_false: float
    f1_part: float
    f1_loose: float
    f1_elsewhere: float

    def cells(self) -> str:
        return (f"{self.epfl_recall:.1%} | {self.epfl_off_car:.3f} | {self.epfl_second:.3f} | {self.f1_correct:.1%} "
                f"| {self.f1_false:.3f} ({self.f1_part:.3f} / {self.f1_loose:.3f} / {self.f1_elsewhere:.3f})")


def figures(on_epfl: list[np.ndarray], on_f1: list[np.ndarray]) -> Figures:
    """The figures from `overlaps` at one threshold, on EPFL and on the F1 images."""
    epfl_iou = [o[:, 0] for o in on_epfl]
    f1_found = [bool((o[:, 0] >= 0.5).any()) for o in on_f1]
    false = [o[np.arange(len(o)) != np.argmax(o[:, 0])] if hit else o for o, hit in zip(on_f1, f1_found)]
    part = [o[:, 1] >= PART_OR_LOOSE for o in false]
    loose = [(o[:, 1] < PART_OR_LOOSE) & (o[:, 2] >= PART_OR_LOOSE) for o in false]
    return Figures(
        epfl_recall=float(np.mean([bool((iou >= 0.5).any()) for iou in epfl_iou])),
        epfl_off_car=float(np.mean([int((iou < 0.1).sum()) for iou in epfl_iou])),
        epfl_second=float(np.mean([int((iou >= 0.1).sum()) - int((iou >= 0.5).any()) for iou in epfl_iou])),
        f1_correct=float(np.mean(f1_found)),
        f1_false=float(np.mean([len(o) for o in false])),
        f1_part=float(np.mean([int(p.sum()) for p in part])),
        f1_loose=float(np.mean([int(l.sum()) for l in loose])),
        f1_elsewhere=float(np.mean([int((~p & ~l).sum()) for p, l in zip(part, loose)])),
    )


TABLE_HEADER = ("| EPFL recall @IoU0.5 | EPFL off-car boxes/photo | EPFL second boxes on the car/photo "
                "| F1 images with a correct box | F1 false boxes/photo (a part of the car / loose / elsewhere) |")


def labelled_images(all_epfl: bool = False) -> tuple[LabelledImages, LabelledImages]:
    """(EPFL frames, F1 images), each with its labelled box; EPFL cars 06-10 only unless `all_epfl`."""
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    epfl: LabelledImages = [(f.path, f.box) for f in epfl_frames() if all_epfl or f.car not in DETECTOR_TRAIN_CARS]
    return epfl, list(f1_boxes())


def loaded(images: LabelledImages) -> list[tuple[np.ndarray, np.ndarray]]:
    """The images read, each with its car's box as a (1, 4) array, for benches that run them more than once."""
    return [(read_image(path), np.asarray([box], np.float32)) for path, box in images]


def vehicle_kinds(detector: Detector) -> dict[str, tuple[int, int]]:
    """Per kind of vehicle in the Khoa val crops (the name's first word): (crops, crops with a box at IoU 0.5
    of the whole crop), at each head's default min_score."""
    counts: dict[str, tuple[int, int]] = {}
    for path, _ in khoa_images("val"):
        image = read_image(path)
        whole = np.asarray([[0, 0, image.shape[1], image.shape[0]]], np.float32)  # the crop is the vehicle's box
        boxes = detector(image, None, detector.vehicle_class_ids).boxes
        found = bool((box_iou(boxes, whole) >= 0.5).any())
        kind = path.name.split("_")[0]
        crops, hits = counts.get(kind, (0, 0))
        counts[kind] = (crops + 1, hits + found)
    return dict(sorted(counts.items()))


def enrolment_fit(engine: Engine, images: LabelledImages) -> np.ndarray:
    """Per image, the IoU of the box enroll takes (`reference_box`) with the labelled car's."""
    ious = []
    for path, truth in images:
        box, _, _ = reference_box(engine, read_image(path), None, 0)
        ious.append(box_iou(np.asarray([box], np.float32), np.asarray([truth], np.float32))[0, 0])
    return np.asarray(ious)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="manifest names, comma-separated")
    parser.add_argument("--all-epfl", action="store_true", help="include the EPFL cars the detector trains on")
    args = parser.parse_args()
    epfl, f1 = labelled_images(args.all_epfl)
    print(f"EPFL frames: {len(epfl)} ({'all cars' if args.all_epfl else 'cars 06-10, never trained on'}); "
          f"F1 game images with a labelled box: {len(f1)}")
    print(f"| detector | min_score {TABLE_HEADER}")
    print("|---|---|---|---|---|---|---|")
    engines = {name: Engine(settings_from_env(detector=name)) for name in args.detectors.split(",")}
    detectors = {name: engine.detector() for name, engine in engines.items()}
    for name, detector in detectors.items():
        on_epfl, on_f1 = overlaps(detector, epfl), overlaps(detector, f1)
        for threshold in THRESHOLDS:
            shown = "default" if threshold is None else f"{threshold:.2f}"
            print(f"| {name} | {shown} | {figures(on_epfl[threshold], on_f1[threshold]).cells()} |")
    kinds = {name: vehicle_kinds(detector) for name, detector in detectors.items()}
    names = sorted({kind for counts in kinds.values() for kind in counts})
    first = next(iter(kinds.values()))
    print("\nKhoa val crops (each one vehicle, never trained on) with a box at IoU 0.5 of the crop, default min_score")
    print("| detector | " + " | ".join(f"{kind} ({first[kind][0]})" for kind in names) + " |")
    print("|---|" + "---|" * len(names))
    for name, counts in kinds.items():
        print(f"| {name} | " + " | ".join(f"{counts[kind][1] / counts[kind][0]:.1%}" for kind in names) + " |")
    print("\nF1 game images: the box enroll and eval take (largest area x score from 0.2) against the hand-drawn one")
    print("| detector | mean IoU | IoU >= 0.8 | IoU >= 0.5 |")
    print("|---|---|---|---|")
    for name, engine in engines.items():
        ious = enrolment_fit(engine, f1)
        print(f"| {name} | {ious.mean():.3f} | {np.mean(ious >= 0.8):.1%} | {np.mean(ious >= 0.5):.1%} |")


if __name__ == "__main__":
    main()
