"""What `adapt` does to matching on the development data, through the real
method: a library is enrolled with a manifest's references, adapted on the
photos of the manifest's queries (unlabelled: adapt never sees their labels,
exactly as on a user's event, where the photos to tag are the training
data), then `liveryid eval`'s figures are printed before and after.

    .venv/bin/python -m bench.manifests && .venv/bin/python -m bench.adapt [--rounds 2] [--iterations 60]

EPFL is enrolled with 3 references per car (adapt checks its model on them),
then measured with the 1-reference manifest too (its reference is one of the
three, its queries the same photos). The F1 game set is run with every team
enrolled (and adapt told so: `whole_field`), then as an open set (f1-open:
3 of the 10 teams never enrolled, their photos in the event): cars of one
shape, where an unenrolled car can cluster with an enrolled one. Khoa is
not run: it has one reference per vehicle, and adapt refuses to switch
models it cannot check.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from sidecar import evaluation
from sidecar.adaptation import Adaptation
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.identification import Identification, match_policy
from sidecar.protocol.endpoint import quiet_context
from sidecar.protocol.messages import AdaptParams, CarFields, EnrollParams, ImageRef

QUIET = quiet_context()
# (manifest enrolled and adapted on, manifests measured before and after, every car in the photos enrolled)
SCENARIOS = [
    ("epfl-3ref.json", ["epfl-1ref.json", "epfl-3ref.json"], False),
    ("f1-3ref.json", ["f1-3ref.json"], True),
    ("f1-open/f1-3ref-open.json", ["f1-open/f1-3ref-open.json"], False),
]


def enroll(engine: Engine, manifest: evaluation.EvalManifest, base: Path) -> None:
    identification = Identification(engine)
    by_car: dict[str, list[evaluation.Sample]] = {}
    for sample in manifest.references:
        by_car.setdefault(sample.car or "", []).append(sample)
    for car, samples in by_car.items():
        boxes = [s.box for s in samples] if all(s.box is not None for s in samples) else None
        params = EnrollParams(car=CarFields(id=car, label=car), images=[ImageRef(path=str(base / s.image)) for s in samples],
                              boxes=boxes)
        identification.enroll(params, QUIET)


def figures(engine: Engine, manifests: list[Path]) -> list[evaluation.Report]:
    policy = match_policy(engine.embedder(), None, None, 5)
    return [evaluation.prepare(engine, path).reports(policy)[0] for path in manifests]  # [0]: identify's scoring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifests", type=Path, default=Path(".cache/eval"))
    parser.add_argument("--rounds", type=int, help="default: adapt's")
    parser.add_argument("--iterations", type=int, help="default: adapt's")
    args = parser.parse_args()
    settings = settings_from_env()
    for enrolled, measured, whole_field in SCENARIOS:
        path = args.manifests / enrolled
        if not path.exists():
            sys.exit(f"{path} is missing: run `python -m bench.manifests` first")
        manifest = msgspec.json.decode(path.read_bytes(), type=evaluation.EvalManifest)
        measured_paths = [args.manifests / m for m in measured]
        before = figures(Engine(settings), measured_paths)
        with tempfile.TemporaryDirectory() as folder:
            engine = Engine(settings)
            engine.open_library(Path(folder))
            enroll(engine, manifest, path.parent)
            event = sorted({str(path.parent / q.image) for q in manifest.queries})
            started = time.monotonic()
            options = {k: v for k, v in (("rounds", args.rounds), ("iterations", args.iterations)) if v is not None}
            result = Adaptation(engine).adapt(AdaptParams(images=event, whole_field=whole_field, **options), QUIET)
            seconds = time.monotonic() - started
            after = figures(engine, measured_paths)
            engine.close()
        print(f"\n## {manifest.name}: adapted on {result.photos} unlabelled photos ({result.crops} vehicle crops, "
              f"last round: radius {result.radius:.2f}, {result.clusters} clusters holding {result.clustered}) in {seconds:.0f} s ("
              + ", ".join(f"{stage} {spent:.0f} s" for stage, spent in result.stage_seconds.items()) + ")")
        for name, check in (("before", result.before), ("after", result.after)):
            print(f"- reference check {name}: rank-1 {check.rank1:.1%}, true match {check.true_match:.1%}, "
                  f"false match {check.false_match:.1%} ({check.references} references)")
        print(f"- crops of apparently unenrolled cars (clusters the current model matches no crop of): "
              f"{result.unknowns.crops}, matched by the new model: {result.unknowns.matched}")
        print(f"- {result.reason}\n")
        print("| set | rank-1 before → after | true match before → after | false match (unknown cars) before → after |")
        print("|---|---|---|---|")
        for b, a in zip(before, after):
            print(f"| {b.name} | {b.rank1:.1%} → {a.rank1:.1%} | {b.true_match_rate:.1%} → {a.true_match_rate:.1%} | "
                  f"{b.false_match_rate:.1%} → {a.false_match_rate:.1%} |")
        for when, reports in (("before", before), ("after", after)):
            named = evaluation.false_matches_line(reports)
            if named:
                print(f"- {when}, {named}")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
