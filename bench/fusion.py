"""What reading racing numbers adds to appearance, on the EPFL manifests
(`python -m bench.manifests` writes them): the decision `identify` makes
from appearance alone against the fused one (`sidecar/stages/fuse.py`).

    .venv/bin/python -m bench.manifests && .venv/bin/python -m bench.fusion

Car 04 carries #3 (bench/labels/epfl_numbers.csv), so the entry list gives
it that number; the other show cars carry none. Every query's ground-truth
crop is read, as identify reads a detected vehicle. Two libraries:
- references: every enrolled car has its references (1 or 3);
- car 04 by number only: car 04 comes from the entry list with no
  reference photo, the others keep theirs.
Cars 08-10 are never enrolled (open set): any match for them is false.
The third row of each reads numbers only where appearance alone does not
match (`read_numbers: "unsure"`), with the share of vehicles read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import numpy as np

from bench.datasets import DATA_DIR
from sidecar import evaluation
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.identification import match_policy
from sidecar.protocol.messages import ImageRef
from sidecar.stages.decode import load_image
from sidecar.stages.fuse import fuse, number_wanted, numbers_index
from sidecar.stages.match import MatchPolicy, Verdict, decide
from sidecar.stages.number import NumberReading

MANIFESTS = Path(".cache/eval")
NUMBERED_CAR, NUMBER = "04", "3"


def rates(verdicts: list[Verdict], truths: list[str | None]) -> tuple[float, float, float, float]:
    """(true match, wrong match, false match on unenrolled cars, true match on the numbered car)."""
    numbered = [v for v, t in zip(verdicts, truths) if t == NUMBERED_CAR]
    return (*evaluation.match_rates(verdicts, truths),
            float(np.mean([v.decision == "match" and v.car_id == NUMBERED_CAR for v in numbered])))


def compare(prepared: evaluation.Prepared, readings: list[list[NumberReading]], policy: MatchPolicy,
            number_only: bool) -> list[tuple[str, tuple[float, float, float, float]]]:
    keep = [i for i, car in enumerate(prepared.reference_cars) if not (number_only and car == NUMBERED_CAR)]
    scores = evaluation.car_similarities(prepared.queries, prepared.references[keep],
                                         [prepared.reference_cars[i] for i in keep], evaluation.IDENTIFY_SCORING)
    numbers = {car: (NUMBER if car == NUMBERED_CAR else None) for car in {*prepared.reference_cars}}
    by_number = numbers_index(numbers)
    appearance, fused, if_unsure = [], [], []
    for query, read in enumerate(readings):
        verdict = decide(scores.candidates(query), policy)
        appearance.append(verdict)
        fused.append(fuse(verdict, read, numbers, by_number, policy).verdict)
        if_unsure.append(fuse(verdict, read if number_wanted("unsure", verdict) else [], numbers, by_number, policy).verdict)
    unsure = sum(v.decision != "match" for v in appearance) / len(appearance)
    return [("appearance", rates(appearance, prepared.truths)), ("appearance + number", rates(fused, prepared.truths)),
            (f"appearance + number where unsure ({unsure:.0%} read)", rates(if_unsure, prepared.truths))]


def main() -> None:
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    engine = Engine(settings_from_env())
    policy = match_policy(engine.embedder(), None, None, 5)
    reader = engine.number_reader()
    print("| manifest | library | signals | true match | wrong match | false match (cars 08-10) | car 04 (#3) true match |")
    print("|---|---|---|---|---|---|---|")
    read_on: dict[tuple[str, tuple[float, ...] | None], list[NumberReading]] = {}
    for name in ("epfl-1ref", "epfl-3ref"):
        path = MANIFESTS / f"{name}.json"
        if not path.exists():
            sys.exit(f"no {path}: run `python -m bench.manifests` first")
        prepared = evaluation.prepare(engine, path)
        manifest = msgspec.json.decode(path.read_bytes(), type=evaluation.EvalManifest)
        readings = []
        for query in manifest.queries:
            key = (query.image, tuple(query.box) if query.box else None)
            if key not in read_on:
                image = load_image(ImageRef(path=query.image), engine.limits)
                read_on[key] = reader.on_vehicle(image, query.box or [0, 0, image.shape[1], image.shape[0]]).numbers
            readings.append(read_on[key])
        for number_only in (False, True):
            library = "car 04 by number only" if number_only else "references"
            for signals, (true, wrong, false, numbered) in compare(prepared, readings, policy, number_only):
                print(f"| {name} | {library} | {signals} | {true:.1%} | {wrong:.1%} | {false:.1%} | {numbered:.1%} |")
    read = sum(bool(r) for r in read_on.values())
    print(f"\n{len(read_on)} query crops read, a number on {read}; "
          f"threshold {policy.threshold}, margin {policy.margin} (identify's defaults)")


if __name__ == "__main__":
    main()
