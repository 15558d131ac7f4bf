"""Number stage: the racing numbers painted on a vehicle, read from its crop.

Two PP-OCR models (the `rapidocr` wheel's ONNX files, run by our own
session): a DB detector finds the text lines of the crop, a CTC recogniser
reads each. Most text on a race car is sponsors, and a wrong number is worse
than none, so a reading counts only when it is a number as series paint
them (1 to 3 digits, an optional letter suffix) and the recogniser is sure
of every character of it.

Only the vehicle's crop is read, never the whole photo: the detector's cost
grows with pixels, and the number is on the car. The same text lines give
the livery's words (sponsors, names) where identify asks for them
(`sidecar/stages/words.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from sidecar.inference.manifest import TextDetectorSpec, TextReaderSpec
from sidecar.inference.session import OrtSession
from sidecar.stages.embed import crop, crop_bounds
from sidecar.stages.preprocess import halved, to_tensor
from sidecar.stages.words import MIN_LINE_HEIGHT, livery_words

RACING_NUMBER = re.compile(r"^[0-9]{1,3}[A-Z]?$")
# Every character of a reading must be at least this sure: on the EPFL cars
# (`python -m bench.numbers`) digits misread from grilles, wheels and plates
# stay under it, the painted number over it.
MIN_CHARACTER_CONFIDENCE = 0.99
READ_BATCH = 8
# A racing number is at most 3 digits and a letter; a text line wider than
# this many heights holds more (sponsors, names) and could not pass the
# pattern, so it is not recognised at all: most of a livery's text.
MAX_NUMBER_ASPECT = 4.0
# Series paint numbers large: the smallest read on the development sets is
# 6% of its vehicle's box height (`python -m bench.numbers` prints it). Text
# lines under this fraction (grilles, mesh, small print; on a car filling a
# 24 MP photo, dozens of them) are not recognised.
MIN_NUMBER_HEIGHT = 0.025


@dataclass(frozen=True)
class NumberReading:
    text: str
    box: list[float]
    """[x1, y1, x2, y2] in the pixels of the crop that was read."""
    confidence: float
    """The least sure character's probability."""


@dataclass(frozen=True)
class TextLine:
    box: list[float]
    """[x1, y1, x2, y2] around the line, in the image's pixels."""
    score: float
    corners: np.ndarray
    """(4, 2) the rotated rectangle around the line, in the image's pixels: how it runs along a car seen at an angle."""


def flattened(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """The pixels of a rotated rectangle warped flat, its longer side horizontal (as PP-OCR crops a line)."""
    by_x = corners[np.argsort(corners[:, 0], kind="stable")]
    top_left, bottom_left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    top_right, bottom_right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    source = np.array([top_left, top_right, bottom_right, bottom_left], np.float32)
    width = max(2, int(round(max(np.linalg.norm(top_right - top_left), np.linalg.norm(bottom_right - bottom_left)))))
    height = max(2, int(round(max(np.linalg.norm(bottom_left - top_left), np.linalg.norm(bottom_right - top_right)))))
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    line = cv2.warpPerspective(image, cv2.getPerspectiveTransform(source, target), (width, height),
                               borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(np.rot90(line)) if height > 1.5 * width else line


def short_side(corners: np.ndarray) -> float:
    return float(min(np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[2] - corners[1])))


class TextDetector:
    def __init__(self, spec: TextDetectorSpec, session: OrtSession) -> None:
        self.spec = spec
        self._session = session

    def __call__(self, image: np.ndarray) -> list[TextLine]:
        """The text lines found, each boxed upright and in its rotated rectangle, with its score."""
        height, width = image.shape[:2]
        # Shrink large crops to bound the cost, never enlarge small ones:
        # upscaled pixels add detection time and false text, not detail.
        scale = min(1.0, self.spec.longest_side / max(height, width))
        rows, cols = (max(32, int(round(side * scale / 32)) * 32) for side in (height, width))
        resized = cv2.resize(halved(image, cols, rows), (cols, rows),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        (probability,) = self._session.run([self.spec.output], {self.spec.input.name: to_tensor([resized], self.spec.input)})
        text_map = probability[0, 0]
        mask = (text_map > self.spec.threshold).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        lines = []
        sx, sy = width / cols, height / rows
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if min(w, h) < 3:
                continue
            region = text_map[y : y + h, x : x + w]
            score = float(region[mask[y : y + h, x : x + w] > 0].mean())
            if score < self.spec.box_threshold:
                continue
            grow = w * h * self.spec.unclip_ratio / (2 * (w + h))
            box = [max(0.0, (x - grow) * sx), max(0.0, (y - grow) * sy),
                   min(float(width), (x + w + grow) * sx), min(float(height), (y + h + grow) * sy)]
            # The same growth for the rotated rectangle, from its own sides.
            centre, (side_a, side_b), angle = cv2.minAreaRect(contour)
            grown = side_a * side_b * self.spec.unclip_ratio / (2 * (side_a + side_b)) if side_a + side_b > 0 else 0.0
            corners = cv2.boxPoints((centre, (side_a + 2 * grown, side_b + 2 * grown), angle)) * np.array([sx, sy], np.float32)
            lines.append(TextLine(box, score, corners))
        return lines


class TextReader:
    def __init__(self, spec: TextReaderSpec, session: OrtSession) -> None:
        self.spec = spec
        self._session = session
        metadata = session.metadata()
        if spec.alphabet_metadata not in metadata:
            raise ValueError(f"{spec.name}: no {spec.alphabet_metadata!r} in the model's metadata")
        # CTC: index 0 is the blank; the model's last class is a space.
        self.alphabet = ["", *metadata[spec.alphabet_metadata].split("\n"), " "]

    def __call__(self, lines: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, least character probability) of each text-line image."""
        out: list[tuple[str, float]] = []
        spec = self.spec.input
        for start in range(0, len(lines), READ_BATCH):
            batch = lines[start : start + READ_BATCH]
            widths = [min(spec.width, max(8, int(np.ceil(spec.height * l.shape[1] / l.shape[0])))) for l in batch]
            tensor = np.zeros((len(batch), 3, spec.height, max(widths)), np.float32)
            for i, (line, width) in enumerate(zip(batch, widths)):
                tensor[i, :, :, :width] = to_tensor([cv2.resize(line, (width, spec.height))], spec)[0]
            (probabilities,) = self._session.run([self.spec.output], {spec.name: tensor})
            # The recogniser gives one column per 8 input columns: padding's columns are cut off.
            out += [self._decode(p[: int(np.ceil(w / 8))]) for p, w in zip(probabilities, widths)]
        return out

    def _decode(self, probabilities: np.ndarray) -> tuple[str, float]:
        """Greedy CTC: the best class per column, repeats merged, blanks dropped."""
        best, sure = probabilities.argmax(axis=1), probabilities.max(axis=1)
        keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
        text = "".join(self.alphabet[i] for i in best[keep])
        return text, float(sure[keep].min()) if keep.any() else 0.0


@dataclass(frozen=True)
class VehicleText:
    numbers: list[NumberReading]
    """The racing numbers read, surest first."""
    words: frozenset[str]
    """The livery's words (`sidecar/stages/words.py`); empty unless asked for."""


class NumberReader:
    def __init__(self, detector: TextDetector, reader: TextReader, min_confidence: float = MIN_CHARACTER_CONFIDENCE) -> None:
        self.detector = detector
        self.reader = reader
        self.min_confidence = min_confidence

    def __call__(self, vehicle: np.ndarray) -> list[NumberReading]:
        """The racing numbers read on a vehicle's crop, surest first."""
        return self.read(vehicle).numbers

    def read(self, vehicle: np.ndarray, words: bool = False) -> VehicleText:
        """The racing numbers on a vehicle's crop and, when `words`, its livery's
        words too: one text detection; only then is every line read flattened."""
        height = vehicle.shape[0]
        lines = self.detector(vehicle)
        number_lines = [line.box for line in lines
                        if line.box[2] - line.box[0] <= MAX_NUMBER_ASPECT * (line.box[3] - line.box[1])
                        and line.box[3] - line.box[1] >= MIN_NUMBER_HEIGHT * height]
        texts = self.reader([crop(vehicle, box) for box in number_lines])
        readings = []
        for box, (text, confidence) in zip(number_lines, texts):
            number = text.replace(" ", "").upper()
            if RACING_NUMBER.match(number) and confidence >= self.min_confidence:
                readings.append(NumberReading(number, [round(v, 1) for v in box], round(confidence, 4)))
        numbers = sorted(readings, key=lambda r: -r.confidence)
        if not words:
            return VehicleText(numbers, frozenset())
        # Every line tall enough, read again flattened from its rotated rectangle: a sponsor along a sidepod seen
        # at an angle reads whole. The numbers keep the upright boxes their thresholds were measured on, and are
        # recognised in batches of their own (a batch pads its lines to the widest), so `words` never changes them.
        worded = [line for line in lines if short_side(line.corners) >= MIN_LINE_HEIGHT * height]
        return VehicleText(numbers, livery_words(self.reader([flattened(vehicle, line.corners) for line in worded])))

    def on_vehicle(self, image: np.ndarray, box: list[float], words: bool = False) -> VehicleText:
        """`read` on the vehicle at `box`, its numbers boxed in `image` pixels."""
        x1, y1, x2, y2 = crop_bounds(image, box)
        text = self.read(image[y1:y2, x1:x2], words)
        return VehicleText([
            NumberReading(r.text, [round(r.box[0] + x1, 1), round(r.box[1] + y1, 1), round(r.box[2] + x1, 1),
                                   round(r.box[3] + y1, 1)], r.confidence)
            for r in text.numbers
        ], text.words)
