"""Command line: `liveryid serve` for the app, and the same engine for
people at a terminal (`detect`, `embed`, `info`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from sidecar import __version__
from sidecar.config import Settings, settings_from_env
from sidecar.errors import RpcError
from sidecar.protocol.framing import WIRES

if TYPE_CHECKING:
    import numpy as np

    from sidecar.engine import Engine
    from sidecar.protocol.messages import ProgressParams, ReadNumbers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveryid", description="Vehicle detection and re-identification for motorsport photos.")
    parser.add_argument("--version", action="version", version=f"liveryid {__version__}")
    parser.add_argument("--models", type=Path, help="folder holding manifest.json and the ONNX models")
    parser.add_argument("--workers", type=int, help="requests run in parallel (default 2)")
    parser.add_argument("--detector", help="detection model from the manifest (default liveryid-vehicle-nanodet)")
    parser.add_argument("--embedder", help="embedding model from the manifest (default liveryid-reid-mnv2)")
    parser.add_argument("--colour-weight", type=float, help="share of the colour histogram in appearance (default: the manifest's)")
    parser.add_argument("--box-jitter", type=float, help="share of a box's size it is also embedded grown and shrunk by, "
                        "the vectors averaged; 0: the box alone (default: the manifest's)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="speak JSON-RPC 2.0 on stdin/stdout (for the app)")
    serve.add_argument("--wire", choices=WIRES, default="json",
                       help="json: one message per line; msgpack: 4-byte big-endian length + msgpack")

    detect = commands.add_parser("detect", help="print the vehicles found in images")
    detect.add_argument("images", nargs="+", type=Path)
    detect.add_argument("--min-score", type=float, help="lowest detector score kept (default: the protocol's)")
    add_tiles(detect)
    detect.add_argument("--json", action="store_true", help="one JSON result per line")

    numbers = commands.add_parser("numbers", help="print the racing numbers and livery words read on the vehicles of images")
    numbers.add_argument("images", nargs="+", type=Path)

    embed = commands.add_parser("embed", help="print the embedding of an image (region)")
    embed.add_argument("image", type=Path)
    embed.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"))

    commands.add_parser("info", help="print the models and whether they load")

    evaluate = commands.add_parser("eval", help="matching quality on labelled manifests (see sidecar/evaluation.py)")
    evaluate.add_argument("manifests", nargs="+", type=Path)
    evaluate.add_argument("--threshold", type=float, help="match threshold (default: identify's)")
    evaluate.add_argument("--margin", type=float, help="lead over the runner-up (default: identify's)")
    evaluate.add_argument("--sweep", action="store_true", help="also print true/false match rates over thresholds")
    evaluate.add_argument("--rerank", action="store_true", help="also measure k-reciprocal re-ranking (rank-1, mAP)")
    evaluate.add_argument("--library", type=Path, help="use this library's embedder (the one `adapt` made, if any)")
    evaluate.add_argument("--no-words", action="store_true",
                          help="do not read the livery's words (appearance alone; identify with --no-numbers)")

    def with_library(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument("--library", type=Path, required=True, help="the library folder (created if absent)")
        command.set_defaults(library_command=True)
        return command

    enroll = with_library("enroll", "enroll a car from reference photos, or one car per sub-folder")
    enroll.add_argument("images", nargs="*", type=Path)
    enroll.add_argument("--car", help="the car's label, e.g. '#7 Team X'")
    enroll.add_argument("--id", help="an existing car to add references to, or the id for the new one")
    enroll.add_argument("--number")
    enroll.add_argument("--team")
    enroll.add_argument("--driver")
    enroll.add_argument("--from-folders", type=Path, help="a folder with one sub-folder of reference photos per car")
    enroll.add_argument("--entry-list", type=Path,
                        help="a CSV entry list (number, driver, team, class, car, colours): one car per row, no photos needed")

    tag = with_library("tag", "identify the cars in every photo of folders (results stored in the library)")
    tag.add_argument("paths", nargs="+", type=Path)
    tag.add_argument("--rescan", action="store_true", help="tag photos already tagged again")
    tag.add_argument("--threshold", type=float)
    add_tiles(tag)
    add_number_reading(tag)
    tag.add_argument("--burst-gap", type=float, default=2.0,
                     help="seconds between photos of one camera that make a burst (default 2; 0: no bursts)")

    with_library("cars", "list the enrolled cars")
    results = with_library("results", "list tagged detections")
    results.add_argument("--car", help="only this car's id")
    results.add_argument("--number", help="only vehicles on which this racing number was read")
    results.add_argument("--decision", choices=["match", "ambiguous", "unknown"])
    results.add_argument("--review", choices=["pending", "confirmed", "rejected"])

    review = with_library("review", "confirm or reject a tagged detection (ids from `results`)")
    verdict = review.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--confirm", type=int, metavar="DETECTION")
    verdict.add_argument("--reject", type=int, metavar="DETECTION")
    review.add_argument("--car", help="confirm: the right car's id (default: the matched one)")
    review.add_argument("--add-as-reference", action="store_true", help="confirm: also enroll the crop as a reference")

    adapt = with_library("adapt", "fine-tune the embedder on an event's unlabelled photos; the library uses it "
                                  "only when it is better on the enrolled references")
    adapt.add_argument("paths", nargs="*", type=Path)
    adapt.add_argument("--rounds", type=int, default=2, help="cluster-then-train rounds (default 2)")
    adapt.add_argument("--iterations", type=int, default=60, help="training steps per round (default 60)")
    adapt.add_argument("--max-photos", type=int, default=1000, help="photos used at most, spread over the event")
    adapt.add_argument("--measure-only", action="store_true", help="report before/after without switching")
    adapt.add_argument("--whole-field", action="store_true",
                       help="every car in the photos is enrolled: the new model may match cars the current one misses")
    adapt.add_argument("--revert", action="store_true", help="go back to the shipped embedder")

    export = with_library("export", "write the results as CSV or JSON, or XMP sidecars beside the photos")
    export.add_argument("--format", choices=["csv", "json", "xmp"], required=True)
    export.add_argument("--output", type=Path)
    export.add_argument("--overwrite", action="store_true", help="xmp: replace existing .xmp files")
    return parser


def add_number_reading(parser: argparse.ArgumentParser) -> None:
    """tag's choice of number reading, for every command that tags (benches too)."""
    reading = parser.add_mutually_exclusive_group()
    reading.add_argument("--no-numbers", action="store_true", help="do not read racing numbers (faster, appearance only)")
    reading.add_argument("--numbers-if-unsure", action="store_true",
                         help="read numbers only on vehicles appearance alone does not match (faster)")


def add_tiles(parser: argparse.ArgumentParser) -> None:
    """The `tiles` option of detect and tag."""
    parser.add_argument("--tiles", type=int, default=1, choices=[1, 2, 3],
                        help="also search a TILES x TILES grid for small cars (default 1: off)")


def number_reading(args: argparse.Namespace) -> ReadNumbers:
    """The ReadNumbers value of add_number_reading's flags."""
    return "unsure" if args.numbers_if_unsure else not args.no_numbers


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_env(models_dir=args.models, workers=args.workers, detector=args.detector,
                                 embedder=args.embedder, colour_weight=args.colour_weight,
                                 box_jitter=args.box_jitter)
    if args.command == "serve":
        from sidecar.serve import claim_stdout, serve

        wire = claim_stdout()
        sys.exit(serve(settings, args.wire, sys.stdin.buffer, wire))
    try:
        sys.exit(_run_command(args, settings))
    except RpcError as exc:
        print(f"liveryid: {exc.message}", file=sys.stderr)
        sys.exit(1)


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    """The terminal commands call the engine's methods exactly as the app does."""
    from sidecar.engine import Engine
    from sidecar.protocol.endpoint import quiet_context
    from sidecar.protocol.messages import DetectParams, EmbedParams, ImageRef, InitializeParams

    engine = Engine(settings)
    context = quiet_context()
    if getattr(args, "library_command", False):
        engine.initialize(InitializeParams(library=str(args.library)), context)
        try:
            return _library_command(args, engine)
        finally:
            engine.close()
    if args.command == "eval":
        if args.library:
            engine.open_library(args.library)
        try:
            return _evaluate(args, engine)
        finally:
            engine.close()
    if args.command == "info":
        print(msgspec.json.format(msgspec.json.encode(engine.initialize(InitializeParams(), context)).decode()))
        return 0
    if args.command == "numbers":
        return _numbers(args, engine)
    if args.command == "embed":
        result = engine.embed(EmbedParams(image=ImageRef(path=str(args.image)), box=args.box), context)
        print(msgspec.json.encode(result, enc_hook=lambda v: v.tolist()).decode())
        return 0
    failures = 0
    for path in args.images:
        try:
            options = {} if args.min_score is None else {"min_score": args.min_score}
            found = engine.detect(DetectParams(image=ImageRef(path=str(path)), tiles=args.tiles, **options), context)
        except RpcError as exc:
            failures += 1
            print(f"{path}: error {exc.code}: {exc.message}", file=sys.stderr)
            continue
        if args.json:
            print(msgspec.json.encode({"path": str(path), **msgspec.structs.asdict(found)}).decode())
            continue
        print(f"{path}  {found.width}x{found.height}  {len(found.vehicles)} vehicle(s)")
        for vehicle in found.vehicles:
            x1, y1, x2, y2 = vehicle.box
            print(f"  {vehicle.label:<10} {vehicle.score:.2f}  box=({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})")
    return 1 if failures else 0


def _numbers(args: argparse.Namespace, engine: Engine) -> int:
    from sidecar.stages.decode import load_image
    from sidecar.stages.embed import crop
    from sidecar.protocol.messages import ImageRef

    failures = 0
    reader, detector = engine.number_reader(), engine.detector()
    for path in args.images:
        try:
            image = load_image(ImageRef(path=str(path)), engine.limits)
        except RpcError as exc:
            failures += 1
            print(f"{path}: error {exc.code}: {exc.message}", file=sys.stderr)
            continue
        found = detector(image, None, engine.vehicle_classes(None))
        print(f"{path}  {len(found)} vehicle(s)")
        for index in range(len(found)):
            box, _ = found.reported(index)
            text = reader.read(crop(image, box), words=True)
            shown = ", ".join(f"#{r.text} ({r.confidence:.2f})" for r in text.numbers) or "no number read"
            words = " ".join(sorted(text.words)) or "none"
            print(f"  box=({box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f})  {shown}  words: {words}")
    return 1 if failures else 0


def _progress_bar(method: str, params: ProgressParams) -> None:
    done, total = params.done, params.total
    filled = int(30 * done / total) if total else 30
    speed = f" {params.rate:.1f}/s, {params.eta_s:.0f} s left" if params.rate and params.eta_s is not None else ""
    print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {params.stage}{speed:<32}", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def _library_command(args: argparse.Namespace, engine: Engine) -> int:
    from sidecar.export import Exporter
    from sidecar.identification import Identification
    from sidecar.protocol.endpoint import CancelToken, RequestContext, quiet_context
    from sidecar.protocol.messages import (
        CarFields, EnrollParams, ExportParams, ImageRef, ResultsQueryParams, ReviewParams, TagParams,
    )
    from sidecar.stages.decode import IMAGE_SUFFIXES

    identification = Identification(engine)
    quiet = quiet_context()
    if args.command == "enroll" and args.entry_list:
        from sidecar.entries import Entries
        from sidecar.protocol.messages import EntriesImportParams

        imported = Entries(engine).import_entries(EntriesImportParams(csv=str(args.entry_list)), quiet)
        for car in imported.cars:
            print(f"{car.id}  {car.label}: number {car.number or '-'}, {car.references} reference(s)")
        print(f"{imported.created} car(s) created, {imported.updated} updated", file=sys.stderr)
        for problem in imported.problems:
            print(f"  row {problem.row + 1} after the header left out: {problem.message}", file=sys.stderr)
        return 1 if imported.problems else 0
    if args.command == "enroll":
        if args.from_folders:
            jobs = [({"label": folder.name}, sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
                    for folder in sorted(args.from_folders.iterdir()) if folder.is_dir()]
        elif args.car or args.id:
            given = {"label": args.car, "id": args.id, "number": args.number, "team": args.team, "driver": args.driver}
            jobs = [({k: v for k, v in given.items() if v is not None}, args.images)]
        else:
            print("liveryid enroll: give --car LABEL (or --id) with photos, --from-folders DIR or --entry-list CSV", file=sys.stderr)
            return 2
        for fields, images in jobs:
            enrolled = identification.enroll(
                EnrollParams(car=CarFields(**fields), images=[ImageRef(path=str(p)) for p in images]), quiet)
            words = sorted({w for r in enrolled.references for w in r.words or ()})
            print(f"{enrolled.car.id}  {enrolled.car.label}: {enrolled.car.references} reference(s); "
                  f"words on its livery: {' '.join(words) or 'none read'}")
            for warning in enrolled.warnings:
                print(f"  warning, {images[warning.image]}: {warning.message}", file=sys.stderr)
            for alike in enrolled.look_alikes:
                print(f"  looks like {alike.label or alike.car_id} ({alike.similarity:.2f}): appearance alone may "
                      "confuse their photos", file=sys.stderr)
        return 0
    if args.command == "tag":
        options = {} if args.threshold is None else {"threshold": args.threshold}
        params = TagParams(images=[str(p) for p in args.paths], rescan=args.rescan, read_numbers=number_reading(args),
                           sequence_gap_s=args.burst_gap, tiles=args.tiles, progress=True, **options)
        result = identification.tag(params, RequestContext(0, CancelToken(), True, _progress_bar))
        print(f"{result.total} photo(s): {result.tagged} tagged ({result.replaced} replacing an earlier result), "
              f"{result.skipped} already done, {len(result.failed)} failed; "
              f"vehicles: {result.matched} matched, {result.ambiguous} ambiguous, {result.unknown} unknown; "
              f"a number read on {result.numbers}, {result.by_sequence} named by their burst")
        for failure in result.failed:
            print(f"  {failure.path}: {failure.message}", file=sys.stderr)
        return 1 if result.failed else 0
    if args.command == "cars":
        for car in identification.cars_list(None, quiet).cars:
            print(f"{car.id}  {car.label}  number={car.number or '-'} team={car.team or '-'} references={car.references}")
        return 0
    if args.command == "results":
        query = ResultsQueryParams(car_id=args.car, number=args.number, decision=args.decision, review=args.review, limit=10000)
        found = identification.results_query(query, quiet)
        for d in found.detections:
            best = d.candidates[0] if d.candidates else None
            name = f"{best.label} {'number only' if best.score is None else f'{best.score:.2f}'}" if best else "-"
            why = ""
            if d.evidence is not None:
                number = f" #{d.evidence.number.text}" if d.evidence.number else ""
                number += f" (burst of {d.evidence.sequence.frames})" if d.evidence.sequence else ""
                why = f"  by {'+'.join(d.evidence.decided_by) or 'nothing'}{number}" + (
                    f" ({d.evidence.conflict})" if d.evidence.conflict else "")
            print(f"{d.path}  detection {d.detection_id} {d.decision:<9} {name}{why}  box={[round(v) for v in d.box]}"
                  + (f"  [{d.review}]" if d.review else ""))
        print(f"{found.total} detection(s)", file=sys.stderr)
        return 0
    if args.command == "review":
        if args.confirm is not None:
            confirm = ReviewParams(detection_id=args.confirm, car_id=args.car, add_as_reference=args.add_as_reference)
            reviewed = identification.results_confirm(confirm, quiet)
        else:
            reviewed = identification.results_reject(ReviewParams(detection_id=args.reject), quiet)
        d = reviewed.detection
        print(f"{d.path}  #{d.detection_id} {d.review}" + (f" as {d.car_id}" if d.review == "confirmed" else "")
              + (f"; new reference {reviewed.reference.id}" if reviewed.reference else ""))
        return 0
    if args.command == "adapt":
        return _adapt(args, engine)
    exported = Exporter(engine).export(
        ExportParams(format=args.format, output=str(args.output) if args.output else None, overwrite=args.overwrite), quiet)
    skipped = f", skipped {len(exported.skipped)} existing" if exported.skipped else ""
    print(f"{exported.rows} detection(s); wrote {len(exported.files)} file(s){skipped}")
    for path in exported.files[:20]:
        print(f"  {path}")
    return 0


def _adapt(args: argparse.Namespace, engine: Engine) -> int:
    from sidecar.adaptation import Adaptation
    from sidecar.protocol.endpoint import CancelToken, RequestContext, quiet_context
    from sidecar.protocol.messages import AdaptParams

    adaptation = Adaptation(engine)
    if args.revert:
        print(f"the library now uses {adaptation.revert(None, quiet_context()).model}")
        return 0
    if not args.paths:
        print("liveryid adapt: give the event's photos or folders (or --revert)", file=sys.stderr)
        return 2
    params = AdaptParams(images=[str(p) for p in args.paths], rounds=args.rounds, iterations=args.iterations, max_photos=args.max_photos,
                         switch=not args.measure_only, whole_field=args.whole_field, progress=True)
    result = adaptation.adapt(params, RequestContext(0, CancelToken(), True, _progress_bar))
    print(f"{result.crops} vehicle crops from {result.photos} photos; last round: radius {result.radius:.2f}, "
          f"{result.clusters} clusters holding {result.clustered} crops")
    for name, check in (("before", result.before), ("after", result.after)):
        print(f"  {name:<6} ({check.references} references): rank-1 {check.rank1:.1%}, true match {check.true_match:.1%}, "
              f"false match {check.false_match:.1%}")
    print(f"  {result.unknowns.crops} crops of apparently unenrolled cars, {result.unknowns.matched} of them matched "
          "by the new model")
    print(f"{result.model}: {result.reason}")
    for failure in result.failed:
        print(f"  {failure.path}: {failure.message}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace, engine: Engine) -> int:
    from sidecar import evaluation
    from sidecar.identification import match_policy

    policy = match_policy(engine.embedder(), args.threshold, args.margin, 5)
    reports, look_alikes, detections = [], [], []
    seen: dict[Path, np.ndarray] = {}
    for manifest in args.manifests:
        samples = evaluation.read_manifest(manifest)
        detection = evaluation.detection_report(engine, samples, manifest.parent, seen)
        if detection is not None:
            detections.append(detection)
        if not (samples.references and samples.queries):
            continue  # photos for the detector only (those showing no vehicle)
        prepared = evaluation.prepare(engine, manifest, words=not args.no_words)
        reports += prepared.reports(policy, rerank=args.rerank)
        flagged, cars, rival = prepared.cars_with_look_alikes(policy.threshold)
        look_alikes.append(f"{prepared.name} {flagged} of {cars} (closest rival, median: {rival:.2f})")
        if args.sweep:
            print(evaluation.sweep(prepared, policy.margin))
    if reports:
        print(evaluation.table(reports, policy))
        print("(mean rank, max match: identify's decision, " + (
            "on appearance alone)" if args.no_words else "its ties broken by the livery's words as identify breaks them)"))
        identify_reports = [r for r in reports if r.aggregate == evaluation.IDENTIFY_SCORING]
        for line in (evaluation.rank1_misses_line(identify_reports), evaluation.false_matches_line(identify_reports)):
            if line:
                print(f"\n{line}")
        print(f"\nenrolled cars with a look-alike (another car's mean reference {policy.threshold:g} alike or more, "
              f"as enroll reports): {'; '.join(look_alikes)}")
    if detections:
        print("\ndetection on the sets' photos whose every vehicle carries a box and those showing none, at the default "
              "scores, as identify and tag run it (other boxes are false where the labels box every vehicle of a photo):")
        print(evaluation.detection_table(detections))
    return 0
