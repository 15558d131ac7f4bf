"""Match stage: from a vehicle's nearest references to per-car scores and an
open-set decision.

Two similarities per car. Its mean reference (the normalised mean of its
references' vectors) keeps what all its views share, the livery, and none
of one photo's pose or background: candidates are ranked by it, and a match
must lead the runner-up on it by the margin. Its best reference follows
the view (a vehicle seen from one side is closest to the reference taken
from that side): a match needs it at or above the threshold, so the open
set is guarded as by the best reference alone. `liveryid eval` measures
this against each similarity alone: ranking by the mean lifts the F1 game
teams, matching on the best keeps the real cars' true matches, the rally
livery's most of all (README, "Scoring").

The decision is `match` only when the first car clears the threshold and
leads the runner-up by the margin; `ambiguous` when it clears the
threshold too close to another; `unknown` otherwise, which is the normal
outcome for the many cars at an event that nobody enrolled.

One more condition where enrolled cars look alike (one make and shape,
liveries alike): the vehicle must resemble the first car's mean reference
at least as much as that car's closest enrolled rival does. A car of
that shape, enrolled or not, can clear the threshold against several of
them; this asks that it look more like the car than the car's twin does. It
never binds where the enrolled cars differ (road cars: their rivals are
far below the threshold), so it costs nothing there, and it needs no
setting of its own (README, "Race cars of one class")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Decision = Literal["match", "ambiguous", "unknown"]


@dataclass(frozen=True)
class MatchPolicy:
    threshold: float
    margin: float
    top_k: int


@dataclass(frozen=True)
class CarScore:
    car_id: str
    score: float | None
    """Similarity of the car's closest reference, which the threshold applies
    to; None for a car that only its racing number names (the fuse stage)."""
    mean_score: float | None = None
    """Similarity of the car's mean reference, which ranks the candidates;
    None as `score`."""
    rival_score: float | None = None
    """Similarity of the car's mean reference to its closest other enrolled
    car's: a match needs `mean_score` at least this. None: no other car."""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    car_id: str | None
    score: float | None
    candidates: list[CarScore]


def unit_mean(vectors: np.ndarray) -> np.ndarray:
    """A car's mean reference: the normalised mean of its (N, D) reference vectors."""
    mean = vectors.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def car_scores(query: np.ndarray, reference_ids: np.ndarray, similarities: np.ndarray,
               car_of: Callable[[int], str | None], mean_reference: Callable[[str], np.ndarray | None],
               rival: Callable[[str], float | None]) -> list[CarScore]:
    """Per-car scores, ranked by mean reference, from one query's vector and
    nearest references; `mean_reference(car)` is the car's unit mean
    reference, `rival(car)` its similarity to the closest other car's. A
    reference or car removed since the search (None) is left out."""
    best: dict[str, float] = {}
    for ref, similarity in zip(reference_ids.tolist(), similarities.tolist()):
        if similarity == -np.inf:  # a padding slot: the index found fewer neighbours
            continue
        car = car_of(int(ref))
        if car is None:
            continue
        if similarity > best.get(car, -np.inf):
            best[car] = similarity
    means = {car: float(mean @ query) for car in best if (mean := mean_reference(car)) is not None}
    ranked = sorted(means, key=lambda car: -means[car])
    return [CarScore(car, round(best[car], 4), round(means[car], 4), None if (r := rival(car)) is None else round(r, 4))
            for car in ranked]


def ranking(candidate: CarScore) -> float:
    """What orders the candidates and the margin applies to: the mean reference's similarity."""
    value = candidate.mean_score if candidate.mean_score is not None else candidate.score
    return -np.inf if value is None else value


def decide(candidates: list[CarScore], policy: MatchPolicy) -> Verdict:
    """Open-set decision on appearance candidates, ranked first to last."""
    shown = candidates[: policy.top_k]
    first = candidates[0] if candidates else None
    if first is None or first.score is None or first.score < policy.threshold:
        return Verdict("unknown", None, None, shown)
    runner_up = ranking(candidates[1]) if len(candidates) > 1 else -1.0
    if ranking(first) - runner_up < policy.margin or _less_alike_than_its_rival(first):
        return Verdict("ambiguous", None, first.score, shown)
    return Verdict("match", first.car_id, first.score, shown)


def _less_alike_than_its_rival(candidate: CarScore) -> bool:
    """The vehicle resembles the car less than the car's closest enrolled rival does."""
    return candidate.rival_score is not None and candidate.mean_score is not None and (
        candidate.mean_score < candidate.rival_score)
