"""The number stage on the real PP-OCR models: racing numbers are read,
sponsor text and long digit strings are not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.datasets import epfl_frames
from sidecar.cli import main
from sidecar.engine import Engine
from sidecar.stages.embed import crop
from sidecar.stages.words import livery_words
from sidecar.stages.number import NumberReader, RACING_NUMBER


def panel(*lines: tuple[str, float, int]) -> np.ndarray:
    """A red livery panel with white text: (text, font scale, thickness) per line."""
    image = np.full((360, 640, 3), (40, 30, 200), np.uint8)
    y = 30
    for text, scale, thickness in lines:
        (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        y += height + 30
        cv2.putText(image, text, ((640 - width) // 2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def test_a_painted_number_is_read_and_sponsor_text_is_not(engine: Engine) -> None:
    readings = engine.number_reader()(panel(("CASTROL", 1.5, 3), ("27", 5.0, 12)))
    assert [r.text for r in readings] == ["27"]
    x1, y1, x2, y2 = readings[0].box
    assert 200 < (x1 + x2) / 2 < 440 and y2 > 150  # the big number, not the sponsor line above it
    assert readings[0].confidence >= engine.number_reader().min_confidence


def test_phone_numbers_and_words_are_not_racing_numbers(engine: Engine) -> None:
    assert engine.number_reader()(panel(("0800 123 456", 2.0, 5), ("WRC", 3.0, 8))) == []
    assert engine.number_reader()(np.zeros((40, 40, 3), np.uint8)) == []


@pytest.mark.parametrize(("text", "number"), [("7", True), ("44", True), ("112", True), ("12A", True),
                                              ("1234", False), ("A12", False), ("", False), ("7.5", False)])
def test_racing_number_pattern(text: str, number: bool) -> None:
    assert bool(RACING_NUMBER.match(text)) == number


def test_ctc_decoding_merges_repeats_and_drops_blanks(engine: Engine) -> None:
    reader = engine.number_reader().reader
    seven, four = reader.alphabet.index("7"), reader.alphabet.index("4")
    columns = [seven, seven, 0, four, 0, 0, four]  # "7", blank, "4", blanks, "4": 744
    probabilities = np.full((len(columns), len(reader.alphabet)), 1e-4, np.float32)
    probabilities[np.arange(len(columns)), columns] = [0.99, 0.97, 0.9, 0.98, 0.9, 0.9, 0.95]
    assert reader._decode(probabilities) == ("744", pytest.approx(0.95))


def test_the_reader_refuses_doubtful_characters(engine: Engine) -> None:
    strict = NumberReader(engine.number_reader().detector, engine.number_reader().reader, min_confidence=1.01)
    assert strict(panel(("27", 5.0, 12))) == []


def test_text_too_small_for_its_vehicle_to_be_a_racing_number_is_not_read(engine: Engine) -> None:
    small = panel(("27", 1.5, 4))  # its text line is about 47 px tall: 13% of this 360-px panel
    reader = engine.number_reader()
    assert [r.text for r in reader(small)] == ["27"]
    # The same panel at the top of a vehicle 2000 px tall: the line is found, but at 2% of the vehicle's
    # height (under MIN_NUMBER_HEIGHT) it is not read.
    tall = np.vstack([small, np.full((1640, 640, 3), (40, 30, 200), np.uint8)])
    assert any(line.box[1] < 150 for line in reader.detector(tall))
    assert reader(tall) == []


def test_the_sponsor_lines_are_read_as_words_only_when_asked_and_the_numbers_stay_the_same(engine: Engine) -> None:
    image = panel(("CASTROL", 1.5, 3), ("27", 5.0, 12), ("Red Bull", 1.5, 3))
    reader = engine.number_reader()
    numbers_only, with_words = reader.read(image), reader.read(image, words=True)
    assert numbers_only.words == frozenset() and with_words.words == {"CASTROL", "REDBULL"}
    assert with_words.numbers == numbers_only.numbers == reader(image) and [r.text for r in reader(image)] == ["27"]


def test_the_numbers_command_prints_the_number_and_the_words_on_a_rally_car(
        dev_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """EPFL car 04, frame 20: #3 on the door, CASTROL on the side (bench/labels/epfl_numbers.csv has the number)."""
    frame = next(f for f in epfl_frames() if (f.car, f.frame) == (4, 20))
    with pytest.raises(SystemExit) as exited:
        main(["numbers", str(frame.path)])
    assert exited.value.code == 0
    (vehicle,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  box=")]
    assert "#3 (" in vehicle and "CASTROL" in vehicle.split("words:")[1].split()


def test_a_slanted_sponsor_is_read_from_its_rotated_rectangle(engine: Engine) -> None:
    """A line at 30 degrees (a sidepod seen at an angle): flattened it reads whole, from its upright box it does not."""
    slanted = cv2.warpAffine(panel(("PETRONAS", 2.0, 4)), cv2.getRotationMatrix2D((320, 180), 30, 1.0), (640, 360),
                             borderMode=cv2.BORDER_REPLICATE)
    reader = engine.number_reader()
    assert reader.read(slanted, words=True).words == {"PETRONAS"}
    upright = reader.reader([crop(slanted, line.box) for line in reader.detector(slanted)])
    assert livery_words(upright) == frozenset()
