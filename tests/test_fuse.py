"""The fuse stage's rules, on hand-made verdicts and readings."""

from __future__ import annotations

import pytest

from sidecar.stages.fuse import fuse, normalise_number, number_wanted, numbers_index
from sidecar.stages.match import CarScore, MatchPolicy, Verdict, decide
from sidecar.stages.number import NumberReading
from sidecar.stages.words import break_tie

POLICY = MatchPolicy(threshold=0.6, margin=0.05, top_k=5)
# Two cars of one team look alike (a, b); c has no number on record.
NUMBERS = {"a": "7", "b": "8", "c": None, "d": "#12 "}


def appearance(*scores: tuple[str, float]) -> Verdict:
    return decide([CarScore(car, score) for car, score in scores], POLICY)


def read(*texts: str) -> list[NumberReading]:
    return [NumberReading(text, [0.0, 0.0, 10.0, 5.0], 0.999) for text in texts]


def run(verdict: Verdict, readings: list[NumberReading]):  # type: ignore[no-untyped-def]
    return fuse(verdict, readings, NUMBERS, numbers_index(NUMBERS), POLICY)


def test_numbers_are_compared_without_hash_or_spaces() -> None:
    assert normalise_number(" #24b ") == "24B"
    assert numbers_index(NUMBERS) == {"7": ["a"], "8": ["b"], "12": ["d"]}


def test_without_a_reading_appearance_decides() -> None:
    fused = run(appearance(("a", 0.9), ("b", 0.5)), [])
    assert (fused.verdict.decision, fused.verdict.car_id, fused.decided_by, fused.number) == ("match", "a", ["appearance"], None)
    assert run(appearance(("a", 0.3)), []).decided_by == []


def test_the_number_confirms_the_appearance_match() -> None:
    fused = run(appearance(("a", 0.9), ("b", 0.5)), read("7"))
    assert (fused.verdict.car_id, fused.decided_by, fused.conflict) == ("a", ["appearance", "number"], None)


def test_the_number_separates_two_cars_that_look_alike() -> None:
    ambiguous = appearance(("a", 0.80), ("b", 0.79))
    assert ambiguous.decision == "ambiguous"
    fused = run(ambiguous, read("8"))
    assert (fused.verdict.decision, fused.verdict.car_id, fused.decided_by) == ("match", "b", ["number"])
    assert fused.verdict.score == 0.79 and fused.appearance is ambiguous
    assert [c.car_id for c in fused.verdict.candidates] == ["b", "a"]


def test_the_number_names_a_car_without_references() -> None:
    fused = run(appearance(("a", 0.2)), read("12"))
    assert (fused.verdict.decision, fused.verdict.car_id, fused.verdict.score) == ("match", "d", None)
    assert fused.verdict.candidates[0] == CarScore("d", None)
    assert fused.number_cars == ["d"]


def test_a_number_contradicting_the_appearance_match_makes_it_ambiguous() -> None:
    fused = run(appearance(("a", 0.9), ("b", 0.5)), read("8"))
    assert (fused.verdict.decision, fused.verdict.car_id, fused.decided_by) == ("ambiguous", None, [])
    assert [c.car_id for c in fused.verdict.candidates][:2] == ["a", "b"]
    assert "8" in (fused.conflict or "") and "7" in (fused.conflict or "")


def test_an_unenrolled_number_on_a_numbered_match_is_a_conflict() -> None:
    fused = run(appearance(("a", 0.9)), read("55"))
    assert fused.verdict.decision == "ambiguous" and fused.number_cars == []


def test_a_car_without_a_number_keeps_its_match_unless_the_number_is_another_cars() -> None:
    assert run(appearance(("c", 0.9)), read("55")).verdict.car_id == "c"
    assert run(appearance(("c", 0.9)), read("7")).verdict.decision == "ambiguous"


def test_an_unknown_vehicle_with_an_unenrolled_number_stays_unknown_and_reports_it() -> None:
    fused = run(appearance(("a", 0.2)), read("55"))
    assert fused.verdict.decision == "unknown" and fused.number is not None and fused.number.text == "55"


def test_the_surest_reading_naming_a_car_is_the_evidence() -> None:
    fused = run(appearance(("a", 0.2)), read("55", "8"))
    assert fused.number is not None and fused.number.text == "8" and fused.verdict.car_id == "b"


@pytest.mark.parametrize(("scores", "decision", "car"), [
    ((("z", 0.92), ("x", 0.90), ("y", 0.5)), "match", "x"),  # z and x look alike; of the two #3s, x is clear
    ((("z", 0.72), ("x", 0.70), ("y", 0.69)), "ambiguous", None),  # nor can appearance tell the #3s apart
])
def test_one_number_on_two_cars_is_settled_by_appearance_or_left_ambiguous(scores, decision, car) -> None:  # type: ignore[no-untyped-def]
    numbers = {"x": "3", "y": "3", "z": "4"}
    verdict = appearance(*scores)
    assert verdict.decision == "ambiguous"
    fused = fuse(verdict, read("3"), numbers, numbers_index(numbers), POLICY)
    assert (fused.verdict.decision, fused.verdict.car_id) == (decision, car)
    assert [c.car_id for c in fused.verdict.candidates][:2] == ["x", "y"]


@pytest.mark.parametrize(("read_numbers", "decision", "wanted"), [
    (True, "match", True), (True, "unknown", True), (False, "ambiguous", False), (False, "unknown", False),
    ("unsure", "match", False), ("unsure", "ambiguous", True), ("unsure", "unknown", True),
])
def test_which_vehicles_have_their_number_read(read_numbers: bool | str, decision: str, wanted: bool) -> None:
    appearance = decide([CarScore("a", 0.9)] if decision == "match" else
                        [CarScore("a", 0.9), CarScore("b", 0.89)] if decision == "ambiguous" else [], POLICY)
    assert appearance.decision == decision
    assert number_wanted(read_numbers, appearance) is wanted  # type: ignore[arg-type]


def test_a_tie_the_words_broke_is_appearance_for_the_number_and_the_reply_says_so() -> None:
    candidates = [CarScore("a", 0.9, 0.9), CarScore("b", 0.88, 0.88)]
    tie = decide(candidates, POLICY)
    words = {"a": {"PETRONAS"}, "b": {"REXONA"}}
    worded = break_tie(tie, candidates, {"PETRONAS"}, words, POLICY)
    fused = fuse(tie, [], NUMBERS, numbers_index(NUMBERS), POLICY, worded)
    assert (fused.verdict.decision, fused.verdict.car_id, fused.decided_by, fused.words) == (
        "match", "a", ["appearance", "words"], ["PETRONAS"])
    assert fused.appearance == tie  # what appearance alone decided: the tie
    agreed = fuse(tie, read("7"), NUMBERS, numbers_index(NUMBERS), POLICY, worded)
    assert (agreed.verdict.car_id, agreed.decided_by) == ("a", ["appearance", "words", "number"])
    contradicted = fuse(tie, read("8"), NUMBERS, numbers_index(NUMBERS), POLICY, worded)
    assert (contradicted.verdict.decision, contradicted.decided_by) == ("ambiguous", [])
    assert "8" in (contradicted.conflict or "") and contradicted.words == ["PETRONAS"]
