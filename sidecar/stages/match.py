"""Match stage: from a vehicle's nearest references to per-car scores and an
open-set decision.

A car scores the best similarity among its references (the max rule: a
query seen from one side should match the reference taken from that side,
not the average of all sides; `liveryid eval` measures it against the mean
prototype). The decision is `match` only when the best car clears the
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
    """Best similarity among the car's references; None for a car that only
    its racing number names (the fuse stage)."""


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    car_id: str | None
    score: float | None
    candidates: list[CarScore]


def car_scores(reference_ids: np.ndarray, similarities: np.ndarray, car_of: Callable[[int], str]) -> list[CarScore]:
    """Best similarity per car, best car first, from one query's neighbours."""
    best: dict[str, float] = {}
    for ref, similarity in zip(reference_ids.tolist(), similarities.tolist()):
        if similarity == -np.inf:
            continue
        car = car_of(int(ref))
        if similarity > best.get(car, -np.inf):
            best[car] = similarity
    return [CarScore(car, round(score, 4)) for car, score in sorted(best.items(), key=lambda kv: -kv[1])]


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
