"""The command line's parsing of what tag (and the benches that tag) are asked to do."""

import pytest

from sidecar.cli import _parser, number_reading


@pytest.mark.parametrize(("flags", "expected"), [([], True), (["--no-numbers"], False),
                                                 (["--numbers-if-unsure"], "unsure")])
def test_tag_number_reading_flags_give_tags_read_numbers(flags: list[str], expected: object) -> None:
    args = _parser().parse_args(["tag", "--library", "lib", "photos", *flags])
    assert number_reading(args) == expected


def test_tag_refuses_both_number_reading_flags_at_once() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["tag", "--library", "lib", "photos", "--no-numbers", "--numbers-if-unsure"])
