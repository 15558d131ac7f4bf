"""`liveryid eval`: matching quality on a labelled manifest, with the same
embedder, scoring and decision rule that `identify` uses.

A manifest (JSON) lists reference images per car and queries whose true car
is known, or null for a car that was never enrolled:

    {"name": "...",
     "references": [{"car": "07", "image": "a.jpg", "box": [x1, y1, x2, y2]}, ...],
     "queries":    [{"car": "07" | null, "image": "b.jpg", "box": [...] | null}, ...]}

    {..., "empty": ["pits.jpg", ...]}   (optional: photos showing no vehicle)

A missing box means the dominant detected vehicle (the whole image when none
is found), as `enroll` does. Where every sample of a photo carries a box,
the photo also measures the detector as `identify` and `tag` run it
(`detection_report`): the labelled vehicles it boxes, and its other boxes;
so do the photos showing no vehicle, where every box is false.
Similarities are exact (brute force), which the
HNSW index matches at these sizes. Read with the livery's words (`prepare`'s
`words`, the CLI's default), identify's scoring breaks appearance's ties with
them as identify does when it reads text (`sidecar/stages/words.py`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from sidecar.engine import Engine
from sidecar.identification import reference_box
from sidecar.protocol.messages import ImageRef
from sidecar.stages.decode import decode_image, load_image
from sidecar.stages.detect import box_iou
from sidecar.stages.embed import crop
from sidecar.stages.match import CarScore, MatchPolicy, Verdict, decide, unit_mean
from sidecar.stages.words import break_tie

log = logging.getLogger(__name__)
Aggregate = Literal["mean rank, max match", "max", "mean", "max+k-reciprocal"]
# How identify scores cars (sidecar/stages/match.py): ranked by the mean
# reference, matched on the best one. The others are printed beside it.
IDENTIFY_SCORING: Aggregate = "mean rank, max match"
# k-reciprocal re-ranking (Zhong et al., CVPR 2017) with the paper's settings.
RERANK_K1, RERANK_K2, RERANK_LAMBDA = 20, 6, 0.3


class Sample(msgspec.Struct, frozen=True):
    image: str
    car: str | None = None
    box: list[float] | None = None


class EvalManifest(msgspec.Struct, frozen=True):
    name: str
    references: list[Sample] = []
    queries: list[Sample] = []
    empty: list[str] = []
    """Photos showing no vehicle (the pits, the crowd, the podium): every box the detector reports there is false."""


def read_manifest(path: Path) -> EvalManifest:
    return msgspec.json.decode(path.read_bytes(), type=EvalManifest)


@dataclass(frozen=True)
class Report:
    name: str
    aggregate: Aggregate
    cars: int
    references: int
    known_queries: int
    unknown_queries: int
    rank1: float
    mean_ap: float
    true_match_rate: float
    wrong_match_rate: float
    """Known cars matched to another car."""
    false_match_rate: float
    """Unknown cars matched to an enrolled car."""
    ambiguous_rate: float
    false_matches_to: dict[str, int] = field(default_factory=dict)
    """The enrolled cars unknown ones were matched to, and how often, most often first: which
    enrolled cars the unknown ones look like."""
    rank1_misses: dict[tuple[str, str], int] = field(default_factory=dict)
    """(car, car ranked first instead) and how often, most often first: which cars the embedder confuses."""


def sample_box(engine: Engine, sample: Sample, base: Path) -> tuple[np.ndarray, list[float]]:
    """A sample's photo and the box it stands for: its box, else the dominant detected vehicle, as enroll takes it."""
    image = load_image(ImageRef(path=str(base / sample.image)), engine.limits)
    box, _, _ = reference_box(engine, image, sample.box, 0)
    return image, box


def sample_crop(engine: Engine, sample: Sample, base: Path) -> np.ndarray:
    """The crop a sample stands for (`sample_box`)."""
    return crop(*sample_box(engine, sample, base))


def embed_samples(engine: Engine, samples: list[Sample], base: Path,
                  words: bool = False) -> tuple[np.ndarray, list[frozenset[str]] | None]:
    """Each sample's vector and, when `words`, the livery's words read on its crop."""
    vectors, read = [], []
    for sample in samples:
        image, box = sample_box(engine, sample, base)
        vectors.append(engine.embedder()([(image, box)])[0])
        if words:
            read.append(engine.number_reader().read(crop(image, box), words=True).words)
    return np.stack(vectors), read if words else None


@dataclass(frozen=True)
class TieWords:
    """What identify breaks appearance's ties with: each query's words and each car's (its references')."""

    queries: list[frozenset[str]]
    cars: dict[str, set[str]]


def decisions(scores: CarSimilarities, policy: MatchPolicy, words: TieWords | None = None) -> list[Verdict]:
    """Each query's verdict as identify decides it: appearance's, its ties broken by the words when read."""
    verdicts = []
    for query in range(len(scores.ranking)):
        candidates = scores.candidates(query)
        verdict = decide(candidates, policy)
        if words is not None and words.queries[query]:
            verdict = break_tie(verdict, candidates, words.queries[query], words.cars, policy).verdict
        verdicts.append(verdict)
    return verdicts


def k_reciprocal_distance(similarity: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Jaccard distance between the k-reciprocal neighbourhoods of every pair
    of rows of a similarity matrix over one query and the references."""
    n = len(similarity)
    k1, k2 = min(k1, n - 1), min(k2, n)
    distance = 2.0 - 2.0 * similarity
    rank = np.argsort(distance, axis=1)
    weights = np.zeros((n, n), np.float32)
    for i in range(n):
        forward = rank[i, : k1 + 1]
        reciprocal = forward[np.any(rank[forward, : k1 + 1] == i, axis=1)]
        expanded = reciprocal
        half = max(1, int(round(k1 / 2)))
        for j in reciprocal:
            candidates = rank[j, : half + 1]
            candidates = candidates[np.any(rank[candidates, : half + 1] == j, axis=1)]
            if len(np.intersect1d(candidates, reciprocal)) > 2 / 3 * len(candidates):
                expanded = np.append(expanded, candidates)
        expanded = np.unique(expanded)
        w = np.exp(-distance[i, expanded])
        weights[i, expanded] = w / w.sum()
    if k2 > 1:  # local query expansion
        weights = np.stack([weights[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.stack([
        1.0 - np.minimum(weights[i], weights).sum(axis=1) / np.maximum(np.maximum(weights[i], weights).sum(axis=1), 1e-12)
        for i in range(n)
    ])
    return jaccard


def reranked_similarities(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(Q, R) similarities after k-reciprocal re-ranking of each query against the references alone
    (what identify could do: it sees one photo at a time, not the other queries)."""
    out = np.empty((len(queries), len(references)), np.float32)
    for row, query in enumerate(queries):
        features = np.vstack([query[None], references])
        similarity = features @ features.T
        jaccard = k_reciprocal_distance(similarity, RERANK_K1, RERANK_K2)[0, 1:]
        distance = (1 - RERANK_LAMBDA) * jaccard + RERANK_LAMBDA * (2.0 - 2.0 * similarity[0, 1:]) / 4.0
        out[row] = 1.0 - distance
    return out


def car_owners(ref_cars: list[str]) -> tuple[list[str], np.ndarray]:
    """(the cars, sorted; each reference's index into them)."""
    cars = sorted(set(ref_cars))
    return cars, np.array([cars.index(c) for c in ref_cars])


def best_per_car(similarities: np.ndarray, ref_cars: list[str]) -> tuple[list[str], np.ndarray]:
    """(cars, (Q, C) best similarity of each query to each car's references) from (Q, R) similarities."""
    cars, owner = car_owners(ref_cars)
    return cars, np.stack([similarities[:, owner == i].max(axis=1) for i in range(len(cars))], axis=1)


def mean_references(references: np.ndarray, ref_cars: list[str]) -> tuple[list[str], np.ndarray]:
    """(cars, (C, D) each car's mean reference, as identify's match stage takes it)."""
    cars, owner = car_owners(ref_cars)
    return cars, np.stack([unit_mean(references[owner == i]) for i in range(len(cars))])


@dataclass(frozen=True)
class CarSimilarities:
    """Each query's similarities to each car, (Q, C): `ranking` orders the
    cars (and the margin applies to it), `matching` is what the threshold
    applies to; one array for a scoring by one similarity."""

    cars: list[str]
    ranking: np.ndarray
    matching: np.ndarray
    rivals: np.ndarray | None = None
    """Identify's scoring, (Q, C): each car's similarity to its closest other enrolled car (-inf:
    none) as each query sees the library, which a match's mean similarity must reach (match.decide)."""

    def candidates(self, query: int) -> list[CarScore]:
        """One query's cars, ranked, as identify's match stage gives them to `decide`."""
        order = np.argsort(-self.ranking[query], kind="stable")
        rivals = None if self.rivals is None else self.rivals[query]
        return [CarScore(self.cars[j], float(self.matching[query, j]), float(self.ranking[query, j]),
                         None if rivals is None or rivals[j] == -np.inf else float(rivals[j]))
                for j in order]

    def of(self, queries: list[int]) -> CarSimilarities:
        return CarSimilarities(self.cars, self.ranking[queries], self.matching[queries],
                               None if self.rivals is None else self.rivals[queries])


def car_similarities(queries: np.ndarray, references: np.ndarray, ref_cars: list[str], aggregate: Aggregate) -> CarSimilarities:
    if aggregate == "max+k-reciprocal":
        cars, reranked = best_per_car(reranked_similarities(queries, references), ref_cars)
        return CarSimilarities(cars, reranked, reranked)
    cars, best = best_per_car(queries @ references.T, ref_cars)
    means = mean_references(references, ref_cars)[1]
    mean = queries @ means.T
    if aggregate == IDENTIFY_SCORING:
        return CarSimilarities(cars, mean, best, np.broadcast_to(rival_similarities(means), mean.shape))
    return CarSimilarities(cars, best if aggregate == "max" else mean, mean if aggregate == "mean" else best)


def rival_similarities(means: np.ndarray) -> np.ndarray:
    """(C,) each car's mean reference's similarity to the closest other car's, -inf for a lone car."""
    similarity = means @ means.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1) if len(means) > 1 else np.full(len(means), -np.inf)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = relevant[order]
    if not hits.any():
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def evaluate(name: str, scores: CarSimilarities, truths: list[str | None], policy: MatchPolicy,
             aggregate: Aggregate, references: int, words: TieWords | None = None) -> Report:
    """Rank-1 and the decisions as identify makes them (with `words`, their ties broken); mAP on appearance's ranking."""
    cars = scores.cars
    known = [i for i, t in enumerate(truths) if t is not None]
    unknown = [i for i, t in enumerate(truths) if t is None]
    verdicts = decisions(scores, policy, words)
    first = [v.candidates[0].car_id for v in verdicts]
    rank1 = np.mean([first[i] == truths[i] for i in known]) if known else 0.0
    rank1_misses = Counter((truths[i] or "", first[i]) for i in known if first[i] != truths[i])
    mean_ap = np.mean([average_precision(scores.ranking[i], np.array([c == truths[i] for c in cars]))
                       for i in known]) if known else 0.0
    true_match, wrong_match, false_match = match_rates(verdicts, truths)
    ambiguous = np.mean([v.decision == "ambiguous" for v in verdicts])
    false_matches_to = Counter(verdicts[i].car_id or "" for i in unknown if verdicts[i].decision == "match")
    return Report(name, aggregate, len(cars), references, len(known), len(unknown), float(rank1), float(mean_ap),
                  true_match, wrong_match, false_match, float(ambiguous),
                  dict(false_matches_to.most_common()), dict(rank1_misses.most_common()))


def match_rates(verdicts: list[Verdict], truths: list[str | None]) -> tuple[float, float, float]:
    """(true match, wrong match) among the known cars' verdicts and (false match) among the
    unknown ones' (truth None); 0.0 where there are none."""
    known = [(v, t) for v, t in zip(verdicts, truths) if t is not None]
    unknown = [v for v, t in zip(verdicts, truths) if t is None]
    return (float(np.mean([v.decision == "match" and v.car_id == t for v, t in known])) if known else 0.0,
            float(np.mean([v.decision == "match" and v.car_id != t for v, t in known])) if known else 0.0,
            float(np.mean([v.decision == "match" for v in unknown])) if unknown else 0.0)


def false_matches_line(reports: list[Report]) -> str | None:
    """The enrolled cars each set's unknown cars were matched to (None: no false match at all)."""
    return _counts_line("false matches by the enrolled car named", [(r.name, r.false_matches_to) for r in reports])


def rank1_misses_line(reports: list[Report], most: int = 5) -> str | None:
    """Each set's most frequent rank-1 misses, as `car as other n` (None: no miss at all)."""
    return _counts_line("rank-1 misses, most frequent first (car as the car ranked first)", [
        (r.name, {f"{car} as {other}": n for (car, other), n in list(r.rank1_misses.items())[:most]}) for r in reports])


def _counts_line(title: str, per_set: list[tuple[str, dict[str, int]]]) -> str | None:
    """`title: set key n, key n; set ...` for the sets with any count (None: none has)."""
    named = [f"{name} " + ", ".join(f"{key} {n}" for key, n in counts.items()) for name, counts in per_set if counts]
    return f"{title}: {'; '.join(named)}" if named else None


@dataclass(frozen=True)
class Prepared:
    """A manifest's embeddings, computed once, scored under any policy."""

    name: str
    references: np.ndarray
    reference_cars: list[str]
    queries: np.ndarray
    truths: list[str | None]
    reference_words: list[frozenset[str]] | None = None
    query_words: list[frozenset[str]] | None = None
    """The livery's words read on each crop; None: not read (appearance alone decides)."""

    def scores(self, aggregate: Aggregate) -> CarSimilarities:
        return car_similarities(self.queries, self.references, self.reference_cars, aggregate)

    def tie_words(self) -> TieWords | None:
        if self.reference_words is None or self.query_words is None:
            return None
        cars: dict[str, set[str]] = {}
        for car, words in zip(self.reference_cars, self.reference_words):
            cars.setdefault(car, set()).update(words)
        return TieWords(self.query_words, cars)

    def cars_with_look_alikes(self, threshold: float) -> tuple[int, int, float]:
        """(enrolled cars that enroll would name a look-alike for: another car's mean reference at least
        `threshold` alike, enrolled cars, the median similarity of a car to its closest rival)."""
        cars, means = mean_references(self.references, self.reference_cars)
        rivals = rival_similarities(means)
        return int((rivals >= threshold).sum()), len(cars), float(np.median(rivals))

    def reports(self, policy: MatchPolicy, rerank: bool = False) -> list[Report]:
        """Identify's scoring first (its ties broken by the words when read), then the best and the mean
        reference alone (and re-ranking), on appearance alone."""
        aggregates: list[Aggregate] = [IDENTIFY_SCORING, "max", "mean"] + (["max+k-reciprocal"] if rerank else [])
        return [
            evaluate(self.name, self.scores(aggregate), self.truths, policy, aggregate, len(self.reference_cars),
                     self.tie_words() if aggregate == IDENTIFY_SCORING else None)
            for aggregate in aggregates
        ]


def prepare(engine: Engine, manifest_path: Path, words: bool = False) -> Prepared:
    """A manifest's vectors and, when `words`, the livery's words on every crop."""
    manifest = read_manifest(manifest_path)
    base = manifest_path.parent
    references, reference_words = embed_samples(engine, manifest.references, base, words)
    queries, query_words = embed_samples(engine, manifest.queries, base, words)
    return Prepared(name=manifest.name, references=references, reference_cars=[r.car or "" for r in manifest.references],
                    queries=queries, truths=[q.car for q in manifest.queries], reference_words=reference_words,
                    query_words=query_words)


DETECTION_IOU = 0.5
"""A reported box this close to a labelled vehicle's finds it (IoU), as detection benchmarks count."""


@dataclass(frozen=True)
class DetectionReport:
    """The detector at each head's default score, as identify and tag run it, on a manifest's boxed photos."""

    name: str
    photos: int
    vehicles: int
    """Labelled vehicles in those photos (one per distinct box)."""
    found: int
    """Labelled vehicles a reported box finds (DETECTION_IOU)."""
    every: int
    """Photos with every labelled vehicle found."""
    other: int
    """Reported boxes beyond one per vehicle found: false where the labels box every vehicle of a photo, not
    where a background holds vehicles nobody labelled."""
    empty_photos: int
    empty_boxes: int
    """Boxes reported on the photos showing no vehicle (`EvalManifest.empty`): all false."""


def detection_report(engine: Engine, manifest: EvalManifest, base: Path, seen: dict[Path, np.ndarray]
                     ) -> DetectionReport | None:
    """The photos of a manifest (its images relative to `base`) whose every sample carries a box, and those showing
    no vehicle, run through the detector as `identify` does (decoded as for reading numbers, each head's default
    score); None when there are none. `seen`: the boxes already reported per photo, shared across manifests that
    list the same photos."""

    def reported(image: str) -> np.ndarray:
        path = base / image
        if path not in seen:
            decoded = decode_image(ImageRef(path=str(path)), engine.limits, engine.settings.decode_side)
            seen[path] = engine.detector()(decoded.pixels, None, engine.vehicle_classes(None)).boxes * decoded.scale
        return seen[path]

    labelled: dict[str, set[tuple[float, ...]]] = {}
    unlabelled = set()
    for sample in manifest.references + manifest.queries:
        if sample.box is None:
            unlabelled.add(sample.image)
        else:
            labelled.setdefault(sample.image, set()).add(tuple(sample.box))
    photos = {image: boxes for image, boxes in labelled.items() if image not in unlabelled}
    if not photos and not manifest.empty:
        return None
    found = every = other = 0
    for image, boxes in photos.items():
        boxed = reported(image)
        hits = (box_iou(np.asarray(sorted(boxes), np.float32), boxed) >= DETECTION_IOU).any(axis=1)
        found, every = found + int(hits.sum()), every + bool(hits.all())
        other += len(boxed) - int(hits.sum())
    return DetectionReport(manifest.name, len(photos), sum(len(b) for b in photos.values()), found, every, other,
                           len(manifest.empty), sum(len(reported(image)) for image in manifest.empty))


def detection_table(reports: list[DetectionReport]) -> str:
    lines = [
        "| set | photos | labelled vehicles | found (IoU 0.5) | photos with every vehicle found | other boxes / photo "
        "| photos without a vehicle | boxes / photo there |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        labelled = (f"{r.found / r.vehicles:.1%} | {r.every / r.photos:.1%} | {r.other / r.photos:.3f}" if r.photos
                    else "- | - | -")
        empty = f"{r.empty_boxes / r.empty_photos:.3f}" if r.empty_photos else "-"
        lines.append(f"| {r.name} | {r.photos} | {r.vehicles} | {labelled} | {r.empty_photos} | {empty} |")
    return "\n".join(lines)


def sweep(prepared: Prepared, margin: float) -> str:
    """True and false match rates over thresholds (identify's scoring): the data behind the default threshold."""
    scores = prepared.scores(IDENTIFY_SCORING)
    lines = [f"{prepared.name}: threshold sweep, margin {margin}", "| threshold | true match | wrong match | false match (unknown) |",
             "|---|---|---|---|"]
    for threshold in np.arange(0.40, 0.96, 0.025):
        r = evaluate(prepared.name, scores, prepared.truths, MatchPolicy(float(threshold), margin, 5), IDENTIFY_SCORING, 0)
        lines.append(f"| {threshold:.3f} | {r.true_match_rate:.1%} | {r.wrong_match_rate:.1%} | {r.false_match_rate:.1%} |")
    return "\n".join(lines)


FALSE_MATCH_LIMIT = 0.01


def lowest_safe_threshold(prepared: list[Prepared], aggregate: Aggregate, margin: float, thresholds: np.ndarray) -> float | None:
    """The lowest threshold keeping false matches at or under FALSE_MATCH_LIMIT
    on every set: the rule each embedder's default threshold follows."""
    scored = [(p.scores(aggregate), p.truths) for p in prepared]
    for threshold in thresholds:
        policy = MatchPolicy(float(threshold), margin, 5)
        if all(evaluate("", scores, truths, policy, aggregate, 0).false_match_rate <= FALSE_MATCH_LIMIT
               for scores, truths in scored):
            return float(threshold)
    return None


def table(reports: list[Report], policy: MatchPolicy) -> str:
    lines = [
        f"threshold {policy.threshold}, margin {policy.margin}",
        "| set | scoring | cars | refs | queries known/unknown | rank-1 | mAP | true match | wrong match | false match (unknown cars) | ambiguous |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        # Re-ranked scores live on another scale: the threshold does not apply to them.
        open_set = (
            "- | - | - | -" if r.aggregate == "max+k-reciprocal" else
            f"{r.true_match_rate:.1%} | {r.wrong_match_rate:.1%} | {r.false_match_rate:.1%} | {r.ambiguous_rate:.1%}"
        )
        lines.append(
            f"| {r.name} | {r.aggregate} | {r.cars} | {r.references} | {r.known_queries}/{r.unknown_queries} | {r.rank1:.1%} | "
            f"{r.mean_ap:.1%} | {open_set} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class ReferenceCheck:
    """How well a model tells the enrolled cars apart using nothing but their
    references: what `adapt` compares before switching models."""

    queries: int
    rank1: float
    """Each reference of a car with several, matched against all the others."""
    true_match_rate: float
    false_match_rate: float
    """Each reference matched against the other cars only (its own car left
    out, as if never enrolled)."""


def reference_check(vectors: np.ndarray, cars: list[str], policy: MatchPolicy) -> ReferenceCheck:
    """Scored as identify scores (ranked by mean reference, matched on the
    closest one), each reference left out of its own car's references."""
    names, owner = car_owners(cars)
    rows = np.arange(len(cars))
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)  # a reference is never its own match
    _, best = best_per_car(similarity, cars)
    # Cosine to each car's mean reference is v.S / |S| for the sum S of its
    # references; for the reference's own car, S less the reference itself.
    sums = np.stack([vectors[owner == c].sum(axis=0) for c in range(len(names))])
    dots = vectors @ sums.T
    means = dots / np.maximum(np.linalg.norm(sums, axis=1), 1e-12)[None, :]
    squared = (vectors * vectors).sum(axis=1)
    own_dot = dots[rows, owner] - squared
    own_norm = np.sqrt(np.maximum((sums[owner] * sums[owner]).sum(axis=1) - 2 * dots[rows, owner] + squared, 0.0))
    alone = np.bincount(owner, minlength=len(names))[owner] == 1
    means[rows, owner] = np.where(alone, -np.inf, own_dot / np.maximum(own_norm, 1e-12))
    several = [i for i in rows.tolist() if not alone[i]]
    # The cars' rivals as each check sees the library: the reference's own car without it (known), or
    # without the whole car (unknown). For any other car: its closest other car unless that is the one
    # changed (then its second closest), or the changed car itself if now closer.
    unit_sums = sums / np.maximum(np.linalg.norm(sums, axis=1), 1e-12)[:, None]
    between = np.hstack([unit_sums @ unit_sums.T, np.full((len(names), 2), -np.inf)])  # pads cars with < 2 others
    between[np.arange(len(names)), np.arange(len(names))] = -np.inf
    nearest = np.argsort(-between, axis=1, kind="stable")[:, :2]
    closest = np.take_along_axis(between, nearest, axis=1)
    without_own = np.where(nearest[None, :, 0] == owner[:, None], closest[None, :, 1], closest[None, :, 0])
    own_mean = (sums[owner] - vectors) / np.maximum(own_norm, 1e-12)[:, None]
    left_out = own_mean @ unit_sums.T  # (N, C): each car's mean against the own car without the reference
    left_out[rows, owner] = -np.inf
    known_rivals = np.maximum(without_own, left_out)
    known_rivals[rows, owner] = left_out.max(axis=1)
    known = evaluate("references", CarSimilarities(names, means[several], best[several], known_rivals[several]),
                     [cars[i] for i in several], policy, IDENTIFY_SCORING, len(cars))
    means[rows, owner], best[rows, owner] = -np.inf, -np.inf
    unknown = evaluate("references", CarSimilarities(names, means, best, without_own), [None] * len(cars), policy,
                       IDENTIFY_SCORING, len(cars))
    return ReferenceCheck(len(several), known.rank1, known.true_match_rate, unknown.false_match_rate)


@dataclass(frozen=True)
class UnknownCheck:
    """What the reference check cannot see: an event's crops that look like
    cars nobody enrolled, and how many of them a new model matches to an
    enrolled car. A car never enrolled but in the photos is clustered and
    trained on like any other; among cars of one shape it can be learnt as
    an enrolled look-alike, while the references stay as well apart as
    before (bench.adapt's open F1 set)."""

    crops: int
    """Crops in clusters none of whose crops the current model matches."""
    matched: int
    """Of those, crops the new model matches."""


def matched(queries: np.ndarray, references: np.ndarray, cars: list[str], policy: MatchPolicy) -> np.ndarray:
    """(N,) whether identify matches each query to an enrolled car, on appearance alone."""
    verdicts = decisions(car_similarities(queries, references, cars, IDENTIFY_SCORING), policy)
    return np.array([v.decision == "match" for v in verdicts], dtype=bool)


def unknown_check(clusters: np.ndarray, matched_before: np.ndarray, matched_after: np.ndarray) -> UnknownCheck:
    """`clusters`: each crop's cluster under the current model (-1: none).
    A cluster is taken for an unenrolled car when the current model matches
    none of its crops; crops in no cluster are left out, as a lone crop says
    nothing about which car it is."""
    known = np.unique(clusters[matched_before & (clusters >= 0)])
    unknown = (clusters >= 0) & ~np.isin(clusters, known)
    return UnknownCheck(int(unknown.sum()), int((unknown & matched_after).sum()))
