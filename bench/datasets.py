"""Readers for the labelled development data in ../shared/data (see its
README). Nothing here copies the data; callers skip when it is absent."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sidecar.stages.decode import IMAGE_SUFFIXES

DATA_DIR = Path(os.environ.get("LIVERYID_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
EPFL_DIR = DATA_DIR / "epfl-gims08-dev"
F1_DIR = DATA_DIR / "f1-game-teams-dev"
KHOA_DIR = DATA_DIR / "khoa-2cam-dev"

# The project's embedder trains on the Khoa train split alone
# (`models/train_reid.py`), its detector on the EPFL frames of cars 01-05
# (`models/train_detector.py`). Everything else is validation, never trained
# on: the Khoa val split, EPFL cars 06-10 for detection (every EPFL car for
# re-identification, which matches on ground-truth crops) and the F1 game
# images (third-party screenshots, licensed for testing only).
DETECTOR_TRAIN_CARS = frozenset({1, 2, 3, 4, 5})
# Boxes drawn by hand on every third F1 game image (`f1_boxes`).
F1_BOXES = Path(__file__).resolve().parent / "labels" / "f1_game_boxes.csv"
EPFL_NUMBERS = Path(__file__).resolve().parent / "labels" / "epfl_numbers.csv"


@dataclass(frozen=True)
class BoxedFrame:
    path: Path
    car: int
    frame: int
    box: tuple[float, float, float, float]
    """Ground truth [x1, y1, x2, y2] in pixels."""


def epfl_frames() -> list[BoxedFrame]:
    """Every EPFL frame with its ground-truth box (`bbox_<car>.txt`: one
    `x y w h` line per frame)."""
    frames = []
    for bbox_file in sorted(EPFL_DIR.glob("bbox_*.txt")):
        car = int(bbox_file.stem.split("_")[1])
        for index, line in enumerate(bbox_file.read_text().split("\n")):
            if not line.strip():
                continue
            x, y, w, h = (float(v) for v in line.split())
            path = EPFL_DIR / f"tripod_seq_{car:02d}_{index + 1:03d}.jpg"
            if path.exists():
                frames.append(BoxedFrame(path, car, index + 1, (x, y, x + w, y + h)))
    return frames


def f1_images() -> list[tuple[Path, str]]:
    """(image, team) for every F1 game image: the folder names the team."""
    return [
        (path, team_dir.name)
        for team_dir in sorted(p for p in F1_DIR.iterdir() if p.is_dir())
        for path in sorted(team_dir.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]


def f1_boxes() -> list[tuple[Path, tuple[float, float, float, float]]]:
    """(image, car box) for the hand-labelled F1 game images: each shows one car,
    boxed [x1, y1, x2, y2] in pixels by looking at it (bench/labels/README.md)."""
    rows = [line.split(",") for line in F1_BOXES.read_text().split("\n")[1:] if line.strip()]
    return [(F1_DIR / image, (float(x1), float(y1), float(x2), float(y2))) for image, x1, y1, x2, y2 in rows]


def epfl_numbers() -> dict[tuple[int, int], str]:
    """(car, frame) -> the racing number legible in that frame (labels/README.md); other frames show none."""
    lines = [line.split(",") for line in EPFL_NUMBERS.read_text().split("\n")[1:] if line.strip()]
    return {(int(car), frame): number for car, first, last, number in lines for frame in range(int(first), int(last) + 1)}


def khoa_images(split: str) -> list[tuple[Path, str]]:
    """(crop, vehicle) for the Khoa `train` or `val` split (`<type>_<id>_cam<n>.jpg`)."""
    names = [n.strip() for n in (KHOA_DIR / f"{split}.txt").read_text().split("\n") if n.strip()]
    return [(KHOA_DIR / "images" / name, name.rsplit("_cam", 1)[0]) for name in names]


def read_image(path: Path) -> np.ndarray:
    """A development image as BGR; a bench stops on one it cannot read."""
    image = cv2.imread(str(path))
    if image is None:
        sys.exit(f"cannot read {path}")
    return image
