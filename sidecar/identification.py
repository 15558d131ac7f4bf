"""The library methods: enroll cars, identify the vehicles of a photo, tag a
whole event, and review the results. Composes the stages (decode, detect,
embed, match, read number, fuse) with the library (store, index)."""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from sidecar.engine import Engine, Matcher
from sidecar.errors import InvalidParams, NotFound, RpcError
from sidecar.inference.turns import MODEL_TURNS, background, interactive
from sidecar.library.store import CarRow, DetectionRow, NewDetection, ReferenceEntry, ReferenceRow
from sidecar.protocol.endpoint import RequestContext
from sidecar.protocol.messages import (
    AppearanceEvidence, Candidate, Car, CarChanges, CarDetail, CarIdParams, CarsListResult, CarsMergeParams,
    CarUpdateParams, EnrollParams, EnrollResult, EnrollWarning, Evidence, IdentifiedVehicle, IdentifyParams,
    IdentifyResult, ImageRef, LookAlike, MatchOptions, NumberEvidence, ReadNumbers, Reference, ReferenceIdParams,
    Removed, ResultDetection, ResultsQueryParams, ResultsQueryResult, ReviewParams, ReviewResult, SequenceEvidence,
    TagFailure, TagParams, TagResult,
)
from sidecar.stages.decode import (
    IMAGE_SUFFIXES, Decoded, decode_image, decode_photo, detection_source, load_image, read_file, source_of,
)
from sidecar.stages.capture import read_capture
from sidecar.stages.detect import Detections, detect_tiled
from sidecar.stages.embed import Embedder, crop
from sidecar.stages.fuse import Fused, fuse, normalise_number, number_wanted, numbers_index
from sidecar.stages.match import CarScore, MatchPolicy, car_scores, decide
from sidecar.stages.number import VehicleText
from sidecar.stages.raw import RAW_SUFFIXES
from sidecar.stages.sequence import Shot, Sighting, propagate
from sidecar.stages.words import break_tie, worth_reading
from sidecar.stopwatch import Stopwatch

log = logging.getLogger(__name__)

# A second vehicle this close to the dominant one (area x score) makes the
# reference photo's subject uncertain.
SEVERAL_VEHICLES_RATIO = 0.5
ENROLL_MIN_SCORE = 0.2

@dataclass(frozen=True)
class Loaded:
    """A photo of a tag run, read and decoded ahead of the models."""

    path: Path
    data: bytes = b""
    content_hash: str = ""
    decoded: Decoded | None = None
    failure: TagFailure | None = None


# A tagged detection as a burst may change it: decision, evidence, appearance's score per car.
Stored = tuple[str, dict[str, Any], dict[str, float | None]]


class Identification:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- cars ----------------------------------------------------------------

    @interactive()
    def enroll(self, params: EnrollParams, context: RequestContext) -> EnrollResult:
        library = self.engine.library()
        if params.boxes is not None and len(params.boxes) != len(params.images):
            raise InvalidParams("`boxes` needs one entry per image", {"field": "params.boxes"})
        entries, warnings = [], []
        matcher = self.engine.matcher()
        embedder = matcher.embedder
        reader = self.engine.number_reader()
        for index, image_ref in enumerate(params.images):
            context.progress(index, len(params.images), "reference")
            image = load_image(image_ref, self.engine.limits)
            given = params.boxes[index] if params.boxes is not None else None
            box, quality, warning = reference_box(self.engine, image, given, index)
            if warning is not None:
                warnings.append(warning)
            entries.append(ReferenceEntry(source_of(image_ref), box, embedder([(image, box)])[0], quality,
                                          reader.read(crop(image, box), words=True).words))
        context.progress(len(params.images), len(params.images), "store")
        car_id = params.car.id if params.car.id is not msgspec.UNSET else None
        car, references = library.enroll(car_id, _given(params.car), entries, embedder.key)
        alike = matcher.references.look_alikes(car.id, embedder.spec.match_threshold)
        labels = self._labels() if alike else {}
        look_alikes = [LookAlike(car_id=other, label=labels.get(other, ""), similarity=round(similarity, 4))
                       for other, similarity in alike]
        return EnrollResult(car=car_message(car), references=[_reference(r) for r in references], warnings=warnings,
                            look_alikes=look_alikes)

    def cars_update(self, params: CarUpdateParams, context: RequestContext) -> Car:
        return car_message(self.engine.library().update_car(params.id, _given(params)))

    def cars_remove(self, params: CarIdParams, context: RequestContext) -> Removed:
        self.engine.library().remove_car(params.id)
        return Removed(removed=params.id)

    def cars_merge(self, params: CarsMergeParams, context: RequestContext) -> Car:
        return car_message(self.engine.library().merge(params.into, params.sources))

    def references_remove(self, params: ReferenceIdParams, context: RequestContext) -> Removed:
        return Removed(removed=self.engine.library().remove_reference(params.id))

    def cars_list(self, params: None, context: RequestContext) -> CarsListResult:
        return CarsListResult(cars=[car_message(c) for c in self.engine.library().store.cars()])

    def cars_get(self, params: CarIdParams, context: RequestContext) -> CarDetail:
        library = self.engine.library()
        car = library.require_car(params.id)
        return CarDetail(car=car_message(car), references=[_reference(r) for r in library.store.references(car.id)])

    # --- identification --------------------------------------------------------

    def _identify_image(self, image: np.ndarray, options: MatchOptions, numbers: dict[str, str | None],
                        matcher: Matcher, watch: Stopwatch) -> tuple[Detections, np.ndarray, list[Fused]]:
        """Detect, embed, match and (when asked) read and fuse the numbers;
        `numbers`: car id -> racing number, of every enrolled car."""
        with watch.stage("detect"):
            found = detect_tiled(self.engine.detector(), image, options.min_score, self.engine.vehicle_classes(None),
                                 options.tiles)
        with watch.stage("embed"):
            vectors = matcher.embedder([(image, box) for box in found.boxes])
        with watch.stage("match"):
            # Enough neighbours that top_k distinct cars survive when each has several references.
            references = matcher.references
            reference_ids, similarities = references.index.search(vectors, count=max(50, 10 * options.top_k))
            policy = match_policy(matcher.embedder, options.threshold, options.margin, options.top_k)
            ranked = [car_scores(vector, ids, sims, references.car_of, references.mean_reference, references.rival)
                      for vector, ids, sims in zip(vectors, reference_ids, similarities)]
            verdicts = [decide(candidates, policy) for candidates in ranked]
        with watch.stage("number"):
            reader = self.engine.number_reader() if options.read_numbers else None
            car_words = self.engine.library().car_words() if reader else {}
            texts = []
            for i, (candidates, verdict) in enumerate(zip(ranked, verdicts)):
                tie_words = reader is not None and worth_reading(candidates, policy, car_words)
                texts.append(reader.on_vehicle(image, found.reported(i)[0], tie_words)
                             if reader and (tie_words or number_wanted(options.read_numbers, verdict))
                             else VehicleText([], frozenset()))
        cars_by_number = numbers_index(numbers)
        fused = [fuse(verdict, text.numbers, numbers, cars_by_number, policy,
                      break_tie(verdict, candidates, text.words, car_words, policy) if text.words else None)
                 for candidates, verdict, text in zip(ranked, verdicts, texts)]
        return found, vectors, fused

    @interactive()
    def identify(self, params: IdentifyParams, context: RequestContext) -> IdentifyResult:
        self.engine.library()  # fail before decoding when no library is open
        context.progress(0, 2, "decode")
        decoded = decode_image(params.image, self.engine.limits, self._decode_side(params.read_numbers))
        context.progress(1, 2, "identify")
        cars = self.engine.library().store.cars()
        numbers = {car.id: car.number for car in cars}
        found, _, fused = self._identify_image(decoded.pixels, params, numbers, self.engine.matcher(), Stopwatch())
        labels = {car.id: car.label for car in cars}
        width, height = decoded.size
        return IdentifyResult(
            vehicles=[self._vehicle(found, i, decided, labels, decoded.scale) for i, decided in enumerate(fused)],
            width=width, height=height, sensor_scale=decoded.sensor_scale,
        )

    def _labels(self) -> dict[str, str]:
        return {car.id: car.label for car in self.engine.library().store.cars()}

    def _vehicle(self, found: Detections, i: int, decided: Fused, labels: dict[str, str], scale: float) -> IdentifiedVehicle:
        box, score = found.reported(i)
        verdict = decided.verdict
        return IdentifiedVehicle(
            box=scaled(box, scale),
            detector_score=score,
            label=self.engine.detector().labels[int(found.class_ids[i])],
            decision=verdict.decision, car_id=verdict.car_id, score=verdict.score,
            candidates=[_candidate(c, labels) for c in verdict.candidates],
            evidence=evidence(decided, scale),
        )

    # --- tagging an event --------------------------------------------------------

    @background()  # pauses for identify and the other interactive requests (inference/turns.py)
    def tag(self, params: TagParams, context: RequestContext) -> TagResult:
        library = self.engine.library()
        photos = sorted(set(expand_photos(params.images, params.recursive)))
        # One embedder and index for the whole run, whatever `embedder.use` does meanwhile.
        matcher = self.engine.matcher()
        models = self.engine.models_key(params.read_numbers, matcher.embedder, params.min_score, params.tiles,
                                        params.threshold, params.margin)
        numbers = {car.id: car.number for car in library.store.cars()}
        counts = {"match": 0, "ambiguous": 0, "unknown": 0}
        tagged = skipped = replaced = numbers_read = 0
        failed: list[TagFailure] = []
        shots: list[Shot] = []
        # What a burst may change, by detection id: decision, evidence and appearance's scores as stored.
        stored: dict[int, Stored] = {}
        watch = Stopwatch()
        started = time.monotonic()
        load = functools.partial(self._load, rescan=params.rescan, models=models,
                                 decode_side=self._decode_side(params.read_numbers), watch=watch)
        for done, loaded in enumerate(self._load_ahead(photos, load)):
            rate = done / max(time.monotonic() - started, 1e-6) if done else None
            context.progress(done, len(photos), "tagging", rate)
            if loaded.failure is not None:
                failed.append(loaded.failure)
                continue
            if loaded.decoded is None:
                skipped += 1
                continue
            path, decoded = loaded.path, loaded.decoded
            try:
                found, vectors, fused = self._identify_image(decoded.pixels, params, numbers, matcher, watch)
            except RpcError as exc:
                failed.append(TagFailure(path=str(path), code=exc.code, message=exc.message))
                continue
            detections = []
            for i, decided in enumerate(fused):
                verdict = decided.verdict
                counts[verdict.decision] += 1
                numbers_read += decided.number is not None
                box, score = found.reported(i)
                detections.append(NewDetection(
                    box=scaled(box, decoded.scale), detector_score=score, label=self.engine.detector().labels[int(found.class_ids[i])],
                    decision=verdict.decision, car_id=verdict.car_id, score=verdict.score,
                    candidates=[asdict(c) for c in verdict.candidates],
                    embedding=vectors[i], number=decided.number.text if decided.number else None,
                    evidence=msgspec.to_builtins(evidence(decided, decoded.scale)),
                ))
            capture = read_capture(loaded.data)
            with watch.stage("store"):
                saved = library.store.save_photo(str(path), loaded.content_hash, models, *decoded.size,
                                                 decoded.sensor_scale, detections, capture.camera, capture.time)
            ids = saved.detection_ids
            tagged += 1
            replaced += saved.replaced
            if params.sequence_gap_s > 0 and capture.camera is not None and capture.time is not None:
                shots.append(Shot(capture.camera, capture.time, [
                    Sighting(key, d.decision, d.car_id, [c["car_id"] for c in d.candidates], bool(f.conflict))
                    for key, d, f in zip(ids, detections, fused)]))
                stored.update({key: (d.decision, d.evidence or {}, {c["car_id"]: c["score"] for c in d.candidates})
                               for key, d in zip(ids, detections)})
        with watch.stage("bursts"):
            by_sequence = self._decide_bursts(shots, stored, params.sequence_gap_s, counts, matcher.embedder.spec.match_threshold)
        elapsed = time.monotonic() - started
        context.progress(len(photos), len(photos), "done", len(photos) / max(elapsed, 1e-6))
        return TagResult(
            total=len(photos), tagged=tagged, skipped=skipped, replaced=replaced, failed=failed,
            matched=counts["match"], ambiguous=counts["ambiguous"], unknown=counts["unknown"], numbers=numbers_read,
            by_sequence=by_sequence, seconds=round(elapsed, 3), stage_seconds=watch.rounded(),
        )

    def _load_ahead(self, photos: list[Path], load: Callable[[Path], Loaded]) -> Iterator[Loaded]:
        """The photos `load`ed in order, `tag_prefetch` of them ahead in worker
        threads; at most that many decoded photos wait in memory."""
        ahead = self.engine.settings.tag_prefetch
        if ahead <= 0:
            yield from map(load, photos)
            return
        with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="decode") as pool:
            pending: deque[Future[Loaded]] = deque()
            queued = iter(photos)
            for path in itertools.islice(queued, ahead):
                pending.append(pool.submit(load, path))
            while pending:
                loaded = pending.popleft().result()
                for path in itertools.islice(queued, 1):
                    pending.append(pool.submit(load, path))
                yield loaded

    def _load(self, path: Path, rescan: bool, models: str, decode_side: int, watch: Stopwatch) -> Loaded:
        """One photo ready to identify; without `decoded` when already tagged (skipped) or unreadable (`failure`)."""
        try:
            with watch.stage("read"):
                data = read_file(str(path), self.engine.limits)
                content_hash = hashlib.sha256(data).hexdigest()
            if not rescan and self.engine.library().store.photo_done(content_hash, models):
                return Loaded(path)
            MODEL_TURNS.pause_for_interactive()
            with watch.stage("decode"):
                decoded = decode_photo(data, str(path), self.engine.limits, decode_side)
            return Loaded(path, data, content_hash, decoded)
        except RpcError as exc:
            return Loaded(path, failure=TagFailure(path=str(path), code=exc.code, message=exc.message))

    def _decode_side(self, read_numbers: ReadNumbers) -> int:
        """How small a JPEG may be decoded: the number reader needs more pixels than detection and embedding."""
        settings = self.engine.settings
        return settings.decode_side if read_numbers else settings.decode_side_without_numbers

    def _decide_bursts(self, shots: list[Shot], stored: dict[int, Stored], max_gap_s: float, counts: dict[str, int],
                       link: float) -> int:
        """Name the vehicles of the run's bursts that their burst's confident
        frames name (sidecar/stages/sequence.py); returns how many."""
        store = self.engine.library().store
        decisions = []
        for named in propagate(shots, max_gap_s, link, store.detection_vectors):
            decision, evidence, scores = stored[named.key]
            counts[decision] -= 1
            counts["match"] += 1
            sequence = SequenceEvidence(car_id=named.car_id, frames=named.frames, confident=named.confident)
            decisions.append((named.key, named.car_id, scores.get(named.car_id),
                              {**evidence, "decided_by": ["sequence"], "sequence": msgspec.to_builtins(sequence)}))
        store.match_detections(decisions)
        return len(decisions)

    # --- results and review --------------------------------------------------------

    def results_query(self, params: ResultsQueryParams, context: RequestContext) -> ResultsQueryResult:
        rows, total = self.engine.library().store.query_detections(
            params.car_id, None if params.number is None else normalise_number(params.number), params.decision,
            params.min_score, params.review, params.limit, params.offset)
        labels = self._labels()
        return ResultsQueryResult(detections=[_result(r, labels) for r in rows], total=total)

    def results_confirm(self, params: ReviewParams, context: RequestContext) -> ReviewResult:
        library = self.engine.library()
        row, embedding, models = self._detection(params.detection_id)
        car_id = params.car_id or row.car_id
        if car_id is None:
            raise InvalidParams("this detection matched no car: say which car it is", {"field": "params.car_id"})
        library.require_car(car_id)
        library.store.review(row.id, "confirmed", car_id)
        reference = None
        if params.add_as_reference:
            source = detection_source(row.path, row.id)
            embedder = self.engine.matcher().embedder
            # Read again for its words, and to embed it again if tagged before the library changed embedder.
            image = self.engine.reference_image(source)
            if f"+{embedder.key}@" not in models:
                if image is None:
                    raise InvalidParams(f"{row.path} cannot be read again to embed this detection with {embedder.key}",
                                        {"field": "params.add_as_reference"})
                embedding = embedder([(image, row.box)])[0]
            words = None if image is None else self.engine.number_reader().read(crop(image, row.box), words=True).words
            _, (added,) = library.enroll(
                car_id, {}, [ReferenceEntry(source, row.box, embedding, row.detector_score, words)], embedder.key)
            reference = _reference(added)
        confirmed = self._detection(row.id)[0]
        return ReviewResult(detection=_result(confirmed, self._labels()), reference=reference)

    def results_reject(self, params: ReviewParams, context: RequestContext) -> ReviewResult:
        row = self._detection(params.detection_id)[0]
        self.engine.library().store.review(row.id, "rejected", None)
        rejected = self._detection(row.id)[0]
        return ReviewResult(detection=_result(rejected, self._labels()))

    def _detection(self, detection_id: int) -> tuple[DetectionRow, np.ndarray, str]:
        found = self.engine.library().store.detection(detection_id)
        if found is None:
            raise NotFound(f"no detection {detection_id}", {"detection": detection_id})
        return found

    def handlers(self) -> dict[str, Callable[[Any, RequestContext], Any]]:
        return {
            "enroll": self.enroll, "cars.update": self.cars_update, "cars.remove": self.cars_remove,
            "cars.merge": self.cars_merge, "references.remove": self.references_remove, "cars.list": self.cars_list,
            "cars.get": self.cars_get, "identify": self.identify, "tag": self.tag, "results.query": self.results_query,
            "results.confirm": self.results_confirm, "results.reject": self.results_reject,
        }


def match_policy(embedder: Embedder, threshold: float | None, margin: float | None, top_k: int) -> MatchPolicy:
    """The caller's threshold and margin, else the embedder's calibrated
    ones: most event photos show cars nobody enrolled, so a false match must be
    rare (the manifest's values keep it near 1% on the real dev sets)."""
    spec = embedder.spec
    return MatchPolicy(
        threshold=spec.match_threshold if threshold is None else threshold,
        margin=spec.match_margin if margin is None else margin,
        top_k=top_k,
    )


def reference_box(engine: Engine, image: np.ndarray, given: list[float] | None, index: int) -> tuple[list[float], float, EnrollWarning | None]:
    """The box a reference photo stands for: the given one, else the dominant
    vehicle (largest area x score), else the whole image; with a warning when
    the choice is uncertain. Returns (box, quality, warning)."""
    height, width = image.shape[:2]
    if given is not None:
        return given, 1.0, None
    found = engine.detector()(image, ENROLL_MIN_SCORE, engine.vehicle_classes(None))
    if len(found) == 0:
        whole = [0.0, 0.0, float(width), float(height)]
        return whole, 0.0, EnrollWarning(
            image=index, problem="no_vehicle", message="no vehicle found: the whole image is the reference")
    weight = found.scores * (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
    order = np.argsort(-weight)
    best, best_score = found.reported(int(order[0]))
    rivals = [i for i in order[1:] if weight[i] >= SEVERAL_VEHICLES_RATIO * weight[order[0]]]
    warning = None
    if rivals:
        warning = EnrollWarning(
            image=index, problem="several_vehicles",
            message=f"{len(rivals) + 1} vehicles of similar size: the largest, most certain one is the reference",
            boxes=[found.reported(int(i))[0] for i in (order[0], *rivals)],
        )
    return best, best_score, warning


def expand_photos(paths: list[str], recursive: bool) -> Iterator[Path]:
    """The photos of files and folders. A RAW shot beside a JPEG of the same
    name is the same picture: the JPEG is tagged (the XMP sidecar, named
    after the stem, serves both)."""
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            yield path  # a missing file is reported per photo, not for the whole run
            continue
        walker = path.rglob("*") if recursive else path.glob("*")
        photos = [p for p in walker if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        developed = {p.with_suffix("") for p in photos if p.suffix.lower() not in RAW_SUFFIXES}
        yield from (p for p in photos if p.suffix.lower() not in RAW_SUFFIXES or p.with_suffix("") not in developed)


def scaled(box: list[float], scale: float) -> list[float]:
    """A box found on a photo decoded smaller, in the photo's pixels."""
    return box if scale == 1.0 else [round(v * scale, 1) for v in box]


def evidence(decided: Fused, scale: float) -> Evidence:
    """Why a vehicle got its decision; `scale`: photo pixels per pixel of the image it was found on."""
    appearance = decided.appearance
    reading = decided.number
    return Evidence(
        decided_by=list(decided.decided_by),
        appearance=AppearanceEvidence(decision=appearance.decision, car_id=appearance.car_id, score=appearance.score),
        number=None if reading is None else NumberEvidence(
            text=reading.text, confidence=reading.confidence, box=scaled(reading.box, scale), car_ids=decided.number_cars),
        conflict=decided.conflict,
        words=decided.words,
    )


def _given(changes: CarChanges) -> dict[str, Any]:
    """The car fields a request sets (UNSET ones stay as they are)."""
    return {f: getattr(changes, f) for f in CarChanges.__struct_fields__ if getattr(changes, f) is not msgspec.UNSET}


def car_message(row: CarRow) -> Car:
    return Car(id=row.id, label=row.label, number=row.number, team=row.team, driver=row.driver, meta=row.meta,
               references=row.references)


def _reference(row: ReferenceRow) -> Reference:
    return Reference(id=row.id, car_id=row.car_id, source=row.source, box=row.box, quality=row.quality,
                     added_at=row.added_at, words=row.words)


def _candidate(scored: CarScore, labels: dict[str, str]) -> Candidate:
    """A scored car as the protocol reports it, named by its label."""
    return Candidate(car_id=scored.car_id, label=labels.get(scored.car_id, ""), score=scored.score,
                     mean_score=scored.mean_score, rival_score=scored.rival_score)


def _result(row: DetectionRow, labels: dict[str, str]) -> ResultDetection:
    return ResultDetection(
        detection_id=row.id, photo_id=row.photo_id, path=row.path, box=row.box, detector_score=row.detector_score,
        label=row.label, decision=row.decision, car_id=row.car_id, score=row.score,  # type: ignore[arg-type]
        # Rows tagged before a CarScore field existed lack it: the field's default (None) stands in.
        candidates=[_candidate(CarScore(**c), labels) for c in row.candidates],
        review=row.review,  # type: ignore[arg-type]
        sensor_scale=row.sensor_scale,
        evidence=None if row.evidence is None else msgspec.convert(row.evidence, Evidence),
    )


