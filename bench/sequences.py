"""What bursts add to tagging, on the EPFL frames as an event: each car was
shot as one sequence on its turntable, one to two seconds apart, and the
frames keep their EXIF (camera, DateTimeOriginal, SubSecTimeOriginal).

    .venv/bin/python -m bench.sequences

The library: cars 01-07 but 04 enrolled from one reference each (the front
three-quarter view, as bench.manifests' epfl-1ref), car 04 from the entry
list by its number (#3) alone; cars 08-10 never enrolled. Every other frame
is a photo of the event, tagged through the whole pipeline (detector,
embedder, number, match), once without bursts and once with them. Each
photo counts once: the detection over its ground-truth box.

These bursts each hold one car, so the figures show what bursts add, not
how they cope with several cars in one burst (tests/test_sequence.py).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import DATA_DIR, epfl_frames
from bench.manifests import epfl
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.entries import Entries
from sidecar.identification import Identification
from sidecar.protocol.endpoint import quiet_context
from sidecar.protocol.messages import (
    CarFields, EnrollParams, EntriesImportParams, Entry, ImageRef, InitializeParams, ResultDetection, ResultsQueryParams,
    TagParams,
)
from sidecar.stages.detect import box_iou

NUMBERED_CAR = "04"
QUIET = quiet_context()


def main() -> None:
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    enrolled_views: list[dict[str, Any]] = epfl([45.0], "epfl-1ref")["references"]  # type: ignore[assignment]
    references = [r for r in enrolled_views if r["car"] != NUMBERED_CAR]
    used = {r["image"] for r in enrolled_views}
    frames = {f.path.name: f for f in epfl_frames()[::2] if str(f.path) not in used}
    with tempfile.TemporaryDirectory() as tmp:
        event = Path(tmp) / "event"
        event.mkdir()
        for name, frame in frames.items():
            (event / name).symlink_to(frame.path)
        engine = Engine(settings_from_env())
        engine.initialize(InitializeParams(library=str(Path(tmp) / "library")), QUIET)
        identification = Identification(engine)
        cars = {}
        for reference in references:
            car = reference["car"]
            enrolled = identification.enroll(EnrollParams(
                car=CarFields(label=f"EPFL {car}"), images=[ImageRef(path=reference["image"])], boxes=[reference["box"]]), QUIET)
            cars[enrolled.car.id] = car
        imported = Entries(engine).import_entries(EntriesImportParams(rows=[Entry(number="3", label="EPFL 04")]), QUIET)
        cars[imported.cars[0].id] = NUMBERED_CAR
        print("| bursts | true match | wrong match | false match (cars 08-10) | car 04 (#3, no reference) true match "
              "| decided by number | decided by burst |")
        print("|---|---|---|---|---|---|---|")
        for gap in (0.0, 2.0):
            identification.tag(TagParams(images=[str(event)], rescan=True, sequence_gap_s=gap), QUIET)
            detections = identification.results_query(ResultsQueryParams(limit=10000), QUIET).detections
            best: dict[str, tuple[float, ResultDetection]] = {}
            for detection in detections:
                name = Path(detection.path).name
                overlap = float(box_iou(np.asarray([detection.box]), np.asarray([frames[name].box]))[0, 0])
                if overlap >= 0.5 and (name not in best or overlap > best[name][0]):
                    best[name] = (overlap, detection)
            outcome: Counter[str] = Counter()
            for name, frame in frames.items():
                truth = f"{frame.car:02d}" if frame.car <= 7 else None
                d = best[name][1] if name in best else None
                named = cars.get(d.car_id or "") if d is not None and d.decision == "match" else None
                kind = "known" if truth else "unknown"
                outcome[kind] += 1
                outcome[f"{kind} matched"] += named is not None
                outcome[f"{kind} right"] += named is not None and named == truth
                outcome["04"] += truth == NUMBERED_CAR
                outcome["04 right"] += truth == NUMBERED_CAR and named == truth
                signals = d.evidence.decided_by if d is not None and d.evidence is not None else []
                outcome["by number"] += named is not None and "number" in signals
                outcome["by sequence"] += named is not None and "sequence" in signals
            known = outcome["known"]
            print(f"| {'off' if gap == 0 else f'{gap:g} s'} | {outcome['known right'] / known:.1%} "
                  f"| {(outcome['known matched'] - outcome['known right']) / known:.1%} "
                  f"| {outcome['unknown matched'] / outcome['unknown']:.1%} | {outcome['04 right'] / outcome['04']:.1%} "
                  f"| {outcome['by number']} | {outcome['by sequence']} |")
        print(f"\n{len(frames)} photos ({outcome['known']} of enrolled cars, {outcome['unknown']} of cars 08-10); "
              f"photos where no detection covers the car count as not matched: {len(frames) - len(best)}")
        engine.close()


if __name__ == "__main__":
    main()
