"""How well the number stage reads racing numbers, on the hand-labelled EPFL
frames (bench/labels/epfl_numbers.csv): every ground-truth crop of every car
is read, as identify will read a detected vehicle.

    .venv/bin/python -m bench.numbers [--text-detector-file FILE.onnx]

- exact: frames with a legible number where the surest reading is it;
- missed: frames with a legible number and no reading;
- wrong: frames where some reading is not the legible number (or any
  reading where none is legible): the figure that must stay near zero.

Then the hand-boxed F1 game cars (bench/labels/f1_game_boxes.csv): every
car in these screenshots is the player's, painted #19 whatever the team,
often too small or turned away to read. What the reader returns when the
crop's text is detected at several resolutions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec

from bench.datasets import DATA_DIR, epfl_frames, epfl_numbers, f1_boxes
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.inference.session import OrtSession
from sidecar.protocol.messages import ImageRef
from sidecar.stages.decode import load_image
from sidecar.stages.embed import crop
from sidecar.stages.number import MIN_NUMBER_HEIGHT, NumberReader, NumberReading, TextDetector


THRESHOLDS = (0.8, 0.9, 0.97, 0.99, 0.995)


def score(results: list[tuple[str | None, list[NumberReading]]], threshold: float) -> tuple[dict[str, int], list[str]]:
    counts = {"legible": 0, "exact": 0, "missed": 0, "wrong on legible": 0, "none legible": 0, "wrong on none": 0}
    wrong = []
    for truth, readings in results:
        texts = [r.text for r in readings if r.confidence >= threshold]
        if truth is None:
            counts["none legible"] += 1
            counts["wrong on none"] += bool(texts)
        else:
            counts["legible"] += 1
            counts["exact"] += bool(texts) and texts[0] == truth
            counts["missed"] += not texts
            counts["wrong on legible"] += any(t != truth for t in texts)
        if any(t != truth for t in texts):
            wrong.append(f"{[(r.text, r.confidence) for r in readings if r.confidence >= threshold]} (legible: {truth or 'none'})")
    return counts, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-detector-file", type=Path,
                        help="another DB text detector (ONNX, PP-OCR's input) in place of the manifest's, to compare")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    engine = Engine(settings_from_env())
    default = engine.number_reader()
    detector_file = args.text_detector_file or engine.model_file(engine.settings.text_detector)
    session = OrtSession(detector_file, engine.settings.intra_op_threads)
    spec = msgspec.structs.replace(default.detector.spec, output=session.output_names[0])
    default = NumberReader(TextDetector(spec, session), default.reader)
    print(f"text detector: {detector_file}")
    reader = NumberReader(default.detector, default.reader, min_confidence=0.0)  # thresholds applied below
    labels = epfl_numbers()
    results = []
    timings = []
    heights = []  # of the correct readings, as a fraction of their crop's height
    for frame in epfl_frames():
        image = crop(load_image(ImageRef(path=str(frame.path)), engine.limits), list(frame.box))
        started = time.perf_counter()
        truth, readings = labels.get((frame.car, frame.frame)), reader(image)
        timings.append(1000 * (time.perf_counter() - started))
        results.append((truth, readings))
        heights += [(r.box[3] - r.box[1]) / image.shape[0] for r in readings if r.text == truth]
    print("| least character confidence | legible: exact | legible: missed | legible: wrong number | "
          "none legible: a number returned |")
    print("|---|---|---|---|---|")
    for threshold in THRESHOLDS:
        counts, _ = score(results, threshold)
        legible, none = counts["legible"], counts["none legible"]
        mark = " (default)" if threshold == default.min_confidence else ""
        print(f"| {threshold}{mark} | {counts['exact'] / legible:.1%} | {counts['missed'] / legible:.1%} | "
              f"{counts['wrong on legible'] / legible:.1%} | {counts['wrong on none'] / none:.1%} |")
    print(f"\n{legible} frames with a legible number, {none} without; ms per crop (detect text + read): "
          f"p50 {statistics.median(timings):.1f}, p90 {statistics.quantiles(timings, n=10)[-1]:.1f}")
    for line in score(results, default.min_confidence)[1]:
        print("wrong at the default:", line)
    print(f"smallest correct reading: {min(heights):.1%} of its crop's height (text lines under "
          f"{MIN_NUMBER_HEIGHT:.1%} are not read)")
    f1_readings(engine, default, session)


def f1_readings(engine: Engine, default: NumberReader, session: OrtSession) -> None:
    crops = [crop(load_image(ImageRef(path=str(path)), engine.limits), list(box)) for path, box in f1_boxes()]
    print(f"\nF1 game cars, {len(crops)} hand-boxed crops (longest side p50 "
          f"{statistics.median(max(c.shape[:2]) for c in crops):.0f} px): readings at least {default.min_confidence} sure")
    print("| text detector's longest side | crops with a reading | readings | smallest, of its crop's height | ms per crop p50 |")
    print("|---|---|---|---|---|")
    for side in (640, 960, 1280, max(max(c.shape[:2]) for c in crops)):
        spec = msgspec.structs.replace(default.detector.spec, longest_side=side)
        reader = NumberReader(TextDetector(spec, session), default.reader)
        texts: list[list[NumberReading]] = []
        timings = []
        for image in crops:
            started = time.perf_counter()
            texts.append(reader(image))
            timings.append(1000 * (time.perf_counter() - started))
        smallest = min(((r.box[3] - r.box[1]) / image.shape[0] for image, read in zip(crops, texts) for r in read),
                       default=float("nan"))
        found = Counter(t.text for read in texts for t in read)
        mark = " (default)" if side == default.detector.spec.longest_side else ""
        print(f"| {side}{mark} | {sum(bool(t) for t in texts)} | {', '.join(f'{t} x{n}' for t, n in found.most_common()) or '-'} "
              f"| {smallest:.1%} | {statistics.median(timings):.0f} |")

if __name__ == "__main__":
    main()
