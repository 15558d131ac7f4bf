"""Detect stage: vehicles in a BGR image, boxes in original-image pixels.

Two graph families, both letterboxed, decoded by the manifest's `decoder`:
- nanodet-gfl: heads predict, for every cell of each stride's grid, class
  scores (sigmoid already applied in these exports; 80 COCO classes, or the
  one "vehicle" class of the project's retrained head) and, per box side, a
  discrete distribution over 0..reg_max cell-lengths (Generalized Focal
  Loss). The box side is the distribution's expectation times the stride,
  measured from the cell centre.
- yolo: ultralytics YOLOv8/11 exports (`build.py import-yolo`): one output
  (1, 4 + classes, anchors), each anchor's box centre, width and height in
  input pixels, then its class scores (sigmoid applied).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from sidecar.inference.manifest import DetectorSpec
from sidecar.inference.session import OrtSession
from sidecar.stages.preprocess import letterbox, to_tensor

NMS_IOU = 0.5
# After per-class NMS, one vehicle can still carry two labels (COCO detectors
# call open-wheel cars both "car" and "airplane"); boxes of different classes
# overlapping this much are one vehicle, reported once under its best label.
CROSS_CLASS_IOU = 0.7
# A box around a better-scoring one is dropped as loose only when the inner
# box scores this much more: a piece of a car can score within a hair of the
# whole car around it (0.70 against 0.70 on one F1 image), and then neither
# is clearly the car. The loose boxes on the 30 F1 reference photos scored
# 0.04-0.64 below the car inside them (at enrolment's 0.2).
LOOSE_BOX_SCORE_GAP = 0.02


@dataclass(frozen=True)
class Detections:
    """N detections, best first: boxes (N, 4) float32 [x1, y1, x2, y2] in
    original-image pixels, scores (N,) float32, class_ids (N,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def reported(self, i: int) -> tuple[list[float], float]:
        """Detection i as the protocol reports it: box to 0.1 px, score to 4 decimals."""
        return self.boxes[i].astype(float).round(1).tolist(), round(float(self.scores[i]), 4)


def grid_centres(side_cells: int, stride: int) -> np.ndarray:
    """(cells², 2) x, y centres of a square grid, row-major like the head's outputs."""
    index = np.arange(side_cells, dtype=np.float32)
    ys, xs = np.meshgrid(index, index, indexing="ij")
    return (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride


def decode_gfl(distributions: np.ndarray, centres: np.ndarray, stride: int, reg_max: int) -> np.ndarray:
    """(N, 4*(reg_max+1)) logits and (N, 2) centres -> (N, 4) x1, y1, x2, y2."""
    logits = distributions.reshape(-1, 4, reg_max + 1)
    logits = logits - logits.max(axis=2, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=2, keepdims=True)
    distances = (weights @ np.arange(reg_max + 1, dtype=np.float32)) * stride  # left, top, right, bottom
    return np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], axis=1)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) [x1, y1, x2, y2] -> (N,) areas."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) areas of overlap."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    inter = box_intersection(a, b)
    return inter / np.maximum(box_area(a)[:, None] + box_area(b)[None, :] - inter, 1e-9)


def drop_nested(boxes: np.ndarray, scores: np.ndarray, share: float) -> np.ndarray:
    """Indices kept of boxes ordered best first, where two boxes are nested
    (`share` or more of one lies inside the other): a box inside a kept,
    better-scoring one is a piece of that car (its nose, its rear wing) and
    goes; a box around a kept one scoring clearly better (by more than
    LOOSE_BOX_SCORE_GAP) is loose around that car, mostly track, and goes.
    A piece scoring about as well as the whole car keeps both: neither is
    clearly the car."""
    inside = box_intersection(boxes, boxes) / np.maximum(box_area(boxes), 1e-9)[:, None]  # [i, j]: share of i in j
    keep: list[int] = []
    for i in range(len(boxes)):
        piece = inside[i, keep] >= share
        loose = (inside[keep, i] >= share) & (scores[keep] - scores[i] > LOOSE_BOX_SCORE_GAP)
        if not (piece.any() or loose.any()):
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[box_iou(boxes[[best]], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Per-class NMS in one pass: offsetting each class's boxes by a distinct
    amount makes boxes of different classes never overlap."""
    if len(boxes) == 0:
        return np.empty(0, np.int64)
    offsets = class_ids.astype(np.float32)[:, None] * (boxes.max() + 1.0)
    return nms(boxes + offsets, scores, iou_threshold)


class Detector(ABC):
    """What every decoder shares: the classes of the graph's heads (class ids
    index `labels`, every head's classes one after the other) and the
    suppression of duplicate boxes."""

    def __init__(self, spec: DetectorSpec, session: OrtSession) -> None:
        if spec.input.resize != "letterbox":
            raise ValueError(f"{spec.name}: detectors letterbox; the manifest says {spec.input.resize}")
        self.spec = spec
        self._session = session
        self._first_id = np.cumsum([0] + [len(head.classes) for head in spec.heads])
        self.labels = [name for head in spec.heads for name in head.classes]
        self.vehicle_class_ids = [int(first) + head.classes.index(c)
                                  for head, first in zip(spec.heads, self._first_id) for c in head.vehicle_classes]

    def _per_head(self, class_ids: list[int]) -> list[tuple[int, int, np.ndarray]]:
        """(head index, its first class id, the head's own ids of `class_ids`) for each head holding any of them."""
        wanted = np.asarray(class_ids, dtype=np.int64)
        split = []
        for index, head in enumerate(self.spec.heads):
            first = int(self._first_id[index])
            mine = wanted[(wanted >= first) & (wanted < first + len(head.classes))] - first
            if mine.size:
                split.append((index, first, mine))
        return split

    def first_head_ids(self, class_ids: list[int]) -> list[int]:
        """Those of `class_ids` in the first head holding any of them: the head tiles are searched with."""
        split = self._per_head(class_ids)
        return (split[0][2] + split[0][1]).tolist() if split else []

    def class_ids(self, names: list[str]) -> list[int]:
        unknown = [n for n in names if n not in self.labels]
        if unknown:
            raise KeyError(unknown)
        return [self.labels.index(n) for n in names]

    def __call__(self, image: np.ndarray, min_score: float | None, class_ids: list[int], lone: bool = True
                 ) -> Detections:
        """Detections of `class_ids` scoring at least `min_score` (None: each head's calibrated score,
        and, where `lone`, its best box alone from the head's `lone_score` when nothing reaches it)."""
        height, width = image.shape[:2]
        fitted, placement = letterbox(image, self.spec.input.width, self.spec.input.height)
        outputs = self._session.run(self._output_names(), {self.spec.input.name: to_tensor([fitted], self.spec.input)})
        for index, first, mine in self._per_head(class_ids):
            head = self.spec.heads[index]
            floor = head.min_score if min_score is None else min_score
            lone_score = head.lone_score if min_score is None and lone else None
            lowest = floor if lone_score is None else min(floor, lone_score)
            boxes, scores, labels = self._decode(outputs, index, mine, lowest)
            # Suppressed in the model's input space, then clipped to the image, as YOLO and NanoDet do.
            keep = self._suppress(boxes, scores, labels, head.drop_nested)
            # Suppression drops a box only for a better-scoring one: those from `floor` are what it keeps at `floor`.
            sure = keep[scores[keep] >= floor]
            keep = sure if len(sure) else keep[:1]
            found = placement.to_image(boxes[keep], width, height).astype(np.float32)
            visible = (found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])
            if visible.any():
                return Detections(found[visible], scores[keep][visible], labels[keep][visible] + first)
        return Detections.empty()

    @abstractmethod
    def _output_names(self) -> list[str]:
        """The graph outputs to run, in the order `_decode` reads them."""

    @abstractmethod
    def _decode(self, outputs: list[np.ndarray], head: int, wanted: np.ndarray, min_score: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input-space boxes, scores and head class ids of every anchor scoring at least `min_score`."""

    @staticmethod
    def _suppress(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, nested: float | None) -> np.ndarray:
        """Indices kept, best first: per-class NMS, then one label per vehicle,
        then (when the head says so) one of each pair of nested boxes."""
        keep = batched_nms(boxes, scores, labels, NMS_IOU)
        keep = keep[nms(boxes[keep], scores[keep], CROSS_CLASS_IOU)]
        return keep if nested is None else keep[drop_nested(boxes[keep], scores[keep], nested)]


class NanoDetDetector(Detector):
    """Decodes a NanoDet graph's heads in order (DetectorSpec.heads): the first
    head that finds a vehicle answers."""

    def __init__(self, spec: DetectorSpec, session: OrtSession) -> None:
        super().__init__(spec, session)
        self._centres = [grid_centres(spec.input.width // s, s) for s in spec.strides]

    def _output_names(self) -> list[str]:
        return [name for head in self.spec.heads for pair in zip(head.score_outputs, head.box_outputs) for name in pair]

    def _decode(self, outputs: list[np.ndarray], head: int, wanted: np.ndarray, min_score: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        levels = len(self.spec.strides)
        mine = outputs[2 * levels * head : 2 * levels * (head + 1)]
        boxes, scores, labels = [np.empty((0, 4), np.float32)], [np.empty(0, np.float32)], [np.empty(0, np.int64)]
        for level, stride in enumerate(self.spec.strides):
            class_scores = mine[2 * level][0][:, wanted]
            cells, which = np.nonzero(class_scores >= min_score)
            if cells.size == 0:
                continue
            boxes.append(decode_gfl(mine[2 * level + 1][0][cells], self._centres[level][cells], stride, self.spec.reg_max))
            scores.append(class_scores[cells, which])
            labels.append(wanted[which])
        return np.concatenate(boxes), np.concatenate(scores).astype(np.float32), np.concatenate(labels)


class YoloDetector(Detector):
    """Decodes an ultralytics YOLOv8/11 export: one head, one output."""

    def __init__(self, spec: DetectorSpec, session: OrtSession) -> None:
        super().__init__(spec, session)
        if len(spec.heads) != 1 or len(spec.heads[0].score_outputs) != 1:
            raise ValueError(f"{spec.name}: a YOLO detector has one head with one output")

    def _output_names(self) -> list[str]:
        return self.spec.heads[0].score_outputs

    def _decode(self, outputs: list[np.ndarray], head: int, wanted: np.ndarray, min_score: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        predictions = outputs[0][0]  # (4 + classes, anchors)
        # YOLO trains each anchor for one object: its best class is the one it stands for, as ultralytics decodes.
        best, scores = predictions[4:].argmax(axis=0), predictions[4:].max(axis=0)
        anchors = np.nonzero((scores >= min_score) & np.isin(best, wanted))[0]
        cx, cy, w, h = predictions[:4, anchors]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        return boxes, scores[anchors].astype(np.float32), best[anchors].astype(np.int64)


DECODERS: dict[str, type[Detector]] = {"nanodet-gfl": NanoDetDetector, "yolo": YoloDetector}


def build_detector(spec: DetectorSpec, session: OrtSession) -> Detector:
    return DECODERS[spec.decoder](spec, session)


# Tiling: each tile overlaps its neighbours by this share, so a small car cut
# by one tile's edge lies whole in the next.
TILE_OVERLAP = 0.25
TILE_EDGE_PX = 4
"""A tile's box this close to an edge it shares with another tile is a car cut by it."""
TILE_SMALL_WIDTH = 0.25
"""Tiles add only boxes narrower than this share of the photo: larger cars are the whole photo's to find,
and what a tile boxes of them is a piece (`python -m bench.tiling`)."""
TILE_MIN_SIDE = 32
"""Photos whose tiles would be smaller than this each way are not tiled: there is nothing small left to find."""
TILE_ON_FOUND = 0.3
"""A tile's box with this share of it inside a box the whole photo found is a piece of that vehicle."""


def tile_bounds(width: int, height: int, grid: int) -> list[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) of a grid x grid of tiles covering the photo, neighbours overlapping by TILE_OVERLAP."""

    def spans(length: int) -> list[tuple[int, int]]:
        size = length / (grid - (grid - 1) * TILE_OVERLAP)
        starts = [round(g * size * (1 - TILE_OVERLAP)) for g in range(grid)]
        return [(start, length if g == grid - 1 else round(start + size)) for g, start in enumerate(starts)]

    return [(x1, y1, x2, y2) for y1, y2 in spans(height) for x1, x2 in spans(width)]


def detect_tiled(detector: Detector, image: np.ndarray, min_score: float | None, class_ids: list[int], grid: int
                 ) -> Detections:
    """The photo's detections plus the small vehicles found in a grid x grid of
    overlapping tiles, each seen by the detector at its full input size (a car a
    twentieth of a photo's width is 20 px at 416). Grid 1: the photo alone.
    Tiles are searched by the first head only: a generic fallback head boxes
    loosely or elsewhere in a tile as it does in the photo; and without a lone
    box (DetectorHead.lone_score): most tiles hold no car."""
    found = detector(image, min_score, class_ids)
    height, width = image.shape[:2]
    if grid <= 1 or min(width, height) < grid * TILE_MIN_SIDE:
        return found
    tile_ids = detector.first_head_ids(class_ids)
    if not tile_ids:
        return found
    boxes, scores, labels = [], [], []
    for x1, y1, x2, y2 in tile_bounds(width, height, grid):
        part = detector(image[y1:y2, x1:x2], min_score, tile_ids, lone=False)
        placed = part.boxes + np.array([x1, y1, x1, y1], np.float32)
        cut = (((placed[:, 0] <= x1 + TILE_EDGE_PX) & (x1 > 0)) | ((placed[:, 2] >= x2 - TILE_EDGE_PX) & (x2 < width))
               | ((placed[:, 1] <= y1 + TILE_EDGE_PX) & (y1 > 0)) | ((placed[:, 3] >= y2 - TILE_EDGE_PX) & (y2 < height)))
        small = placed[:, 2] - placed[:, 0] < TILE_SMALL_WIDTH * width
        keep = ~cut & small
        boxes.append(placed[keep])
        scores.append(part.scores[keep])
        labels.append(part.class_ids[keep])
    extra = np.concatenate(boxes)
    if len(extra) and len(found):
        on_found = box_intersection(extra, found.boxes) / np.maximum(box_area(extra), 1e-9)[:, None]
        new = on_found.max(axis=1) < TILE_ON_FOUND
    else:
        new = np.ones(len(extra), bool)
    extra, extra_scores, extra_labels = extra[new], np.concatenate(scores)[new], np.concatenate(labels)[new]
    # The same small car seen by two overlapping tiles: once.
    once = nms(extra, extra_scores, NMS_IOU)
    all_boxes = np.concatenate([found.boxes, extra[once]])
    all_scores = np.concatenate([found.scores, extra_scores[once]])
    order = np.argsort(-all_scores, kind="stable")
    return Detections(all_boxes[order], all_scores[order], np.concatenate([found.class_ids, extra_labels[once]])[order])
