"""Detector post-processing with a hand-written fake session."""

from __future__ import annotations

from pathlib import Path

import cv2
import msgspec
import numpy as np
from msgspec import structs

from sidecar.inference.manifest import DetectorSpec, Manifest
from sidecar.stages.detect import (
    Detections, NanoDetDetector, YoloDetector, batched_nms, build_detector, decode_gfl, detect_tiled, drop_nested,
    grid_centres, nms, tile_bounds,
)

MANIFEST = msgspec.json.decode((Path(__file__).resolve().parents[1] / "models/manifest.json").read_bytes(), type=Manifest)
SPEC = MANIFEST.get("nanodet-m-coco")
TWO_HEADS = MANIFEST.get("liveryid-vehicle-nanodet")


def one_hot_distribution(cells: int, distances: tuple[int, int, int, int], reg_max: int = 10) -> np.ndarray:
    """Box logits whose softmax puts (almost) all weight on the given bins."""
    logits = np.full((cells, 4, reg_max + 1), -30.0, np.float32)
    for side, bin_index in enumerate(distances):
        logits[:, side, bin_index] = 30.0
    return logits.reshape(cells, -1)


def test_grid_centres_are_row_major_cell_centres() -> None:
    centres = grid_centres(3, 8)
    assert centres[0].tolist() == [4.0, 4.0]
    assert centres[1].tolist() == [12.0, 4.0]
    assert centres[3].tolist() == [4.0, 12.0]


def test_gfl_decoding_is_the_distribution_expectation_times_stride() -> None:
    boxes = decode_gfl(one_hot_distribution(1, (1, 2, 3, 4)), np.array([[100.0, 50.0]]), stride=16, reg_max=10)
    np.testing.assert_allclose(boxes, [[84.0, 18.0, 148.0, 114.0]], atol=1e-3)
    # two equal bins: the expectation lies between them
    logits = np.full((1, 4, 11), -30.0, np.float32)
    logits[0, :, 2] = logits[0, :, 3] = 5.0
    np.testing.assert_allclose(decode_gfl(logits.reshape(1, -1), np.zeros((1, 2)), 10, 10), [[-25, -25, 25, 25]], atol=1e-3)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.5, 0.9, 0.3], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]


def test_per_class_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    keep = batched_nms(boxes, np.array([0.9, 0.8], np.float32), np.array([2, 4]), 0.5)
    assert keep.tolist() == [0, 1]


def test_a_box_inside_a_better_one_is_dropped() -> None:
    boxes = np.array([
        [0, 0, 100, 40],     # the car
        [70, 5, 100, 40],    # its nose, wholly inside: dropped
        [90, 0, 150, 40],    # a car alongside, a sixth of it inside the first: kept
        [120, 10, 140, 30],  # wholly inside the car alongside, which was kept: dropped
        [200, 0, 260, 40],   # a car elsewhere
    ], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    assert drop_nested(boxes, scores, 0.8).tolist() == [0, 2, 4]
    assert drop_nested(boxes[[1, 3]], scores[[1, 3]], 0.8).tolist() == [0, 1]  # no better box: both stay


def test_a_loose_box_around_a_clearly_better_one_is_dropped() -> None:
    boxes = np.array([
        [100, 100, 200, 150],  # the car
        [0, 50, 400, 300],     # loose around it, mostly track: dropped
        [300, 100, 380, 150],  # a car beside it, inside the loose box too: kept
    ], np.float32)
    assert drop_nested(boxes, np.array([0.8, 0.4, 0.3], np.float32), 0.8).tolist() == [0, 2]
    # A piece scoring within a hair of the whole car around it: neither is clearly the car, both stay.
    piece_first = np.array([[150, 100, 200, 150], [100, 100, 200, 150]], np.float32)
    assert drop_nested(piece_first, np.array([0.701, 0.7], np.float32), 0.8).tolist() == [0, 1]


class FakeSession:
    """Outputs with one confident cell: a car centred in the stride-16 grid
    for the COCO head; the vehicle head scores that cell `vehicle_score`, and
    `other_cell` a hair less."""

    def __init__(self, class_id: int, cell: int, distances: tuple[int, int, int, int], vehicle_score: float = 0.0,
                 other_cell: int | None = None) -> None:
        self.class_id, self.cell, self.distances, self.vehicle_score = class_id, cell, distances, vehicle_score
        self.other_cell = other_cell
        self.inputs: list[np.ndarray] = []

    def run(self, outputs: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.inputs.append(inputs["image"])
        result = []
        for name in outputs:
            stride = int(name.split("_s")[1])
            cells = (416 // stride) ** 2
            if name.startswith("vehicle_s"):
                scores = np.full((1, cells, 1), 0.01, np.float32)
                if stride == 16:
                    scores[0, self.cell, 0] = self.vehicle_score
                    if self.other_cell is not None:
                        scores[0, self.other_cell, 0] = self.vehicle_score - 0.01
                result.append(scores)
            elif name.startswith("vehicle_boxes"):
                result.append(one_hot_distribution(cells, (1, 1, 1, 1))[None])
            elif name.startswith("scores"):
                scores = np.full((1, cells, 80), 0.01, np.float32)
                if stride == 16:
                    scores[0, self.cell, self.class_id] = 0.8
                    scores[0, self.cell, 4] = 0.6  # the same box called an airplane too
                result.append(scores)
            else:
                result.append(one_hot_distribution(cells, self.distances)[None])
        return result


def test_boxes_map_back_through_the_letterbox_to_original_pixels() -> None:
    # A 832x416 image letterboxes to 416x208 at scale 0.5, padded 104 px top and bottom.
    cell = 13 * 26 + 13  # row 13, column 13 of 26: centre (216, 216) in model input
    session = FakeSession(class_id=2, cell=cell, distances=(2, 3, 4, 5))
    detector = NanoDetDetector(SPEC, session)  # type: ignore[arg-type]
    found = detector(np.zeros((416, 832, 3), np.uint8), 0.3, detector.vehicle_class_ids)
    # input box: 216 - 32, 216 - 48, 216 + 64, 216 + 80 -> minus padding, divided by the scale
    np.testing.assert_allclose(found.boxes, [[368.0, 128.0, 560.0, 384.0]], atol=0.1)
    assert found.class_ids.tolist() == [2]  # the airplane duplicate of one vehicle is dropped
    assert session.inputs[0].shape == (1, 3, 416, 416)
    assert abs(float(session.inputs[0][0, 0, 0, 0]) - 114 / 255) < 1e-6  # grey padding, scaled to 0..1


def test_nothing_found_is_an_empty_array_of_the_right_shape() -> None:
    detector = NanoDetDetector(SPEC, FakeSession(2, 0, (1, 1, 1, 1)))  # type: ignore[arg-type]
    found = detector(np.zeros((100, 100, 3), np.uint8), 0.95, detector.vehicle_class_ids)
    assert len(found) == 0 and found.boxes.shape == (0, 4) and found.boxes.dtype == np.float32


def test_class_filter_uses_detector_names() -> None:
    detector = NanoDetDetector(SPEC, FakeSession(2, 0, (1, 1, 1, 1)))  # type: ignore[arg-type]
    assert detector.class_ids(["truck", "car"]) == [7, 2]


def test_the_first_head_that_finds_a_vehicle_answers() -> None:
    cell = 13 * 26 + 13
    image = np.zeros((416, 416, 3), np.uint8)
    # The shipped detector's COCO head names no vehicles (bench.detection: as a fallback it boxed more track than
    # cars); a detector whose second head does falls back on it.
    coco_vehicles = structs.replace(TWO_HEADS.heads[1], vehicle_classes=["car", "truck"])
    spec = structs.replace(TWO_HEADS, heads=[TWO_HEADS.heads[0], coco_vehicles])
    confident = NanoDetDetector(spec, FakeSession(2, cell, (2, 3, 4, 5), vehicle_score=0.9))  # type: ignore[arg-type]
    assert confident.labels[:2] == ["vehicle", "person"]
    found = confident(image, None, confident.vehicle_class_ids)
    assert [confident.labels[i] for i in found.class_ids] == ["vehicle"]
    np.testing.assert_allclose(found.boxes, [[200.0, 200.0, 232.0, 232.0]], atol=0.1)  # the vehicle head's box
    # The vehicle head finds nothing: COCO's vehicle classes answer, with their own box and label.
    fallback = NanoDetDetector(spec, FakeSession(2, cell, (2, 3, 4, 5), vehicle_score=0.1))  # type: ignore[arg-type]
    found = fallback(image, None, fallback.vehicle_class_ids)
    assert [fallback.labels[i] for i in found.class_ids] == ["car"]
    np.testing.assert_allclose(found.boxes, [[184.0, 168.0, 280.0, 296.0]], atol=0.1)
    # Asking for one head's classes only never falls back on the other.
    assert len(fallback(image, None, fallback.class_ids(["vehicle"]))) == 0
    # The shipped detector does not fall back: the COCO head answers only when asked for its classes by name.
    shipped = NanoDetDetector(TWO_HEADS, FakeSession(2, cell, (2, 3, 4, 5), vehicle_score=0.1))  # type: ignore[arg-type]
    assert len(shipped(image, None, shipped.vehicle_class_ids)) == 0
    assert [shipped.labels[i] for i in shipped(image, None, shipped.class_ids(["car"])).class_ids] == ["car"]


def test_a_head_finding_nothing_sure_reports_its_best_box_from_its_lone_score_alone() -> None:
    cell, far_cell = 13 * 26 + 13, 3 * 26 + 3
    image = np.zeros((416, 416, 3), np.uint8)
    lone_score, min_score = TWO_HEADS.heads[0].lone_score, TWO_HEADS.heads[0].min_score
    assert lone_score is not None and lone_score < min_score
    between = (lone_score + min_score) / 2
    # Two boxes between the head's lone score and its min_score, apart: the better one alone.
    unsure = NanoDetDetector(TWO_HEADS, FakeSession(2, cell, (2, 3, 4, 5), between, far_cell))  # type: ignore[arg-type]
    found = unsure(image, None, unsure.vehicle_class_ids)
    np.testing.assert_allclose(found.scores, [between], atol=1e-6)
    np.testing.assert_allclose(found.boxes, [[200.0, 200.0, 232.0, 232.0]], atol=0.1)
    # Not for a score the caller gives, nor where the caller (tiles) says no.
    assert len(unsure(image, between + 0.001, unsure.vehicle_class_ids)) == 0
    assert len(unsure(image, None, unsure.vehicle_class_ids, lone=False)) == 0
    # Below the lone score: nothing.
    faint = NanoDetDetector(TWO_HEADS, FakeSession(2, cell, (2, 3, 4, 5), lone_score - 0.02))  # type: ignore[arg-type]
    assert len(faint(image, None, faint.vehicle_class_ids)) == 0
    # A sure box and an unsure one: the sure one only, as without a lone score.
    sure = NanoDetDetector(TWO_HEADS, FakeSession(2, cell, (2, 3, 4, 5), min_score + 0.005, far_cell))  # type: ignore[arg-type]
    np.testing.assert_allclose(sure(image, None, sure.vehicle_class_ids).scores, [min_score + 0.005], atol=1e-6)


YOLO_SPEC = msgspec.convert({
    "task": "detect", "name": "yolo-fake", "version": "0", "file": "x.onnx", "sha256": "0",
    "source": {"registry": "local", "package": "x.pt", "version": "0", "files": ["x.pt"], "licence": "-"},
    "input": {"name": "images", "height": 64, "width": 64, "channel_order": "rgb", "scale": 1 / 255,
              "mean": [0, 0, 0], "std": [1, 1, 1], "resize": "letterbox"},
    "decoder": "yolo",
    "heads": [{"score_outputs": ["output0"], "box_outputs": ["output0"], "classes": ["car", "person"],
               "vehicle_classes": ["car"], "min_score": 0.25}],
}, DetectorSpec)


class FakeYoloSession:
    """Three anchors (cx, cy, w, h, car score, person score) in a 64x64 input."""

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        anchors = np.array([
            [32, 16, 20, 10, 0.9, 0.1],   # a car
            [33, 16, 20, 10, 0.6, 0.0],   # the same car, less sure: suppressed
            [10, 50, 8, 8, 0.4, 0.7],     # a person that also scores as a car: it stands for a person
        ], np.float32)
        return [anchors.T[None]]


def test_yolo_outputs_decode_to_one_class_per_anchor() -> None:
    detector = build_detector(YOLO_SPEC, FakeYoloSession())  # type: ignore[arg-type]
    assert isinstance(detector, YoloDetector) and detector.vehicle_class_ids == [0]
    # A 128x64 image letterboxes to 64x32 at scale 0.5, padded 16 px top and bottom.
    found = detector(np.zeros((64, 128, 3), np.uint8), None, detector.vehicle_class_ids)
    np.testing.assert_allclose(found.boxes, [[44.0, 0.0, 84.0, 10.0]], atol=0.01)
    np.testing.assert_allclose(found.scores, [0.9])
    everything = detector(np.zeros((64, 128, 3), np.uint8), None, [0, 1])
    assert [detector.labels[i] for i in everything.class_ids] == ["car", "person"]


def test_a_head_that_drops_nested_boxes_reports_no_piece_of_a_car() -> None:
    class CarAndNose:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [np.array([[32, 32, 40, 20, 0.9, 0.0], [46, 32, 10, 16, 0.7, 0.0]], np.float32).T[None]]

    image = np.zeros((64, 64, 3), np.uint8)
    keeping = build_detector(YOLO_SPEC, CarAndNose())  # type: ignore[arg-type]
    np.testing.assert_allclose(keeping(image, None, [0]).scores, [0.9, 0.7])
    dropping = structs.replace(YOLO_SPEC, heads=[structs.replace(YOLO_SPEC.heads[0], drop_nested=0.8)])
    np.testing.assert_allclose(build_detector(dropping, CarAndNose())(image, None, [0]).scores, [0.9])  # type: ignore[arg-type]


class BlobDetector:
    """Boxes the white blobs of whatever image it is given, as a detector with a
    200 px wide input would: blobs under 10 px wide at that size are not seen."""

    def __init__(self) -> None:
        self.lone: list[bool] = []
        """Per call, whether a lone box was allowed."""

    def first_head_ids(self, class_ids: list[int]) -> list[int]:
        return class_ids

    def __call__(self, image: np.ndarray, min_score: float | None, class_ids: list[int], lone: bool = True
                 ) -> Detections:
        self.lone.append(lone)
        count, _, stats, _ = cv2.connectedComponentsWithStats((image[:, :, 0] > 128).astype(np.uint8))
        seen = [s for s in stats[1:count] if s[2] * 200 / image.shape[1] >= 10]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in seen], np.float32).reshape(-1, 4)
        return Detections(boxes, np.full(len(boxes), 0.9, np.float32), np.zeros(len(boxes), np.int64))


def test_tiles_cover_the_photo_with_overlapping_neighbours() -> None:
    tiles = tile_bounds(400, 200, 2)
    assert tiles[0][:2] == (0, 0) and tiles[-1][2:] == (400, 200)
    assert tiles[1][0] < tiles[0][2]  # neighbours overlap
    assert tile_bounds(401, 199, 3)[-1][2:] == (401, 199)  # the last tiles reach the edges, whatever the rounding


def test_tiles_add_the_small_cars_the_whole_photo_misses_once_each() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    image[60:120, 20:170] = 255   # a near car, 150 px wide: the whole photo finds it
    image[90:100, 192:208] = 255  # a far car, 16 px wide (8 at the detector's input), where the tiles overlap
    detector = BlobDetector()
    alone = detect_tiled(detector, image, None, [0], 1)  # type: ignore[arg-type]
    assert alone.boxes.tolist() == [[20, 60, 170, 120]]
    detector.lone.clear()
    tiled = detect_tiled(detector, image, None, [0], 2)  # type: ignore[arg-type]
    assert detector.lone == [True, False, False, False, False]  # the photo may have a lone box; its 4 tiles not
    # The far car is added once, in photo pixels; the near car, wider than a quarter of the photo, is not boxed again.
    assert sorted(tiled.boxes.tolist()) == [[20, 60, 170, 120], [192, 90, 208, 100]]
    # A photo too small for tiles of any use is searched whole: the 2 px car its tiles would show is not looked for.
    tiny = np.zeros((60, 60, 3), np.uint8)
    tiny[10:12, 10:12] = 255
    assert len(detect_tiled(detector, tiny, None, [0], 2)) == 0  # type: ignore[arg-type]
