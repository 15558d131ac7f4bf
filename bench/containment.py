"""What keeping one box of each nested pair does (a detector head's
`drop_nested` in the manifest: a piece of a car inside the car's box, a
loose box around it), measured with and without it (issue #4).

    .venv/bin/python -m bench.containment [--scenes 300]

- F1 game images with hand-drawn boxes (one car each, bench/labels): the
  share of images with a correct box (IoU 0.5) and the other boxes per
  photo, all false.
- EPFL frames of cars 06-10 (never trained on): recall at IoU 0.5 and the
  other boxes per photo (some box real cars of the show's background).
- Photos of two or three cars (sidecar/training/renders.scene: TORCS cars
  in random liveries on track textures, drawn from a seed the detector's
  training never uses): recall of every car at IoU 0.5, the rule's risk (a
  far car seen inside a near car's box), and the boxes matching no car per
  photo. The cars lying the vehicle head's share or more inside another
  car's box are counted too: the cases the rule can cost.

The default detector at each head's calibrated score, as identify runs it,
then again with every head keeping nested boxes.
Needs the development data and Debian's torcs-data (`build.py models`
fetches it into .cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from msgspec import structs

from bench.detection import labelled_images, loaded
from sidecar.config import DEFAULT_MODELS_DIR, settings_from_env
from sidecar.engine import Engine
from sidecar.inference.session import OrtSession
from sidecar.stages.detect import Detector, box_area, box_intersection, box_iou, build_detector
from sidecar.training.renders import scene

SCENE_SEED = 20261126
"""Not the detector's training seed (HeadRecipe.seed), so these scenes are unseen."""
MATCH_IOU = 0.5


def cars_found(truth: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: which of the N labelled cars a box matches at IoU MATCH_IOU."""
    return np.asarray((box_iou(truth, boxes) >= MATCH_IOU).any(axis=1)) if len(boxes) else np.zeros(len(truth), bool)


def labelled(images: list[tuple[np.ndarray, np.ndarray]], detector: Detector) -> tuple[float, float, float]:
    """(share of images with every labelled box found, recall over boxes, other boxes per image)."""
    all_found, found, extra = 0, 0, 0
    for image, truth in images:
        boxes = detector(image, None, detector.vehicle_class_ids).boxes
        hits = cars_found(truth, boxes)
        found += int(hits.sum())
        all_found += int(hits.all())
        extra += len(boxes) - int(hits.sum())  # every box but one per car found is false, as in bench.detection
    return all_found / len(images), found / sum(len(t) for _, t in images), extra / len(images)


def multi_car_scenes(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    sys.path.insert(0, str(DEFAULT_MODELS_DIR))  # models/torcs.py: the pinned Debian package
    from torcs import torcs_assets

    cars, textures = torcs_assets(Path(".cache"))
    rng = np.random.default_rng(SCENE_SEED)
    scenes: list[tuple[np.ndarray, np.ndarray]] = []
    while len(scenes) < count:
        image, boxes = scene(cars, textures, rng)
        if len(boxes) >= 2:
            scenes.append((image, boxes))
    return scenes


def nested(scenes: list[tuple[np.ndarray, np.ndarray]], share: float) -> int:
    """Cars lying `share` or more inside another car's box."""
    count = 0
    for _, boxes in scenes:
        inside = box_intersection(boxes, boxes) / box_area(boxes)[:, None]
        np.fill_diagonal(inside, 0)
        count += int((inside >= share).any(axis=1).sum())
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=300, help="synthetic photos of several cars (default 300)")
    args = parser.parse_args()
    epfl_images, f1_images = labelled_images()
    settings = settings_from_env()
    engine = Engine(settings)
    detector = engine.detector()
    shares = [head.drop_nested for head in detector.spec.heads]
    if not any(shares):
        sys.exit(f"no head of {detector.spec.name} drops nested boxes: nothing to compare")
    keeping = build_detector(
        structs.replace(detector.spec, heads=[structs.replace(h, drop_nested=None) for h in detector.spec.heads]),
        OrtSession(engine.model_file(detector.spec.name), settings.intra_op_threads, settings.spin_wait))
    f1, epfl = loaded(f1_images), loaded(epfl_images)
    scenes = multi_car_scenes(args.scenes)
    cars = sum(len(boxes) for _, boxes in scenes)
    share = max(s for s in shares if s)
    print(f"{detector.spec.name} {detector.spec.version}, each head's calibrated score; {len(f1)} F1 images, "
          f"{len(epfl)} EPFL frames, {len(scenes)} synthetic photos of {cars} cars "
          f"({nested(scenes, share)} of them {share:.0%} or more inside another car's box)")
    print("| nested boxes | F1: correct box | F1: false boxes / photo | EPFL: recall | EPFL: other boxes / photo "
          "| several cars: recall | several cars: photos with every car | several cars: false boxes / photo |")
    print("|---|---|---|---|---|---|---|---|")
    for label, run in (("kept", keeping), (f"dropped (heads: {shares})", detector)):
        f1_found, _, f1_false = labelled(f1, run)
        _, epfl_recall, epfl_other = labelled(epfl, run)
        every, recall, false = labelled(scenes, run)
        print(f"| {label} | {f1_found:.1%} | {f1_false:.3f} | {epfl_recall:.1%} | {epfl_other:.3f} | {recall:.1%} "
              f"| {every:.1%} | {false:.3f} |", flush=True)


if __name__ == "__main__":
    main()
