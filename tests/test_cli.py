"""The command line: the parsing of what tag (and the benches that tag) are asked to do, and what enroll prints."""

from pathlib import Path

import pytest

from bench.datasets import epfl_frames
from sidecar.cli import _parser, main, number_reading


@pytest.mark.parametrize(("flags", "expected"), [([], True), (["--no-numbers"], False),
                                                 (["--numbers-if-unsure"], "unsure")])
def test_tag_number_reading_flags_give_tags_read_numbers(flags: list[str], expected: object) -> None:
    args = _parser().parse_args(["tag", "--library", "lib", "photos", *flags])
    assert number_reading(args) == expected


def test_tag_refuses_both_number_reading_flags_at_once() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["tag", "--library", "lib", "photos", "--no-numbers", "--numbers-if-unsure"])


def test_enroll_prints_the_words_read_on_the_livery(tmp_path: Path, dev_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """EPFL car 04, the rally car: CASTROL on its side."""
    frame = next(f for f in epfl_frames() if (f.car, f.frame) == (4, 20))
    with pytest.raises(SystemExit) as exited:
        main(["enroll", "--library", str(tmp_path / "lib"), "--car", "#3", str(frame.path)])
    assert exited.value.code == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert ": 1 reference(s); words on its livery: " in line and "CASTROL" in line.split("words on its livery: ")[1].split()
