"""What searching tiles of a photo for small cars adds (`tiles` in detect,
identify and tag; `detect.detect_tiled`), and what it costs (issue #4).

    .venv/bin/python -m bench.tiling [--scenes 300] [--grids 1 2 3]

- Photos of two or three cars (bench.containment's unseen synthetic TORCS
  scenes): recall at IoU 0.5 by the car's width in the photo (the small,
  distant cars tiling is for) and boxes matching no car per photo.
- F1 game images with hand-drawn boxes (one car each) and EPFL frames of
  cars 06-10: correct box / recall, and every other box per photo (on F1
  all false; EPFL's motor-show backgrounds hold real cars too).
- Detection time per photo, p50, on the F1 images (1920 x 1080).

The default detector at its calibrated scores, as identify and tag run it.
Needs the development data and Debian's torcs-data (`build.py models`
fetches it into .cache).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.containment import cars_found, multi_car_scenes
from bench.detection import labelled_images, loaded
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.stages.detect import Detector, detect_tiled

WIDTHS = (0.1, 0.2, 0.4)
"""Bounds of the car-width buckets, as shares of the photo's width."""


def measure(images: list[tuple[np.ndarray, np.ndarray]], detector: Detector, grid: int
            ) -> tuple[np.ndarray, np.ndarray, float, list[float]]:
    """Per labelled car: found (bool) and width share; other boxes per photo; seconds per photo."""
    found: list[bool] = []
    widths: list[float] = []
    seconds: list[float] = []
    others = 0
    for image, truth in images:
        start = time.perf_counter()
        boxes = detect_tiled(detector, image, None, detector.vehicle_class_ids, grid).boxes
        seconds.append(time.perf_counter() - start)
        hits = cars_found(truth, boxes)
        found.extend(bool(hit) for hit in hits)
        widths.extend(float(w) for w in (truth[:, 2] - truth[:, 0]) / image.shape[1])
        others += len(boxes) - int(hits.sum())
    return np.asarray(found), np.asarray(widths), others / len(images), seconds


def by_width(found: np.ndarray, widths: np.ndarray) -> list[str]:
    bucket = np.digitize(widths, WIDTHS)
    return [f"{found[bucket == b].mean():.1%} of {int((bucket == b).sum())}" for b in range(len(WIDTHS) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--grids", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    epfl_images, f1_images = labelled_images()
    detector = Engine(settings_from_env()).detector()
    scenes = multi_car_scenes(args.scenes)
    f1, epfl = loaded(f1_images), loaded(epfl_images)
    print(f"{detector.spec.name} {detector.spec.version}, calibrated scores; {len(scenes)} synthetic photos of "
          f"{sum(len(t) for _, t in scenes)} cars, {len(f1)} F1 images, {len(epfl)} EPFL frames")
    buckets = [f"< {WIDTHS[0]:.0%}"] + [f"{a:.0%}-{b:.0%}" for a, b in zip(WIDTHS, WIDTHS[1:])] + [f">= {WIDTHS[-1]:.0%}"]
    print("| tiles | several cars: recall | " + " | ".join(f"cars {b} wide" for b in buckets)
          + " | several cars: false boxes / photo | F1: correct box | F1: false boxes / photo | EPFL: recall "
          "| EPFL: other boxes / photo | detect ms / F1 photo, p50 |")
    print("|---" * (9 + len(WIDTHS)) + "|")
    for grid in args.grids:
        found, widths, false, _ = measure(scenes, detector, grid)
        f1_found, _, f1_false, f1_seconds = measure(f1, detector, grid)
        epfl_found, _, epfl_other, _ = measure(epfl, detector, grid)
        shown = "1 (off, the default)" if grid == 1 else f"{grid} x {grid}"
        print(f"| {shown} | {found.mean():.1%} | " + " | ".join(by_width(found, widths))
              + f" | {false:.3f} | {f1_found.mean():.1%} | {f1_false:.3f} | {epfl_found.mean():.1%} | {epfl_other:.3f} "
              f"| {1000 * float(np.median(f1_seconds)):.0f} |", flush=True)


if __name__ == "__main__":
    main()
