"""Tagging throughput on 24-megapixel JPEGs: the naive pipeline (full-size
decode, everything in turn, ONNX Runtime's threads spinning as they do by
default) against the default one (JPEGs decoded at the smallest DCT scale
that keeps 2048 px, or 1024 px when numbers are not read, photos read and
decoded ahead in worker threads while the models run), in the same run.

    .venv/bin/python -m bench.throughput [--photos 60]
    .venv/bin/python -m bench.throughput --scale 100 1000 10000 [--no-numbers]

The photos: EPFL frames spread over the ten cars, upscaled 16x to 6016x4000
and re-encoded at JPEG quality 92 (built once into .cache/throughput/). The
library: 40 cars, EPFL cars 01-07 from 3 references each and 33 Khoa
vehicles from their cam1 crop. Each pipeline tags the photos from a fresh
copy of that library in a process of its own, so its peak RSS is its own.
Printed: photos per second, milliseconds per photo in each stage, CPU
utilisation (CPU seconds / wall seconds / cores), peak RSS, and how many
photos got the same matched cars from both.

--scale: the default pipeline on N distinct photos for each N (the same
photos over and over, each copy made distinct by a JPEG comment, written
once into .cache/throughput/scale/: 1.6 MB each), to show time growing
linearly and memory staying flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from bench.datasets import DATA_DIR, epfl_frames, khoa_images
from bench.manifests import epfl
from sidecar.cli import add_number_reading, number_reading
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.identification import Identification
from sidecar.protocol.endpoint import quiet_context
from sidecar.protocol.messages import (
    CarFields, EnrollParams, ImageRef, InitializeParams, ReadNumbers, ResultsQueryParams, TagParams,
)
from sidecar.stages.decode import ImageLimits, load_image

QUIET = quiet_context()
LIMITS = ImageLimits(max_pixels=200_000_000, max_file_bytes=512 * 1024 * 1024)
UPSCALE = 16  # 376x250 EPFL frames -> 6016x4000, 24 MP
# name: (environment, tag's read_numbers)
PIPELINES: dict[str, tuple[dict[str, str], ReadNumbers]] = {
    # Full-size decode, everything in turn, ONNX Runtime's threads spinning as they do by default.
    "naive": ({"LIVERYID_DECODE_SIDE": "1000000", "LIVERYID_DECODE_SIDE_WITHOUT_NUMBERS": "1000000",
               "LIVERYID_TAG_PREFETCH": "0", "LIVERYID_SPIN_WAIT": "true"}, True),
    "default": ({}, True),
    "default, numbers read where appearance is unsure": ({}, "unsure"),
    "default, numbers not read": ({}, False),
}
STAGES = ["read", "decode", "detect", "embed", "match", "number", "store", "bursts"]


def build_photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = epfl_frames()
    chosen = frames[:: max(1, len(frames) // count)][:count]
    photos = []
    for frame in chosen:
        path = folder / f"{frame.path.stem}_24mp.jpg"
        if not path.exists():
            big = cv2.resize(load_image(ImageRef(path=str(frame.path)), LIMITS), None, fx=UPSCALE, fy=UPSCALE,
                             interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
        photos.append(path)
    return photos


def distinct_copies(photos: list[Path], folder: Path, counts: list[int]) -> dict[int, Path]:
    """For each count, a folder of that many photos cycling through `photos`,
    each one made distinct by a JPEG comment (tag knows a photo by its
    content): written once into folder/all, linked from folder/COUNT."""
    every = folder / "all"
    every.mkdir(parents=True, exist_ok=True)
    sources = [p.read_bytes() for p in photos]
    for i in range(max(counts)):
        path = every / f"{i:05d}.jpg"
        if not path.exists():
            data, comment = sources[i % len(sources)], f"liveryid bench copy {i}".encode()
            # SOI, then a COM segment (marker, big-endian length including itself, text), then the rest.
            path.write_bytes(data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:])
    folders = {}
    for count in counts:
        folders[count] = folder / str(count)
        folders[count].mkdir(exist_ok=True)
        for i in range(count):
            link = folders[count] / f"{i:05d}.jpg"
            if not link.is_symlink():
                link.symlink_to((every / link.name).resolve())
    return folders


def enroll(library: Path) -> None:
    engine = Engine(settings_from_env())
    engine.initialize(InitializeParams(library=str(library)), QUIET)
    identification = Identification(engine)
    references: list[dict[str, Any]] = epfl([45.0, 165.0, 285.0], "epfl-3ref")["references"]  # type: ignore[assignment]
    by_car: dict[str, list[dict[str, Any]]] = {}
    for reference in references:
        by_car.setdefault(reference["car"], []).append(reference)
    for car, refs in by_car.items():
        identification.enroll(EnrollParams(car=CarFields(label=f"EPFL {car}"), images=[ImageRef(path=r["image"]) for r in refs],
                                           boxes=[r["box"] for r in refs]), QUIET)
    vehicles = sorted({vehicle for _, vehicle in khoa_images("val")})[:33]
    for vehicle in vehicles:
        crop = DATA_DIR / "khoa-2cam-dev" / "images" / f"{vehicle}_cam1.jpg"
        height, width = load_image(ImageRef(path=str(crop)), LIMITS).shape[:2]
        identification.enroll(EnrollParams(car=CarFields(label=vehicle), images=[ImageRef(path=str(crop))],
                                           boxes=[[0.0, 0.0, float(width), float(height)]]), QUIET)
    engine.close()


def run_pipeline(photos: Path, library: Path, read_numbers: ReadNumbers) -> None:
    """One pipeline, in this process: tag, then print what it measured as one JSON line."""
    engine = Engine(settings_from_env())
    engine.initialize(InitializeParams(library=str(library)), QUIET)
    identification = Identification(engine)
    cpu_started, started = time.process_time(), time.perf_counter()
    result = identification.tag(TagParams(images=[str(photos)], read_numbers=read_numbers), QUIET)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the tag's, before the query below
    detections = identification.results_query(ResultsQueryParams(limit=10000), QUIET).detections
    matched: dict[str, list[str]] = {}
    for detection in detections:
        if detection.decision == "match" and detection.car_id:
            matched.setdefault(Path(detection.path).name, []).append(detection.car_id)
    print(json.dumps({
        "photos": result.tagged, "failed": len(result.failed), "wall": wall, "cpu": cpu,
        "stages": result.stage_seconds, "peak_rss_mb": peak_rss_mb,
        "matched": {name: sorted(cars) for name, cars in matched.items()},
    }))
    engine.close()


def tag_in_process(photos: Path, enrolled: Path, library: Path, env: dict[str, str], read_numbers: ReadNumbers
                   ) -> dict[str, Any]:
    """Tag `photos` into a copy of the `enrolled` library in a process of its own; what it measured."""
    shutil.copytree(enrolled, library, ignore=shutil.ignore_patterns("*.lock"))
    command = [sys.executable, "-m", "bench.throughput", "--run", str(photos), str(library)]
    flags = {True: [], False: ["--no-numbers"], "unsure": ["--numbers-if-unsure"]}[read_numbers]
    out = subprocess.run(command + flags, env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def scale(photos: list[Path], counts: list[int], read_numbers: ReadNumbers) -> None:
    """Time and memory of the default pipeline as the event grows."""
    folders = distinct_copies(photos, Path(".cache/throughput/scale"), counts)
    print(f"default pipeline, read_numbers {read_numbers}; distinct 24 MP JPEGs "
          f"(the {len(photos)} photos over and over), 40 enrolled cars, {os.cpu_count()} cores")
    print("| photos | seconds | photos/s | peak RSS MB | library MB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "enrolled"
        enroll(base)
        for count in counts:
            library = Path(tmp) / str(count)
            r = tag_in_process(folders[count], base, library, {}, read_numbers)
            size = sum(f.stat().st_size for f in library.rglob("*") if f.is_file()) / 2**20
            print(f"| {count:,} | {r['wall']:.0f} | {r['photos'] / r['wall']:.2f} | {r['peak_rss_mb']:.0f} | {size:.0f} |",
                  flush=True)
            shutil.rmtree(library)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--run", nargs=2, type=Path, metavar=("PHOTOS", "LIBRARY"), help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, nargs="+", metavar="N",
                        help="instead: the default pipeline on N distinct photos (copies of the --photos ones), per N")
    add_number_reading(parser)  # with --scale
    args = parser.parse_args()
    read_numbers = number_reading(args)
    if args.run:
        run_pipeline(args.run[0], args.run[1], read_numbers)
        return
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    photos = build_photos(Path(".cache/throughput") / str(args.photos), args.photos)
    if args.scale:
        scale(photos, args.scale, read_numbers)
        return
    cores = os.cpu_count() or 1
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "enrolled"
        enroll(base)
        for index, (name, (env, read_numbers)) in enumerate(PIPELINES.items()):
            results[name] = tag_in_process(photos[0].parent, base, Path(tmp) / str(index), env, read_numbers)
    print(f"{len(photos)} photos of 6016x4000 px (24 MP, JPEG q92), 40 enrolled cars, {cores} cores")
    print("| pipeline | photos/s | " + " | ".join(f"{s} ms" for s in STAGES) + " | CPU use | peak RSS MB |")
    print("|---|---|" + "---|" * len(STAGES) + "---|---|")
    for name, r in results.items():
        per_photo = [1000 * r["stages"].get(stage, 0.0) / r["photos"] for stage in STAGES]
        print(f"| {name} | {r['photos'] / r['wall']:.2f} | " + " | ".join(f"{v:.0f}" for v in per_photo)
              + f" | {r['cpu'] / r['wall'] / cores:.0%} | {r['peak_rss_mb']:.0f} |")
    naive, default = results["naive"], results["default"]

    def same(a: dict[str, Any], b: dict[str, Any]) -> int:
        return sum(a["matched"].get(p.name, []) == b["matched"].get(p.name, []) for p in photos)

    print(f"\nspeed-up {naive['wall'] / default['wall']:.2f}x; photos with the same matched cars in both: "
          f"{same(naive, default)}/{len(photos)}; failed: {naive['failed']} / {default['failed']}")
    for name, r in results.items():
        if name not in ("naive", "default"):
            print(f"{name}: the same matched cars as the default on {same(default, r)}/{len(photos)} photos")


if __name__ == "__main__":
    main()
