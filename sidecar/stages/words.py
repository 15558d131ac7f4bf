"""Words stage: the words painted on a livery break the ties of appearance.

Cars of one shape are told apart by their liveries, and a livery is largely
its sponsors' names, which the number stage's text models read (the same
text lines, `NumberReader.read`, each flattened from its rotated rectangle,
as PP-OCR crops a line, since sponsors run along the bodywork at the car's
angle to the camera). A word is a reading of MIN_WORD_LENGTH or
more letters and digits with at least one letter (numbers are the number
stage's), every character at least MIN_CHARACTER_CONFIDENCE sure. An
enrolled car's words are those read on its references.

A vehicle's evidence for a car is the sum, over the vehicle's words that
the car's references carry, of 1 / (how many enrolled cars carry it): a
series sponsor on every car says little, a team's own sponsor a lot. Two
readings are one word when the shorter lies inside the longer and is at
least MIN_PART_OF_WORD of it (a line read in part: ENOVO for LENOVO).

Words only break appearance's ties. Among the cars whose mean-reference
similarity lies within the match margin of the first (those `decide` cannot
order, calling the vehicle ambiguous), the one with the most evidence is put
first when it has more than any other; the vehicle is then matched to it
when `decide` matches it against the cars outside the tie (the threshold,
the rival rule and the margin to the next car all still apply). Words never
overturn a clear appearance match and never name a car appearance did not
put in the tie: a misread word, or a sponsor two teams share, can at worst
pick the wrong one of cars appearance already found alike. Measured in the
README ("Words on the livery", `python -m bench.words`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from sidecar.stages.match import CarScore, MatchPolicy, Verdict, decide, ranking

# Chosen by trying 0.7 to 0.95 on the F1 game sets with `bench.words` (README, "Words on the livery").
MIN_CHARACTER_CONFIDENCE = 0.8
MIN_LINE_HEIGHT = 0.02
"""Text lines lower than this share of the vehicle's height (grilles, mesh, small print) are not read."""
MIN_WORD_LENGTH = 3
MIN_PART_OF_WORD = 0.6
_NOT_WORD = re.compile(r"[^A-Z0-9]")


@dataclass(frozen=True)
class Worded:
    verdict: Verdict
    """Appearance's verdict, its tie broken where the words single out a car."""
    words: list[str]
    """The vehicle's words that a tied car's references carry."""
    decided: bool
    """The words turned appearance's ambiguity into a match."""


def livery_words(texts: Iterable[tuple[str, float]]) -> frozenset[str]:
    """The words among recognised text lines ((text, least character probability) each)."""
    words = set()
    for text, confidence in texts:
        word = _NOT_WORD.sub("", text.upper())
        if confidence >= MIN_CHARACTER_CONFIDENCE and len(word) >= MIN_WORD_LENGTH and not word.isdigit():
            words.add(word)
    return frozenset(words)


def same_word(a: str, b: str) -> bool:
    shorter, longer = sorted((a, b), key=len)
    return shorter in longer and len(shorter) >= MIN_PART_OF_WORD * len(longer)


def word_evidence(words: Collection[str], car_words: Mapping[str, Collection[str]]) -> dict[str, float]:
    """Each car's evidence from a vehicle's words (module docstring); cars carrying none are left out."""
    evidence: dict[str, float] = {}
    for word in words:
        carriers = [car for car, carried in car_words.items() if any(same_word(word, w) for w in carried)]
        for car in carriers:
            evidence[car] = evidence.get(car, 0.0) + 1.0 / len(carriers)
    return evidence


def tied(candidates: list[CarScore], margin: float) -> list[CarScore]:
    """The first car and every other within `margin` of it: the cars appearance cannot order."""
    if not candidates:
        return []
    first = ranking(candidates[0])
    return [c for c in candidates if ranking(c) >= first - margin]


def worth_reading(candidates: list[CarScore], policy: MatchPolicy, car_words: Mapping[str, Collection[str]]) -> bool:
    """Whether a vehicle's words could change its verdict: appearance ties two or more cars, and one carries words."""
    ties = tied(candidates, policy.margin)
    return len(ties) > 1 and any(car_words.get(c.car_id) for c in ties)


def break_tie(appearance: Verdict, candidates: list[CarScore], words: Collection[str],
              car_words: Mapping[str, Collection[str]], policy: MatchPolicy) -> Worded:
    """`candidates`: every car appearance ranked (as `decide` took them), `appearance` its verdict."""
    ties = tied(candidates, policy.margin) if appearance.decision != "match" else []
    evidence = word_evidence(words, car_words)  # over every enrolled car: a word many carry counts for little
    used = sorted(w for w in words if any(same_word(w, carried) for c in ties for carried in car_words.get(c.car_id, ())))
    ordered = sorted(ties, key=lambda c: -evidence.get(c.car_id, 0.0))  # stable: appearance orders equals
    if len(ordered) < 2 or evidence.get(ordered[0].car_id, 0.0) <= evidence.get(ordered[1].car_id, 0.0):
        return Worded(appearance, used, False)
    tied_cars = {c.car_id for c in ties}
    outside = [c for c in candidates if c.car_id not in tied_cars]
    shown = [*ordered, *outside][: policy.top_k]
    if appearance.decision == "ambiguous":
        chosen = decide([ordered[0], *outside], policy)
        if chosen.decision == "match":
            return Worded(Verdict("match", chosen.car_id, chosen.score, shown), used, True)
    return Worded(Verdict(appearance.decision, appearance.car_id, appearance.score, shown), used, False)
