"""Match stage: from a vehicle's nearest references to per-car scores and an
open-set decision.

A car scores the mean of two similarities: to its best reference, which
follows the view (a query seen from one side should match the reference
taken from that side), and to its mean reference (the normalised mean of its
references' vectors), which keeps what all its views share, the livery, and
no one reference's background or pose. `liveryid eval` prints each alone
and the two together: together they keep the best reference's figures where
views decide (EPFL with 3 references) and most of the mean's where the
livery does (the F1 game teams). The decision is `match` only when the best car clears the
threshold and leads the runner-up by the margin; `ambiguous` when several
clear it too closely; `unknown` otherwise, which is the normal outcome for
the many cars at an event that nobody enrolled."""

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
    """Appearance similarity (`blend` of best and mean reference); None for a
    car that only its racing number names (the fuse stage)."""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    car_id: str | None
    score: float | None
    candidates: list[CarScore]


def blend(best: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """A car's score from its best reference's similarity and its mean reference's."""
    return (best + mean) / 2


def car_scores(query: np.ndarray, reference_ids: np.ndarray, similarities: np.ndarray, car_of: Callable[[int], str],
               mean_reference: Callable[[str], np.ndarray]) -> list[CarScore]:
    """Per-car scores, best car first, from one query's vector and nearest
    references; `mean_reference(car)` is the car's unit mean reference."""
    best: dict[str, float] = {}
    for ref, similarity in zip(reference_ids.tolist(), similarities.tolist()):
        if similarity == -np.inf:
            continue
        car = car_of(int(ref))
        if similarity > best.get(car, -np.inf):
            best[car] = similarity
    if not best:
        return []
    cars = list(best)
    means = np.stack([mean_reference(car) for car in cars]) @ query
    scores = blend(np.array([best[car] for car in cars]), means)
    return [CarScore(cars[i], round(float(scores[i]), 4)) for i in np.argsort(-scores, kind="stable")]


def decide(candidates: list[CarScore], policy: MatchPolicy) -> Verdict:
    """Open-set decision on appearance candidates (best first)."""
    shown = candidates[: policy.top_k]
    similarities = [-np.inf if c.score is None else c.score for c in candidates]
    if not candidates or similarities[0] < policy.threshold:
        return Verdict("unknown", None, None, shown)
    runner_up = similarities[1] if len(candidates) > 1 else -1.0
    if similarities[0] - runner_up < policy.margin:
        return Verdict("ambiguous", None, candidates[0].score, shown)
    return Verdict("match", candidates[0].car_id, candidates[0].score, shown)
