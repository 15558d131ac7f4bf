"""How the vehicle detector's outputs are read (issue #4): its head's lone box
(`lone_score` in the manifest: where nothing reaches the head's score, its
best box from a lower one, alone) and a generic head as fallback (the COCO
head's vehicle classes, tried when the vehicle head finds nothing),
measured on photos with a car and without one.

    .venv/bin/python -m bench.decoding [--scenes 300]

- F1 game images with hand-drawn boxes (one car each, bench/labels): the
  share with a correct box (IoU 0.5), and the other boxes per photo, all
  false.
- Photos without a car: the side of each F1 image beside its car (the
  wider one, 2% of the photo's width clear of the car's box, where it is
  30% of the photo wide or more: track, kerbs, barriers, crowd and sky of
  the same game), and synthetic track photos without a car
  (sidecar/training/renders.scene, a seed the detector's training never
  uses). Every box there is false: a photo of the pits, the crowd or the
  podium tagged with a car.
- EPFL frames of cars 06-10 (never trained on): recall at IoU 0.5 and
  the other boxes per photo (some box real cars of the show's background).
- Synthetic photos of two or three cars (bench.containment's): recall of
  every car and the boxes matching none per photo.
- Khoa val crops (real road vehicles, each filling its crop), by kind: a
  box at IoU 0.5 of the crop.

Every row reads the same detector file at each head's default score, as
identify and tag run it; the rows differ only in those rules. Needs the
development data and Debian's torcs-data (`build.py models` fetches it
into .cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from msgspec import structs

from bench.containment import labelled, multi_car_scenes
from bench.detection import labelled_images, loaded, vehicle_kinds
from sidecar.config import DEFAULT_MODELS_DIR, settings_from_env
from sidecar.engine import Engine
from sidecar.inference.manifest import DetectorHead, DetectorSpec
from sidecar.inference.session import OrtSession
from sidecar.stages.detect import Detector, build_detector
from sidecar.training.renders import scene

EMPTY_SCENE_SEED = 20261128
"""Not the detector's training seed (HeadRecipe.seed) nor bench.containment's, so these scenes are unseen."""
GENERIC_DETECTOR = "nanodet-m-coco"
"""Whose head names the COCO vehicle classes the fallback reports."""
CLEAR_OF_CAR = 0.02
"""Share of the photo's width left between the car's box and the car-free side taken beside it."""
NARROWEST_SIDE = 0.3
"""Sides narrower than this share of the photo are left out: a sliver is no photo."""


def car_free_side(image: np.ndarray, car: np.ndarray) -> np.ndarray | None:
    """The wider side of an F1 image beside its one labelled car ((1, 4) box), None where too narrow."""
    width = image.shape[1]
    clear = int(CLEAR_OF_CAR * width)
    x1, x2 = int(car[0, 0]), int(car[0, 2])
    left, right = image[:, : max(x1 - clear, 0)], image[:, x2 + clear:]
    side = left if left.shape[1] >= right.shape[1] else right
    return np.ascontiguousarray(side) if side.shape[1] >= NARROWEST_SIDE * width else None


def car_free_sides(images: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """`car_free_side` of each F1 image (`loaded`), where wide enough."""
    return [side for image, car in images if (side := car_free_side(image, car)) is not None]


def empty_scenes(count: int) -> list[np.ndarray]:
    sys.path.insert(0, str(DEFAULT_MODELS_DIR))  # models/torcs.py: the pinned Debian package
    from torcs import torcs_assets

    cars, textures = torcs_assets(Path(".cache"))
    rng = np.random.default_rng(EMPTY_SCENE_SEED)
    return [scene(cars, textures, rng, empty=True)[0] for _ in range(count)]


def boxes_per_photo(photos: list[np.ndarray], detector: Detector) -> float:
    return float(np.mean([len(detector(photo, None, detector.vehicle_class_ids)) for photo in photos]))


def decodings(spec: DetectorSpec, generic_vehicles: list[str]) -> dict[str, DetectorSpec]:
    """The shipped rules and the ones they were chosen over, named for the table."""
    vehicle, generic = spec.heads[0], spec.heads[1]
    fallback = structs.replace(generic, vehicle_classes=generic_vehicles)
    shipped = vehicle.lone_score

    def rules(first: DetectorHead, second: DetectorHead) -> DetectorSpec:
        return structs.replace(spec, heads=[first, second])

    sure_only = structs.replace(vehicle, lone_score=None)
    return {
        f"{vehicle.min_score}, COCO fallback {generic.min_score}": rules(sure_only, fallback),
        f"{vehicle.min_score}": rules(sure_only, generic),
        f"{vehicle.min_score}, lone box from {shipped} (the default)": spec,
        f"{vehicle.min_score}, lone box from 0.4": rules(structs.replace(vehicle, lone_score=0.4), generic),
        f"{vehicle.min_score}, lone box from {shipped}, COCO fallback {generic.min_score}": rules(vehicle, fallback),
        f"{shipped}": rules(structs.replace(vehicle, min_score=shipped, lone_score=None), generic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=300,
                        help="synthetic photos without a car, and of several cars (default 300 each)")
    args = parser.parse_args()
    epfl_images, f1_images = labelled_images()
    settings = settings_from_env()
    engine = Engine(settings)
    spec = engine.detector().spec
    if len(spec.heads) != 2 or spec.heads[0].lone_score is None:
        sys.exit(f"{spec.name} is not a vehicle head with a lone box beside a generic head: nothing to compare")
    generic_spec = engine.manifest().get(GENERIC_DETECTOR)
    assert isinstance(generic_spec, DetectorSpec)
    generic = generic_spec.heads[0].vehicle_classes
    f1, epfl = loaded(f1_images), loaded(epfl_images)
    sides = car_free_sides(f1)
    empty, several = empty_scenes(args.scenes), multi_car_scenes(args.scenes)
    session = OrtSession(engine.model_file(spec.name), settings.intra_op_threads, settings.spin_wait)
    print(f"{spec.name} {spec.version}; {len(f1)} F1 images, {len(sides)} car-free sides of them, {len(empty)} "
          f"synthetic photos without a car, {len(epfl)} EPFL frames, {len(several)} synthetic photos of several cars")
    kinds_header = None
    for label, rules in decodings(spec, generic).items():
        detector = build_detector(rules, session)
        f1_found, _, f1_false = labelled(f1, detector)
        _, epfl_recall, epfl_other = labelled(epfl, detector)
        _, several_recall, several_false = labelled(several, detector)
        kinds = vehicle_kinds(detector)
        if kinds_header is None:
            kinds_header = " | ".join(f"Khoa {kind} ({crops})" for kind, (crops, _) in kinds.items())
            print(f"| vehicle head | F1: correct box | F1: false boxes / photo | no car, F1 sides: boxes / photo "
                  f"| no car, synthetic: boxes / photo | EPFL: recall | EPFL: other boxes / photo "
                  f"| several cars: recall | several cars: false boxes / photo | {kinds_header} |")
            print("|---" * (9 + len(kinds)) + "|")
        print(f"| {label} | {f1_found:.1%} | {f1_false:.3f} | {boxes_per_photo(sides, detector):.3f} "
              f"| {boxes_per_photo(empty, detector):.3f} | {epfl_recall:.1%} | {epfl_other:.3f} "
              f"| {several_recall:.1%} | {several_false:.3f} | "
              + " | ".join(f"{hits / crops:.1%}" for crops, hits in kinds.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
