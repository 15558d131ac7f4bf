"""The words stage's rules, on hand-made candidates and readings."""

from __future__ import annotations

import pytest

from sidecar.stages.match import CarScore, MatchPolicy, decide
from sidecar.stages.words import break_tie, livery_words, same_word, tied, word_evidence, worth_reading

POLICY = MatchPolicy(threshold=0.75, margin=0.03, top_k=5)
# Red Bull and Toro Rosso share two sponsors; Ferrari's are its own.
CAR_WORDS = {"redbull": {"REDBULL", "ESSO", "HONDA"}, "tororosso": {"REDBULL", "HONDA"}, "ferrari": {"HUBLOT", "MAHLE"}}


def scores(*cars: tuple[str, float, float]) -> list[CarScore]:
    """(car, best reference, mean reference) each, ranked by the mean as identify ranks them; no rivals."""
    return [CarScore(car, best, mean) for car, best, mean in cars]


def test_words_are_letters_and_digits_read_surely_and_never_bare_numbers() -> None:
    read = [("Red Bull", 0.97), ("ESSO", 0.85), ("Mobil 1", 0.9), ("44", 0.99), ("AT", 0.99), ("HONDA", 0.6)]
    assert livery_words(read) == {"REDBULL", "ESSO", "MOBIL1"}


@pytest.mark.parametrize(("a", "b", "same"), [("LENOVO", "ENOVO", True), ("PETRONAS", "PETRONAS", True),
                                              ("PETRONAS", "PET", False), ("ESSO", "ESSE", False)])
def test_a_word_read_in_part_is_the_same_word(a: str, b: str, same: bool) -> None:
    assert same_word(a, b) == same_word(b, a) == same


def test_a_word_several_cars_carry_counts_less() -> None:
    assert word_evidence({"HONDA", "ESSO"}, CAR_WORDS) == {"redbull": 1.5, "tororosso": 0.5}
    assert word_evidence({"ROLEX"}, CAR_WORDS) == {}


def test_only_cars_within_the_margin_of_the_first_are_tied() -> None:
    candidates = scores(("ferrari", 0.8, 0.80), ("redbull", 0.8, 0.78), ("tororosso", 0.8, 0.76))
    assert [c.car_id for c in tied(candidates, POLICY.margin)] == ["ferrari", "redbull"]
    assert worth_reading(candidates, POLICY, CAR_WORDS)
    assert not worth_reading(candidates, POLICY, {"tororosso": {"HONDA"}})  # no tied car carries words
    assert not worth_reading(scores(("ferrari", 0.8, 0.85), ("redbull", 0.8, 0.78)), POLICY, CAR_WORDS)


def test_the_words_match_the_tied_car_that_carries_them() -> None:
    candidates = scores(("ferrari", 0.8, 0.80), ("redbull", 0.82, 0.79), ("tororosso", 0.7, 0.70))
    appearance = decide(candidates, POLICY)
    assert appearance.decision == "ambiguous"
    worded = break_tie(appearance, candidates, {"ESSO", "ROLEX"}, CAR_WORDS, POLICY)
    assert (worded.verdict.decision, worded.verdict.car_id, worded.verdict.score, worded.decided) == (
        "match", "redbull", 0.82, True)
    assert [c.car_id for c in worded.verdict.candidates] == ["redbull", "ferrari", "tororosso"]
    assert worded.words == ["ESSO"]  # ROLEX: no tied car carries it


def test_words_shared_alike_or_carried_by_no_tied_car_leave_appearance_as_it_was() -> None:
    candidates = scores(("redbull", 0.8, 0.80), ("tororosso", 0.8, 0.79), ("ferrari", 0.8, 0.70))
    appearance = decide(candidates, POLICY)
    for words in ({"HONDA"}, {"HUBLOT"}, set()):  # both carry it; only a car outside the tie; none
        worded = break_tie(appearance, candidates, words, CAR_WORDS, POLICY)
        assert (worded.verdict, worded.decided) == (appearance, False)


def test_the_car_the_words_choose_still_needs_the_threshold_and_the_margin_to_the_rest() -> None:
    below = scores(("ferrari", 0.7, 0.72), ("redbull", 0.7, 0.71))
    worded = break_tie(decide(below, POLICY), below, {"ESSO"}, CAR_WORDS, POLICY)
    assert (worded.verdict.decision, worded.decided) == ("unknown", False)
    assert worded.verdict.candidates[0].car_id == "redbull"  # first, though not matched
    # Red Bull ties Ferrari, and Toro Rosso, outside the tie, is within the margin of Red Bull.
    close = scores(("ferrari", 0.8, 0.80), ("redbull", 0.8, 0.775), ("tororosso", 0.8, 0.765))
    worded = break_tie(decide(close, POLICY), close, {"ESSO"}, CAR_WORDS, POLICY)
    assert (worded.verdict.decision, worded.verdict.candidates[0].car_id) == ("ambiguous", "redbull")
    # The rival rule: Red Bull's twin looks more like it than this vehicle does.
    rival = [CarScore("ferrari", 0.8, 0.80), CarScore("redbull", 0.82, 0.79, 0.9)]
    assert break_tie(decide(rival, POLICY), rival, {"ESSO"}, CAR_WORDS, POLICY).verdict.decision == "ambiguous"


def test_a_clear_appearance_match_is_never_reordered() -> None:
    candidates = scores(("ferrari", 0.9, 0.90), ("redbull", 0.8, 0.80))
    appearance = decide(candidates, POLICY)
    assert break_tie(appearance, candidates, {"ESSO"}, CAR_WORDS, POLICY).verdict == appearance


def test_a_sponsor_the_whole_field_carries_counts_for_little_in_a_tie() -> None:
    """Red Bull and Toro Rosso tied; HONDA is on both and on Ferrari, outside the tie, ESSO on Red Bull alone."""
    field = {"redbull": {"ESSO"}, "tororosso": {"HONDA"}, "ferrari": {"HONDA"}, "mclaren": {"HONDA"}}
    candidates = scores(("tororosso", 0.8, 0.80), ("redbull", 0.8, 0.79), ("ferrari", 0.7, 0.60), ("mclaren", 0.7, 0.55))
    worded = break_tie(decide(candidates, POLICY), candidates, {"HONDA", "ESSO"}, field, POLICY)
    assert (worded.verdict.decision, worded.verdict.car_id) == ("match", "redbull")  # 1 against HONDA's 1/3
    assert worded.words == ["ESSO", "HONDA"]  # both carried by a tied car
