"""How much of the vehicle detector's figures is its training seed?

    .venv/bin/python -m bench.detector_seeds [--seeds 1,2] [--scenes N] [--iterations N] [--keep DIR]

Builds the project's detector again as `build.py models` does, with other
seeds (`models/train_detector.py --seed N`: other synthetic scenes, sampled
cells and first weights, the same recipe), into temporary models folders
beside the shipped models, and measures each at the manifest's scores on
bench.detection's images: EPFL cars 06-10 and the hand-boxed F1 images,
which no build trains on. The shipped model (seed 0) is measured too. A
change to the recipe is worth keeping when it moves the mean over seeds,
not one seed's figure: with 93 F1 images one image is 1.1 points.
`--scenes N` builds them with N synthetic scenes instead of the shipped
recipe's 2,000, `--iterations N` with N training steps instead of its 600
(seed 0 too, then: the shipped row stays for reference). `--keep DIR`
keeps each build's models folder (the shipped models linked, the rebuilt
detector pinned in its manifest) as DIR/seed-N, so that `LIVERYID_MODELS_DIR=DIR/seed-N
.venv/bin/liveryid eval ...` measures identification with it. About
8 minutes a seed on 2 cores, with a peak of 11 GB (6 minutes with 1,000
scenes); needs the development data and Debian's torcs-data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.detection import TABLE_HEADER, Figures, LabelledImages, figures, labelled_images, overlaps
from bench.retrained import retrained_models, seed_folder
from sidecar.config import DEFAULT_MODELS_DIR, settings_from_env
from sidecar.engine import Engine

DETECTOR = "liveryid-vehicle-nanodet"
DEFAULT_SCORES = (None,)
"""Each head's min_score from the manifest, as identify and tag run it."""


def measure(models_dir: Path, epfl: LabelledImages, f1: LabelledImages) -> Figures:
    detector = Engine(settings_from_env(models_dir=models_dir, detector=DETECTOR)).detector()
    return figures(overlaps(detector, epfl, DEFAULT_SCORES)[None], overlaps(detector, f1, DEFAULT_SCORES)[None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2",
                        help="seeds to build (default 1,2; the shipped build, seed 0, is measured as it is)")
    parser.add_argument("--scenes", type=int, help="synthetic scenes per build (default: the shipped recipe's)")
    parser.add_argument("--iterations", type=int, help="training steps per build (default: the shipped recipe's)")
    parser.add_argument("--keep", type=Path, help="keep each build's models folder as KEEP/seed-N, for "
                        "`LIVERYID_MODELS_DIR=KEEP/seed-N liveryid eval`")
    args = parser.parse_args()
    recipe = [*([] if args.scenes is None else ["--scenes", str(args.scenes)]),
              *([] if args.iterations is None else ["--iterations", str(args.iterations)])]
    epfl, f1 = labelled_images()
    print(f"EPFL frames: {len(epfl)} (cars 06-10, never trained on); F1 game images with a labelled box: {len(f1)}; "
          "each head's default min_score")
    print(f"| seed {TABLE_HEADER}")
    print("|---|---|---|---|---|---|")
    shipped = measure(DEFAULT_MODELS_DIR, epfl, f1)
    print(f"| 0 (shipped) | {shipped.cells()} |", flush=True)
    measured = {} if recipe else {0: shipped}
    label = "".join([f", {args.scenes} scenes" if args.scenes else "", f", {args.iterations} steps" if args.iterations else ""])
    for seed in [int(s) for s in args.seeds.split(",")]:
        with seed_folder(args.keep, seed) as folder:
            models = retrained_models(DETECTOR, "train_detector.py", ["--seed", str(seed), *recipe], folder)
            measured[seed] = measure(models, epfl, f1)
        print(f"| {seed}{label} | {measured[seed].cells()} |", flush=True)
    correct = np.asarray([m.f1_correct for m in measured.values()])
    false = np.asarray([m.f1_false for m in measured.values()])
    print(f"\nF1 images with a correct box over {len(measured)} seeds{label}: mean {correct.mean():.1%}, "
          f"{correct.min():.1%} to {correct.max():.1%}; false boxes/photo: mean {false.mean():.3f}, "
          f"{false.min():.3f} to {false.max():.3f}")


if __name__ == "__main__":
    main()
