"""Fuse stage: one decision per vehicle from its appearance verdict and the
racing numbers read on it.

The number stage returns a number only when it is sure of every character,
so a read number that an enrolled car carries is strong evidence: it names
a car that has no references, and separates two cars of one team whose
liveries are identical. It is not proof, though (another class may run the
same number, the car may be one nobody enrolled), so a number never
silently overrides a clear appearance match: when they disagree the
decision is `ambiguous`, with both candidates and the reason.

- appearance matches car A:
  - A's number was read -> match A (decided by both);
  - A carries another number, or has none and the number read is another
    enrolled car's -> ambiguous (A, and the cars carrying the read number);
  - otherwise -> match A (decided by appearance);
- appearance is ambiguous or unknown and the read number names:
  - one car -> match it (decided by the number);
  - several cars (one number in two classes) -> the one appearance prefers
    among them when it clears the threshold and margin, else ambiguous;
  - no car -> appearance's verdict stands, the reading is reported.

Where appearance ties cars, the livery's words may have broken the tie first
(`sidecar/stages/words.py`): their verdict then stands for appearance's in
the rules above, and a match they made says so (decided by appearance and
words).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from sidecar.protocol.messages import ReadNumbers
from sidecar.stages.match import CarScore, MatchPolicy, Verdict, decide
from sidecar.stages.number import NumberReading
from sidecar.stages.words import Worded

Signal = Literal["appearance", "words", "number"]


def number_wanted(read_numbers: ReadNumbers, appearance: Verdict) -> bool:
    """Whether a vehicle's number is read: always (true), never (false), or
    only where appearance alone does not match it ("unsure": faster, and a
    clear appearance match is then not checked against its number)."""
    return read_numbers is True or (read_numbers == "unsure" and appearance.decision != "match")


@dataclass(frozen=True)
class Fused:
    verdict: Verdict
    appearance: Verdict
    decided_by: list[Signal]
    number: NumberReading | None
    """The reading used: the surest one naming an enrolled car, else the surest one."""
    number_cars: list[str]
    """Enrolled cars carrying the read number."""
    conflict: str | None
    words: list[str] = field(default_factory=list)
    """The vehicle's words that a car appearance tied carries (the words stage)."""


def normalise_number(text: str) -> str:
    """A racing number as entry lists and readings are compared: '#7 ' and '7' are the same."""
    return text.strip().lstrip("#").strip().upper()


def numbers_index(numbers: Mapping[str, str | None]) -> dict[str, list[str]]:
    """Number -> the cars carrying it, from car id -> number."""
    index: dict[str, list[str]] = {}
    for car_id, number in numbers.items():
        if number and normalise_number(number):
            index.setdefault(normalise_number(number), []).append(car_id)
    return index


def fuse(
    appearance: Verdict, readings: list[NumberReading], numbers: Mapping[str, str | None],
    cars_by_number: Mapping[str, list[str]], policy: MatchPolicy, worded: Worded | None = None,
) -> Fused:
    """`numbers`: car id -> its number (None when it has none); `cars_by_number`:
    `numbers_index(numbers)`; `worded`: appearance's tie broken by the words, when they were read."""
    if worded is None:
        return _fuse(appearance, readings, numbers, cars_by_number, policy)
    fused = _fuse(worded.verdict, readings, numbers, cars_by_number, policy)
    signals: list[Signal] = []
    for signal in fused.decided_by:
        signals += [signal, "words"] if signal == "appearance" and worded.decided else [signal]
    return replace(fused, appearance=appearance, decided_by=signals, words=worded.words)


def _fuse(
    appearance: Verdict, readings: list[NumberReading], numbers: Mapping[str, str | None],
    cars_by_number: Mapping[str, list[str]], policy: MatchPolicy,
) -> Fused:
    named = [(r, cars_by_number[r.text]) for r in readings if r.text in cars_by_number]
    reading, number_cars = named[0] if named else (readings[0] if readings else None, [])
    if reading is None:
        return Fused(appearance, appearance, ["appearance"] if appearance.decision == "match" else [], None, [], None)
    by_car = {c.car_id: c for c in appearance.candidates}

    def candidates(first: list[str]) -> list[CarScore]:
        """`first` (in that order), then appearance's other candidates."""
        shown = [by_car.get(car, CarScore(car, None)) for car in dict.fromkeys(first)]
        return shown + [c for c in appearance.candidates if c.car_id not in first]

    matched = appearance.car_id if appearance.decision == "match" else None
    if matched is not None:
        carried = normalise_number(numbers.get(matched) or "") or None
        agrees = carried is not None and carried in {r.text for r in readings}
        if agrees or (carried is None and not number_cars):
            signals: list[Signal] = ["appearance", "number"] if agrees else ["appearance"]
            return Fused(appearance, appearance, signals, reading, number_cars, None)
        conflict = (f"the number read is {reading.text} but the car that looks like this one carries {carried}"
                    if carried is not None else
                    f"the number read is {reading.text}, another car's, and the car that looks like this one has no number")
        verdict = Verdict("ambiguous", None, appearance.score, candidates([matched, *number_cars]))
        return Fused(verdict, appearance, [], reading, number_cars, conflict)
    if len(number_cars) == 1:
        car = number_cars[0]
        verdict = Verdict("match", car, by_car[car].score if car in by_car else None, candidates([car]))
        return Fused(verdict, appearance, ["number"], reading, number_cars, None)
    if number_cars:
        among = decide([c for c in appearance.candidates if c.car_id in number_cars], policy)
        if among.car_id is not None:
            verdict = Verdict("match", among.car_id, among.score, candidates([among.car_id, *number_cars]))
            return Fused(verdict, appearance, ["number", "appearance"], reading, number_cars, None)
        conflict = f"number {reading.text} is carried by {len(number_cars)} cars and appearance does not tell them apart"
        verdict = Verdict("ambiguous", None, appearance.score, candidates(number_cars))
        return Fused(verdict, appearance, [], reading, number_cars, conflict)
    return Fused(appearance, appearance, [], reading, [], None)
