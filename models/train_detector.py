"""Build the project's vehicle detector: NanoDet-m's COCO model (built first
by convert_nanodet.py) with its head retrained for one class,
"vehicle", and a retrained box regression (sidecar/training/vehicle_head.py),
on the EPFL frames of cars 01-05 with their ground-truth boxes, the Khoa
train-split crops (motorbikes, cars, vans, trucks from behind, each crop
boxed whole), and synthetic track photos drawn from TORCS's car models
(sidecar/training/renders.py): the only open-wheel cars the detector may
learn from. EPFL cars 06-10, the Khoa val split and the F1 game images are
never trained on: `python -m bench.detection` and `liveryid eval` measure
on them.

Runs in the sidecar's environment with the `train` extra (torch). Needs
../shared/data, and Debian's torcs-data package (fetched with apt-get).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from bench.datasets import DATA_DIR, DETECTOR_TRAIN_CARS, epfl_frames, khoa_images, read_image
from canonical_onnx import save_canonical
from sidecar.config import DEFAULT_MODELS_DIR
from sidecar.inference.manifest import load_manifest
from sidecar.training.renders import scene
from sidecar.training.vehicle_head import FeatureExtractor, HeadRecipe, coco_head, coco_head_3x3, collect, graft, train
from torcs import torcs_assets

BASE_DETECTOR = "nanodet-m-coco"
SYNTHETIC_SCENES = 2000
EMPTY_SCENE_SHARE = 0.2
"""Scenes drawn without a car: track, kerbs and walls as negatives, so that a stretch of asphalt
framed like a car is not one."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=SYNTHETIC_SCENES,
                        help=f"synthetic track photos to draw (default {SYNTHETIC_SCENES}, the shipped model's)")
    parser.add_argument("--seed", type=int, default=HeadRecipe.seed,
                        help=f"of the scenes, samples and weights (default {HeadRecipe.seed}, the shipped model's)")
    parser.add_argument("--iterations", type=int, default=HeadRecipe.iterations,
                        help=f"training steps (default {HeadRecipe.iterations}, the shipped model's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if not DATA_DIR.is_dir():
        sys.exit(f"the vehicle detector trains on the development data, and {DATA_DIR} is missing")

    base = load_manifest(DEFAULT_MODELS_DIR).get(BASE_DETECTOR)
    coco = onnx.load(DEFAULT_MODELS_DIR / base.file)
    coco_head_spec = base.heads[0]
    vehicle_ids = [coco_head_spec.classes.index(name) for name in coco_head_spec.vehicle_classes]
    frames = [f for f in epfl_frames() if f.car in DETECTOR_TRAIN_CARS]
    crop_paths = [path for path, _ in khoa_images("train")]
    recipe = HeadRecipe(seed=args.seed, iterations=args.iterations)
    cars, textures = torcs_assets(args.cache)
    rng = np.random.default_rng(recipe.seed)
    print(f"training on {len(frames)} EPFL frames of cars {sorted(DETECTOR_TRAIN_CARS)}, {len(crop_paths)} Khoa "
          f"train crops and {args.scenes} synthetic scenes of {len(cars)} TORCS cars", file=sys.stderr)

    def labelled() -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
        """Each training image as it is needed (the scenes alone would hold gigabytes)."""
        for f in frames:
            yield read_image(f.path), np.asarray([f.box], np.float32), False
        for path in crop_paths:
            crop = read_image(path)
            yield crop, np.asarray([[0, 0, crop.shape[1], crop.shape[0]]], np.float32), True
        for _ in range(args.scenes):
            yield *scene(cars, textures, rng, empty=rng.random() < EMPTY_SCENE_SHARE), False

    extractor = FeatureExtractor(coco, base.input, recipe.threads, map_levels=recipe.retrained_3x3)
    samples = collect(labelled(), extractor, vehicle_ids, recipe)
    head = train(samples, coco_head(coco), vehicle_ids, recipe, coco_head_3x3(coco))
    save_canonical(graft(coco, head), "liveryid vehicle detector: NanoDet-m, retrained head (3x3 convolutions, "
                   f"last layer and residual branch), {recipe}", args.output)


if __name__ == "__main__":
    main()
