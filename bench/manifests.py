"""Evaluation manifests from the development data (../shared/data), for
`liveryid eval`. Written with absolute image paths; nothing is copied
(but for the F1 images' car-free sides, below).

    .venv/bin/python -m bench.manifests [OUT_DIR]     (default .cache/eval)

- epfl-1ref / epfl-3ref: cars 01-07 enrolled with 1 reference at the front
  three-quarter view (45°) or 3 references (45°, 165°, 285°), ground-truth
  crops; queries: every other frame of all ten cars, so cars 08-10 are
  unknown cars (open set).
- epfl-views/epfl-1ref-<angle>: the same with the one reference at each of
  eight views, 0° (front) to 315° in 45° steps: how much matching depends on
  the view the photographer enrolled.
- khoa: val split; cam1 is the reference, cam2 the query; every third
  vehicle is left out of the enrolment (unknown). Each image is a crop of
  one vehicle, matched whole (its ground truth); khoa-detected matches the
  detector's dominant box inside each crop instead.
- f1-3ref: 3 fixed-seed random images per team as references, the rest as
  queries; no boxes (the dominant detected vehicle), synthetic images:
  report apart from the real ones. f1-boxed/f1-3ref-boxed: the same split
  of the 93 hand-boxed images (bench/labels), matched on their boxes.
  f1-open/: both again with every third team (3 of 10) never enrolled, all
  its images queries of an unknown car: the F1 set as an open set.
  f1-draws/: f1-3ref with two other random draws of the 3 references: how
  much the F1 figures owe to which photos were drawn.
- f1-boxed/f1-car-free: photos showing no vehicle (`empty`), for the
  detector's false boxes: the side of each hand-boxed F1 image beside its
  car (bench.decoding's car-free sides), the one thing cut out and written
  (as PNG, into f1-boxed/car-free/).

None of these images is trained on (bench.datasets says what is).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import cv2
import numpy as np

from bench.datasets import (
    DATA_DIR, EPFL_DIR, KHOA_DIR, BoxedFrame, epfl_frames, f1_boxes, f1_images, khoa_images, read_image,
)
from bench.decoding import car_free_side

UNKNOWN_EPFL_CARS = {8, 9, 10}  # a third of the cars: never enrolled


F1_DRAW = 7
"""The seed of the F1 manifests' references (f1-3ref, f1-boxed, f1-open)."""
OTHER_F1_DRAWS = (1, 2)


def epfl_angles() -> dict[int, tuple[int, int, int]]:
    """car -> (frames per full turn, frontal frame, direction) from tripod-seq.txt."""
    lines = (EPFL_DIR / "tripod-seq.txt").read_text().split("\n")
    per_turn, frontal, direction = ([int(v) for v in lines[i].split()] for i in (4, 5, 6))
    return {car + 1: (per_turn[car], frontal[car], direction[car]) for car in range(len(per_turn))}


def viewing_angle(frame: BoxedFrame, turns: dict[int, tuple[int, int, int]]) -> float:
    per_turn, frontal, direction = turns[frame.car]
    return (direction * (frame.frame - frontal) * 360.0 / per_turn) % 360.0


def closest(frames: list[BoxedFrame], angle: float, turns: dict[int, tuple[int, int, int]]) -> BoxedFrame:
    def distance(f: BoxedFrame) -> float:
        d = abs(viewing_angle(f, turns) - angle) % 360.0
        return min(d, 360.0 - d)

    return min(frames, key=distance)


def sample(frame: BoxedFrame, car: str | None) -> dict[str, object]:
    return {"image": str(frame.path), "car": car, "box": list(frame.box)}


def epfl(reference_angles: list[float], name: str) -> dict[str, object]:
    turns = epfl_angles()
    by_car: dict[int, list[BoxedFrame]] = {}
    for frame in epfl_frames():
        by_car.setdefault(frame.car, []).append(frame)
    references, used = [], set()
    for car, frames in sorted(by_car.items()):
        if car in UNKNOWN_EPFL_CARS:
            continue
        for angle in reference_angles:
            chosen = closest(frames, angle, turns)
            references.append(sample(chosen, f"{car:02d}"))
            used.add(chosen.path)
    queries = [
        sample(f, None if f.car in UNKNOWN_EPFL_CARS else f"{f.car:02d}")
        for frames in by_car.values() for f in frames[::2] if f.path not in used
    ]
    return {"name": name, "references": references, "queries": queries}


def khoa(detected: bool) -> dict[str, object]:
    """Each Khoa image is already a crop of one vehicle, its ground-truth box the whole frame;
    `detected` matches on the detector's dominant box inside the crop instead."""
    vehicles = sorted({vehicle for _, vehicle in khoa_images("val")})
    references, queries = [], []
    for index, vehicle in enumerate(vehicles):
        known = index % 3 != 2
        cam1, cam2 = (KHOA_DIR / "images" / f"{vehicle}_cam{n}.jpg" for n in (1, 2))
        if known:
            references.append({"image": str(cam1), "car": vehicle, "box": None if detected else whole_frame(cam1)})
        queries.append({"image": str(cam2), "car": vehicle if known else None,
                        "box": None if detected else whole_frame(cam2)})
    name = "khoa-cam1-to-cam2-detected" if detected else "khoa-cam1-to-cam2"
    return {"name": name, "references": references, "queries": queries}


def whole_frame(path: Path) -> list[float]:
    height, width = read_image(path).shape[:2]
    return [0.0, 0.0, float(width), float(height)]


def f1(boxed: bool, open_set: bool = False, draw: int = F1_DRAW) -> dict[str, object]:
    """All F1 images, matched on the dominant detected vehicle; or `boxed`, only the hand-boxed
    ones, matched on their labelled box: the embedder's share of the F1 figures, without the detector's.
    `open_set`: every third team is not enrolled (the other teams keep the same references).
    `draw`: the seed the references are drawn with."""
    boxes: dict[Path, list[float] | None] = (
        {path: list(box) for path, box in f1_boxes()} if boxed else {path: None for path, _ in f1_images()})
    by_team: dict[str, list[Path]] = {}
    for path in boxes:
        by_team.setdefault(path.parent.name, []).append(path)
    rng = random.Random(draw)
    references, queries = [], []
    for index, (team, paths) in enumerate(sorted(by_team.items())):
        chosen = set(rng.sample(sorted(paths), 3))
        if open_set and index % 3 == 2:
            queries += [{"image": str(p), "car": None, "box": boxes[p]} for p in sorted(paths)]
            continue
        references += [{"image": str(p), "car": team, "box": boxes[p]} for p in sorted(chosen)]
        queries += [{"image": str(p), "car": team, "box": boxes[p]} for p in sorted(paths) if p not in chosen]
    name = "f1-game-3ref-boxed (synthetic, hand-boxed)" if boxed else "f1-game-3ref (synthetic)"
    if open_set:
        name = name.replace("3ref", "3ref-open")
    if draw != F1_DRAW:
        name += f", draw {draw}"
    return {"name": name, "references": references, "queries": queries}


def f1_car_free(folder: Path) -> dict[str, object]:
    """The car-free side of each hand-boxed F1 image, written into `folder`, as a manifest of photos showing no
    vehicle (paths relative to the manifest, which sits beside `folder`)."""
    folder.mkdir(exist_ok=True)
    empty = []
    for path, box in f1_boxes():
        side = car_free_side(read_image(path), np.asarray([box], np.float32))
        if side is not None:
            name = f"{path.parent.name}_{path.stem}.png"
            cv2.imwrite(str(folder / name), side)
            empty.append(f"{folder.name}/{name}")
    return {"name": "f1-game car-free sides (synthetic)", "empty": empty}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".cache/eval")
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    out.mkdir(parents=True, exist_ok=True)
    manifests = {
        "epfl-1ref.json": epfl([45.0], "epfl-1ref"),
        "epfl-3ref.json": epfl([45.0, 165.0, 285.0], "epfl-3ref"),
        "khoa.json": khoa(detected=False),
        "khoa-detected.json": khoa(detected=True),
        "f1-3ref.json": f1(boxed=False),
        "f1-boxed/f1-3ref-boxed.json": f1(boxed=True),
        "f1-open/f1-3ref-open.json": f1(boxed=False, open_set=True),
        "f1-open/f1-3ref-open-boxed.json": f1(boxed=True, open_set=True),
        **{f"f1-draws/f1-3ref-draw{draw}.json": f1(boxed=False, draw=draw) for draw in OTHER_F1_DRAWS},
    }
    # Apart, so `liveryid eval .cache/eval/*.json` keeps its five sets.
    for folder in ("epfl-views", "f1-boxed", "f1-open", "f1-draws"):
        (out / folder).mkdir(exist_ok=True)
    manifests["f1-boxed/f1-car-free.json"] = f1_car_free(out / "f1-boxed" / "car-free")
    for angle in range(0, 360, 45):
        manifests[f"epfl-views/epfl-1ref-{angle:03d}.json"] = epfl([float(angle)], f"epfl-1ref-{angle:03d}")
    for name, manifest in manifests.items():
        (out / name).write_text(json.dumps(manifest, indent=1))
        print(out / name)


if __name__ == "__main__":
    main()
