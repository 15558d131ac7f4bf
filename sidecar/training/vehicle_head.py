"""Fine-tuning NanoDet's head to find race cars: one "vehicle" class and a
retrained box regression, on the frozen COCO backbone and PAN.

NanoDet-m's head is, at each stride, a 3x3 convolution (128 -> 128 features,
LeakyReLU) on the PAN's map, then a 1x1 convolution from those features to
80 class scores and 4 x 11 box-distribution logits. The COCO classes split a
race car between "car", "airplane" and "person", with low scores; the last
layer is what this module relearns, as NanoDet itself trains it (ATSS
assignment, Quality Focal Loss on the IoU of the predicted box, Distribution
Focal Loss and GIoU on the box sides), and at strides 16 and 32, where long
cars are assigned, the 3x3 convolution too: the COCO features cut an
open-wheel car into front and rear halves, which no last layer undoes.
Everything before them stays frozen, which makes training cheap: each
augmented image is run through the ONNX model once, its per-cell features
(and the PAN maps at strides 16 and 32, as float16) kept, and the head
trains on them in minutes.

The result is grafted into the ONNX graph beside the COCO head, as new
convolutions per stride with outputs `vehicle_s8`/`vehicle_boxes_s8`..., so
the sidecar's detect stage decodes it exactly like the COCO head, and can
fall back on that head in the same run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from sidecar.stages.detect import box_area, box_iou, decode_gfl, grid_centres
from sidecar.inference.manifest import InputSpec
from sidecar.inference.session import OrtSession
from sidecar.stages.preprocess import LETTERBOX_FILL, letterbox, resize_by, to_tensor

log = logging.getLogger(__name__)

SIDE = 416
STRIDES = (8, 16, 32)
REG_MAX = 10
FEATURES = 128
# NanoDet-m's graph as converted by models/convert_nanodet.py: per stride, the
# 128-feature tensor that feeds the head's last 1x1 convolution.
FEATURE_TENSORS = ("t104_0", "t128_0", "t118_0")
HEAD_CONVS = ("n105_Conv", "n129_Conv", "n120_Conv")
# Before those features, each stride's head is one 3x3 convolution (then LeakyReLU) on the
# PAN's 128-channel map, zero-padded by one cell: the padded maps and those convolutions.
PADDED_MAPS = ("t102_0", "t119_0", "t116_0")
HEAD_3X3_CONVS = ("n103_Conv", "n127_Conv", "n117_Conv")
LEAKY_SLOPE = 0.1
COCO_CLASSES = 80
# ATSS as NanoDet-m trains: 9 nearest cells per level, square anchors 5 strides wide.
ATSS_TOP_K = 9
ANCHOR_STRIDES = 5.0


@dataclass(frozen=True)
class HeadRecipe:
    canvases_per_image: int = 3
    """Placements of each training image: the plain letterbox, then shrunk and zoomed in turn."""
    min_fill: float = 0.2
    """Smallest share of the canvas width a shrunk image takes: small, distant cars."""
    zoom_margin: tuple[float, float] = (-0.1, 0.25)
    """Zoomed copies crop the image to the first box grown by this share of its size on each side
    (negative: the car cut by the frame), as tight close-ups and vehicle crops frame it."""
    random_negatives: int = 384
    """Background cells kept per canvas besides positives and hard negatives, reweighted to stand for all."""
    iterations: int = 600
    batch_canvases: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    hidden: int = 128
    """Width of the head's residual branch (0: the linear layer alone)."""
    retrained_3x3: tuple[int, ...] = (1, 2)
    """Levels (indices into STRIDES) whose head 3x3 convolution is retrained too (a copy: the COCO
    head keeps its own), so the features themselves learn shapes the COCO ones miss (long
    open-wheel cars): strides 16 and 32, whose anchors (80 and 160 pixels) take the long cars."""
    learning_rate_3x3: float = 1e-3
    """Slower than the last layer's: the convolution starts from the COCO weights (3e-4 measured worse)."""
    ignore_coco_score: float = 0.25
    """Cells the COCO head calls a vehicle this surely, away from every labelled box, are unlabelled
    vehicles (motor-show backgrounds are full of cars): neither positive nor negative."""
    seed: int = 0
    threads: int = 2


@dataclass
class CellSamples:
    """Training cells of many canvases, concatenated."""

    features: list[np.ndarray] = field(default_factory=list)  # (N, 128) float32
    level: list[np.ndarray] = field(default_factory=list)  # (N,) stride index
    centres: list[np.ndarray] = field(default_factory=list)  # (N, 2)
    targets: list[np.ndarray] = field(default_factory=list)  # (N, 4) assigned box, NaN for background
    weights: list[np.ndarray] = field(default_factory=list)  # (N,) loss weight, 0 = ignored
    box_weights: list[np.ndarray] = field(default_factory=list)  # (N,) 0 where the box is too loose to learn sides from
    canvas: list[np.ndarray] = field(default_factory=list)  # (N,) canvas index
    maps: dict[int, list[np.ndarray]] = field(default_factory=dict)
    """Per map level, each canvas's padded PAN map (H + 2, W + 2, 128) as float16."""

    def add(self, maps: dict[int, np.ndarray], **arrays: np.ndarray) -> None:
        for name, value in arrays.items():
            getattr(self, name).append(value)
        for level, padded in maps.items():
            self.maps.setdefault(level, []).append(padded.astype(np.float16))

    def stacked_maps(self) -> dict[int, torch.Tensor]:
        """Per map level, the canvases' maps as one (canvases, H + 2, W + 2, 128) tensor."""
        for maps in self.maps.values():
            if maps[0].ndim == 3:  # per canvas, not stacked yet
                _join_in_place(maps, new_axis=True)
        return {level: torch.from_numpy(maps[0]) for level, maps in self.maps.items()}

    def stacked(self) -> dict[str, torch.Tensor]:
        """Each field's cells of every canvas as one tensor."""
        return {name: torch.from_numpy(_join_in_place(getattr(self, name), new_axis=False)) for name in
                ("features", "level", "centres", "targets", "weights", "box_weights", "canvas")}


def _join_in_place(parts: list[np.ndarray], new_axis: bool) -> np.ndarray:
    """`parts` concatenated (or stacked along a new first axis), leaving the list holding the
    result alone. Each part is let go once copied, so memory peaks at the result and one part, not
    at twice the data: 10,000 canvases' cells and maps are gigabytes each."""
    if len(parts) == 1 and not new_axis:
        return parts[0]
    rows = len(parts) if new_axis else sum(len(part) for part in parts)
    joined = np.empty((rows, *parts[0].shape[0 if new_axis else 1 :]), parts[0].dtype)
    end = rows
    while parts:
        part = parts.pop()
        start = end - (1 if new_axis else len(part))
        joined[start:end] = part
        end = start
    parts.append(joined)
    return joined


def with_feature_outputs(model: onnx.ModelProto, map_levels: Sequence[int]) -> onnx.ModelProto:
    """A copy of the NanoDet graph that also outputs each stride's head features, and the padded PAN
    maps of `map_levels` (the levels whose 3x3 convolution is retrained)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in list(FEATURE_TENSORS) + [PADDED_MAPS[level] for level in map_levels]:
        copy.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy


class FeatureExtractor:
    """Runs the COCO NanoDet once per canvas: per-cell features, COCO scores and decoded boxes."""

    def __init__(self, model: onnx.ModelProto, input_spec: InputSpec, threads: int,
                 map_levels: Sequence[int] = ()) -> None:
        self._input = input_spec
        self._session = OrtSession(with_feature_outputs(model, map_levels).SerializeToString(), threads)
        self._map_levels = tuple(map_levels)
        self._outputs = ([f"{kind}_s{s}" for s in STRIDES for kind in ("scores", "boxes")] + list(FEATURE_TENSORS)
                         + [PADDED_MAPS[level] for level in map_levels])
        self.centres = np.concatenate([grid_centres(SIDE // s, s) for s in STRIDES])
        self.level = np.concatenate([np.full((SIDE // s) ** 2, i) for i, s in enumerate(STRIDES)])
        self.stride = np.asarray(STRIDES, np.float32)[self.level]

    def __call__(self, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        """BGR canvas (416, 416, 3) -> features (cells, 128), COCO scores (cells, 80), boxes (cells, 4)
        and the padded PAN map of each of its map levels, channels last (H + 2, W + 2, 128): a cell's
        features then lie side by side, so gathering a cell's neighbourhood copies only those."""
        # Normalised exactly as the detect stage feeds the model at run time.
        out = self._session.run(self._outputs, {self._input.name: to_tensor([canvas], self._input)})
        features = np.concatenate([out[6 + i][0].reshape(FEATURES, -1).T for i in range(len(STRIDES))])
        scores = np.concatenate([out[2 * i][0] for i in range(len(STRIDES))])
        offset = 0
        boxes = []
        for i, stride in enumerate(STRIDES):
            cells = (SIDE // stride) ** 2
            boxes.append(decode_gfl(out[2 * i + 1][0], self.centres[offset : offset + cells], stride, REG_MAX))
            offset += cells
        maps = {level: np.ascontiguousarray(out[9 + i][0].transpose(1, 2, 0))
                for i, level in enumerate(self._map_levels)}
        return features, scores, np.concatenate(boxes), maps


def atss_assign(boxes: np.ndarray, centres: np.ndarray, level: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """Adaptive Training Sample Selection (Zhang et al. 2020): for each box,
    the 9 cells per level nearest its centre are candidates; those whose
    anchor's IoU exceeds the candidates' mean + std, with the cell centre
    inside the box, are positives. Returns each cell's box index, -1 for background."""
    assigned = np.full(len(centres), -1)
    best = np.zeros(len(centres))
    half = stride[:, None] * ANCHOR_STRIDES / 2
    anchors = np.concatenate([centres - half, centres + half], axis=1)
    for index, box in enumerate(boxes):
        box_centre = (box[:2] + box[2:]) / 2
        distance = np.linalg.norm(centres - box_centre, axis=1)
        candidates = np.concatenate([np.flatnonzero(level == i)[np.argsort(distance[level == i])[:ATSS_TOP_K]]
                                     for i in range(len(STRIDES))])
        overlap = box_iou(anchors[candidates], box[None])[:, 0]
        threshold = overlap.mean() + overlap.std()
        inside = ((centres[candidates] > box[:2]) & (centres[candidates] < box[2:])).all(axis=1)
        chosen = candidates[(overlap >= threshold) & inside]
        better = overlap[(overlap >= threshold) & inside] > best[chosen]
        assigned[chosen[better]] = index
        best[chosen[better]] = overlap[(overlap >= threshold) & inside][better]
    return assigned


def place(image: np.ndarray, boxes: np.ndarray, fill: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image letterboxed into the canvas at `fill` of its largest fitting size, at a random
    position, flipped half the time (a mirrored car is still a car): canvas and boxes in it."""
    h, w = image.shape[:2]
    scale = min(SIDE / w, SIDE / h) * fill
    resized = resize_by(image, scale)
    new_h, new_w = resized.shape[:2]
    x, y = int(rng.integers(0, SIDE - new_w + 1)), int(rng.integers(0, SIDE - new_h + 1))
    canvas = np.full((SIDE, SIDE, 3), LETTERBOX_FILL, np.uint8)
    canvas[y : y + new_h, x : x + new_w] = resized
    placed = boxes * scale + np.asarray([x, y, x, y], np.float32)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1].copy()
        placed = np.stack([SIDE - placed[:, 2], placed[:, 1], SIDE - placed[:, 0], placed[:, 3]], axis=1)
    return canvas, placed.astype(np.float32)


def zoom(image: np.ndarray, boxes: np.ndarray, margin: tuple[float, float], rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray]:
    """The image cropped around its first box, each side moved out (or in) by a random share of the
    box's size; boxes clipped to the crop, those left with under a third of their area dropped.
    An image without boxes (a negative) is cropped around a random third to half of it."""
    height, width = image.shape[:2]
    if len(boxes):
        x1, y1, x2, y2 = boxes[0]
    else:
        window_width, window_height = width * rng.uniform(0.33, 0.5), height * rng.uniform(0.33, 0.5)
        x1, y1 = rng.uniform(0, width - window_width), rng.uniform(0, height - window_height)
        x2, y2 = x1 + window_width, y1 + window_height
    grow = rng.uniform(*margin, size=4) * np.asarray([x2 - x1, y2 - y1, x2 - x1, y2 - y1])
    left, top = int(np.clip(x1 - grow[0], 0, width - 2)), int(np.clip(y1 - grow[1], 0, height - 2))
    right, bottom = int(np.clip(x2 + grow[2], left + 2, width)), int(np.clip(y2 + grow[3], top + 2, height))
    clipped = np.clip(boxes - np.asarray([left, top, left, top], np.float32), 0,
                      np.asarray([right - left, bottom - top] * 2, np.float32))
    kept = box_area(clipped) >= box_area(boxes) / 3
    return image[top:bottom, left:right], clipped[kept].astype(np.float32)


def collect(
    labelled: Iterable[tuple[np.ndarray, np.ndarray, bool]],
    extractor: FeatureExtractor,
    vehicle_class_ids: Sequence[int],
    recipe: HeadRecipe,
) -> CellSamples:
    """Training cells from labelled images, each (BGR image, its (N, 4) boxes, whether it is a
    crop), with all its vehicles boxed or its unlabelled vehicles left to the ignore rule: every
    positive, every cell the COCO head scores as a vehicle (the hard negatives), and a reweighted
    random share of the rest. `labelled` may be drawn as it goes: only the cells are kept.

    Images marked as crops (one vehicle boxed by the whole frame, its margins loose) are only
    letterboxed and zoomed, never shrunk onto the grey canvas: a small crop on grey would teach
    that any picture in a picture is a vehicle. They teach the score only: their loose margins
    would teach boxes that take in the road around the car."""
    rng = np.random.default_rng(recipe.seed)
    samples = CellSamples()
    cells = len(extractor.centres)
    canvas_index = 0
    for image, image_boxes, is_crop in labelled:
        for copy in range(recipe.canvases_per_image):
            if copy == 0:  # as the detector sees it at run time
                canvas, fit = letterbox(image, SIDE, SIDE)
                placed = image_boxes * fit.scale + np.asarray([fit.pad_x, fit.pad_y] * 2, np.float32)
            elif copy % 2 and not is_crop:
                canvas, placed = place(image, image_boxes, rng.uniform(recipe.min_fill, 1.0), rng)
            else:
                window, inside = zoom(image, image_boxes, recipe.zoom_margin, rng)
                canvas, placed = place(window, inside, 1.0, rng)
            features, coco_scores, coco_boxes, maps = extractor(canvas)
            assigned = atss_assign(placed, extractor.centres, extractor.level, extractor.stride)
            vehicle_score = coco_scores[:, list(vehicle_class_ids)].max(axis=1)
            overlap = box_iou(coco_boxes, placed).max(axis=1) if len(placed) else np.zeros(cells)
            ignored = (assigned < 0) & (vehicle_score >= recipe.ignore_coco_score) & (overlap < 0.3)
            hard = (assigned < 0) & ~ignored & ((vehicle_score >= 0.05) | (overlap >= 0.3))
            rest = np.flatnonzero((assigned < 0) & ~ignored & ~hard)
            sampled = rng.choice(rest, size=min(recipe.random_negatives, rest.size), replace=False)
            keep = np.concatenate([np.flatnonzero(assigned >= 0), np.flatnonzero(hard), sampled])
            weights = np.ones(len(keep), np.float32)
            weights[len(keep) - sampled.size :] = rest.size / max(sampled.size, 1)
            targets = np.full((len(keep), 4), np.nan, np.float32)
            positive = assigned[keep] >= 0
            targets[positive] = placed[assigned[keep][positive]]
            samples.add(features=features[keep], level=extractor.level[keep], centres=extractor.centres[keep],
                        targets=targets, weights=weights, box_weights=np.full(len(keep), 0.0 if is_crop else 1.0,
                                                                              np.float32),
                        canvas=np.full(len(keep), canvas_index),
                        maps=maps)
            canvas_index += 1
    return samples


class VehicleHead(nn.Module):
    """Per stride, a 1x1 convolution (a linear map per cell) from 128 features to
    1 vehicle logit and 4 x 11 box-distribution logits, plus, when `hidden` > 0, a
    residual branch of two 1x1 convolutions with a ReLU between them: more room
    for shapes the COCO features do not separate linearly (open-wheel cars),
    starting at zero so training begins from the COCO head."""

    def __init__(self, initial: Sequence[tuple[np.ndarray, np.ndarray]], vehicle_class_ids: Sequence[int],
                 hidden: int = 0, initial_3x3: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.branches = nn.ModuleList()
        # A 3x3 convolution evaluated at one cell is a linear map of its 3x3 x 128 neighbourhood.
        self.convs_3x3 = nn.ModuleDict()
        for level, (conv_weight, conv_bias) in (initial_3x3 or {}).items():
            conv = nn.Linear(FEATURES * 9, FEATURES)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.array(conv_weight, np.float32).reshape(FEATURES, -1)))
                conv.bias.copy_(torch.from_numpy(np.array(conv_bias, np.float32)))
            self.convs_3x3[str(level)] = conv
        for coco_weight, coco_bias in initial:  # the COCO layer: (124, 128), (124,)
            weight, bias = np.array(coco_weight, np.float32), np.array(coco_bias, np.float32)
            layer = nn.Linear(FEATURES, 1 + 4 * (REG_MAX + 1))
            with torch.no_grad():
                # Start from the COCO vehicle classes' mean score and the COCO box regression.
                layer.weight[0] = torch.from_numpy(weight[list(vehicle_class_ids)].mean(axis=0))
                layer.bias[0] = float(bias[list(vehicle_class_ids)].mean())
                layer.weight[1:] = torch.from_numpy(weight[COCO_CLASSES:])
                layer.bias[1:] = torch.from_numpy(bias[COCO_CLASSES:])
            self.layers.append(layer)
            if hidden:
                # Built first to last: each layer draws its initial weights from torch's seeded
                # generator in turn, and that order is part of what makes the rebuild byte-identical.
                first = nn.Linear(FEATURES, hidden)
                last = nn.Linear(hidden, 1 + 4 * (REG_MAX + 1))
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
                self.branches.append(nn.Sequential(first, nn.ReLU(), last))

    def cell_features(self, features: torch.Tensor, level: torch.Tensor, canvas: torch.Tensor,
                      centres: torch.Tensor, maps: dict[int, torch.Tensor]) -> torch.Tensor:
        """The features the layers see at each cell: the COCO head's, or at a level whose 3x3
        convolution is retrained, that convolution's (then LeakyReLU) on the cell's neighbourhood
        in its canvas's padded map."""
        if not self.convs_3x3:
            return features
        features = features.clone()
        for key, conv in self.convs_3x3.items():
            mask = level == int(key)
            patches = neighbourhoods(maps[int(key)], canvas[mask], centres[mask], STRIDES[int(key)])
            features[mask] = F.leaky_relu(conv(patches), LEAKY_SLOPE)
        return features

    def forward(self, features: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(features), 1 + 4 * (REG_MAX + 1))
        for i, layer in enumerate(self.layers):
            mask = level == i
            out[mask] = layer(features[mask]) + (self.branches[i](features[mask]) if self.branches else 0)
        return out


def decode_torch(distribution: torch.Tensor, centres: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    probabilities = distribution.reshape(-1, 4, REG_MAX + 1).softmax(dim=2)
    sides = (probabilities * torch.arange(REG_MAX + 1, dtype=torch.float32)).sum(dim=2) * stride[:, None]
    return torch.cat([centres - sides[:, :2], centres + sides[:, 2:]], dim=1)


def iou_and_giou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x1, y1 = torch.maximum(a[:, 0], b[:, 0]), torch.maximum(a[:, 1], b[:, 1])
    x2, y2 = torch.minimum(a[:, 2], b[:, 2]), torch.minimum(a[:, 3], b[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    iou = inter / union.clamp(min=1e-6)
    hull = ((torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0]))
            * (torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])))
    return iou, iou - (hull - union) / hull.clamp(min=1e-6)


def losses(out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Quality Focal Loss on the vehicle score (target: the IoU of the predicted box with its
    assigned box, 0 for background), and for positives Distribution Focal Loss and GIoU loss."""
    stride = torch.tensor(STRIDES, dtype=torch.float32)[batch["level"]]
    positive = ~torch.isnan(batch["targets"][:, 0])
    score = out[:, 0]
    quality = torch.zeros_like(score)
    box_loss = torch.zeros(())
    if positive.any():
        predicted = decode_torch(out[positive, 1:], batch["centres"][positive], stride[positive])
        target = batch["targets"][positive]
        iou, giou = iou_and_giou(predicted, target)
        quality[positive] = iou.detach().clamp(min=0)
        sides = torch.cat([batch["centres"][positive] - target[:, :2], target[:, 2:] - batch["centres"][positive]], 1)
        sides = (sides / stride[positive, None]).clamp(0, REG_MAX - 0.01).reshape(-1)
        left = sides.floor().long()
        logits = out[positive, 1:].reshape(-1, REG_MAX + 1)
        dfl = (F.cross_entropy(logits, left, reduction="none") * (left + 1 - sides)
               + F.cross_entropy(logits, left + 1, reduction="none") * (sides - left))
        weight = quality[positive].detach() * batch["box_weights"][positive]
        box_loss = ((1 - giou) * weight).sum() * 2.0 + (dfl.reshape(-1, 4).mean(1) * weight).sum() * 0.25
    sigma = score.sigmoid()
    qfl = F.binary_cross_entropy_with_logits(score, quality, reduction="none") * (sigma - quality).abs().pow(2)
    normaliser = positive.sum().clamp(min=1)
    return ((qfl * batch["weights"]).sum() + box_loss) / normaliser


def neighbourhoods(maps: torch.Tensor, canvas: torch.Tensor, centres: torch.Tensor, stride: int) -> torch.Tensor:
    """Each cell's 3x3 neighbourhood in its canvas's padded map (canvases, H + 2, W + 2, 128):
    (N, 128 x 9) in the order of a 3x3 convolution's flattened weight (channel, row, column)."""
    x = ((centres[:, 0] - stride / 2) / stride).round().long()
    y = ((centres[:, 1] - stride / 2) / stride).round().long()
    taps = [maps[canvas, y + dy, x + dx] for dy in range(3) for dx in range(3)]  # 9 x (N, 128)
    return torch.stack(taps, dim=2).reshape(len(canvas), -1).float()


def train(samples: CellSamples, initial: Sequence[tuple[np.ndarray, np.ndarray]],
          vehicle_class_ids: Sequence[int], recipe: HeadRecipe,
          initial_3x3: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> VehicleHead:
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    data = samples.stacked()
    maps = samples.stacked_maps()
    missing = set(recipe.retrained_3x3) - set(maps)
    if missing:
        raise ValueError(f"retraining the 3x3 convolutions of levels {sorted(missing)} needs their maps: "
                         "extract with FeatureExtractor(..., map_levels=recipe.retrained_3x3)")
    canvases = int(data["canvas"].max()) + 1
    # Each canvas's cells, ascending: a stable sort split by counts. (torch.nonzero per canvas gives the
    # same lists, but here each result held on to far more memory than its indices: 2,000 canvases took
    # 6.6 GB, and the build was killed at 24 GB.)
    by_canvas = torch.argsort(data["canvas"], stable=True).split(
        torch.bincount(data["canvas"], minlength=canvases).tolist())
    head = VehicleHead(initial, vehicle_class_ids, recipe.hidden,
                       {level: (initial_3x3 or {})[level] for level in recipe.retrained_3x3})
    conv_parameters = list(head.convs_3x3.parameters())
    other_parameters = [p for name, p in head.named_parameters() if not name.startswith("convs_3x3.")]
    optimiser = torch.optim.AdamW([{"params": other_parameters, "lr": recipe.learning_rate},
                                   {"params": conv_parameters, "lr": recipe.learning_rate_3x3}],
                                  weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, recipe.iterations)
    generator = torch.Generator().manual_seed(recipe.seed)
    for step in range(1, recipe.iterations + 1):
        chosen = torch.randperm(canvases, generator=generator)[: recipe.batch_canvases]
        index = torch.cat([by_canvas[i] for i in chosen.tolist()])
        batch = {name: value[index] for name, value in data.items()}
        features = head.cell_features(batch["features"], batch["level"], batch["canvas"], batch["centres"], maps)
        loss = losses(head(features, batch["level"]), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == 1:
            log.info("step %d/%d loss %.4f", step, recipe.iterations, loss.item())
    return head


def _conv_weights(model: onnx.ModelProto, names: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The weights and biases of the graph's convolution nodes of these names."""
    initialisers = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return [(numpy_helper.to_array(initialisers[nodes[name].input[1]]),
             numpy_helper.to_array(initialisers[nodes[name].input[2]])) for name in names]


def coco_head_3x3(model: onnx.ModelProto) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each level's head 3x3 convolution: weights (128, 128, 3, 3) and biases (128,)."""
    return dict(enumerate(_conv_weights(model, HEAD_3X3_CONVS)))


def coco_head(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """The COCO head's last layer per stride: weights (124, 128) and biases (124,)."""
    return [(weight.reshape(-1, FEATURES), bias) for weight, bias in _conv_weights(model, HEAD_CONVS)]


def _conv(graph: onnx.GraphProto, layer: nn.Linear, source: str, name: str, kernel: int = 1) -> str:
    """A linear map of each cell's kernel x kernel neighbourhood (a 1x1: of the cell alone), as a
    convolution node of the graph; returns its output's name."""
    weight = layer.weight.detach().numpy().astype(np.float32)
    graph.initializer.extend([
        numpy_helper.from_array(weight.reshape(len(weight), -1, kernel, kernel), f"{name}_weight"),
        numpy_helper.from_array(layer.bias.detach().numpy().astype(np.float32), f"{name}_bias"),
    ])
    graph.node.append(helper.make_node("Conv", [source, f"{name}_weight", f"{name}_bias"], [name], name=name,
                                       kernel_shape=[kernel, kernel]))
    return name


def graft(model: onnx.ModelProto, head: VehicleHead) -> onnx.ModelProto:
    """The NanoDet graph with the vehicle head beside the COCO one: per stride, new outputs
    `vehicle_s<stride>` (1, cells, 1) sigmoid scores and `vehicle_boxes_s<stride>` (1, cells, 44),
    computed from the same features, so the COCO outputs stay available at no extra cost."""
    grafted = onnx.ModelProto()
    grafted.CopyFrom(model)
    graph = grafted.graph
    boxes_channels = 4 * (REG_MAX + 1)
    layers: list[nn.Linear] = list(head.layers)  # type: ignore[arg-type]
    for index, (layer, stride, features) in enumerate(zip(layers, STRIDES, FEATURE_TENSORS)):
        prefix = f"vehicle_head_s{stride}"
        graph.initializer.extend([
            numpy_helper.from_array(np.asarray([1, 1 + boxes_channels, -1], np.int64), f"{prefix}_shape"),
            numpy_helper.from_array(np.asarray([1, boxes_channels], np.int64), f"{prefix}_split"),
        ])
        if str(index) in head.convs_3x3:
            conv = _conv(graph, cast(nn.Linear, head.convs_3x3[str(index)]), PADDED_MAPS[index], f"{prefix}_3x3", 3)
            graph.node.append(helper.make_node("LeakyRelu", [conv], [f"{prefix}_features"], name=f"{prefix}_features",
                                               alpha=LEAKY_SLOPE))
            features = f"{prefix}_features"
        logits = _conv(graph, layer, features, f"{prefix}_conv")
        if head.branches:
            branch_layers = cast(nn.Sequential, head.branches[index])
            first, second = cast(nn.Linear, branch_layers[0]), cast(nn.Linear, branch_layers[2])
            hidden = _conv(graph, first, features, f"{prefix}_branch_in")
            graph.node.append(helper.make_node("Relu", [hidden], [f"{prefix}_branch_relu"],
                                               name=f"{prefix}_branch_relu"))
            branch = _conv(graph, second, f"{prefix}_branch_relu", f"{prefix}_branch_out")
            graph.node.append(helper.make_node("Add", [logits, branch], [f"{prefix}_sum"], name=f"{prefix}_sum"))
            logits = f"{prefix}_sum"
        graph.node.extend([
            helper.make_node("Reshape", [logits, f"{prefix}_shape"], [f"{prefix}_flat"],
                             name=f"{prefix}_reshape"),
            helper.make_node("Transpose", [f"{prefix}_flat"], [f"{prefix}_cells"], name=f"{prefix}_transpose",
                             perm=[0, 2, 1]),
            helper.make_node("Split", [f"{prefix}_cells", f"{prefix}_split"],
                             [f"{prefix}_logit", f"vehicle_boxes_s{stride}"], name=f"{prefix}_split", axis=2),
            helper.make_node("Sigmoid", [f"{prefix}_logit"], [f"vehicle_s{stride}"], name=f"{prefix}_sigmoid"),
        ])
        cells = (SIDE // stride) ** 2
        graph.output.extend([
            helper.make_tensor_value_info(f"vehicle_s{stride}", onnx.TensorProto.FLOAT, [1, cells, 1]),
            helper.make_tensor_value_info(f"vehicle_boxes_s{stride}", onnx.TensorProto.FLOAT,
                                          [1, cells, boxes_channels]),
        ])
    onnx.checker.check_model(grafted)
    return grafted
