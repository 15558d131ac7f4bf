"""Re-identification training: FastReID's bag of tricks (Luo et al., "Bag
of Tricks and A Strong Baseline for Deep Person Re-identification", 2019)
on the MobileNetV2 backbone, sized for a 2-core CPU.

- BNNeck: the triplet loss sees the pooled feature, the identity classifier
  sees it after a batch norm; the embedding is the normalised feature, so
  cosine similarity is what the library searches.
- Identity loss (cross-entropy with label smoothing) plus a batch-hard
  triplet loss over P identities x K images per batch.
- Linear warm-up, then cosine decay; Adam.
- The stem and first stages stay at their ImageNet weights (edges and
  textures are generic); the later stages learn. That also makes an
  iteration about three times cheaper.
- Synthetic identities (rendered cars, `renders.identity_views`; not in
  the shipped recipe, `bench.synthetic_identities` measures them) get
  batches of their own, every `synthetic_every`-th step: mixed into real
  batches they become the hard negatives of real cars.

Deterministic for a given machine type: seeded numpy and torch, fixed
thread count, samples in a fixed order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sidecar.inference.manifest import InputSpec
from sidecar.inference.turns import MODEL_TURNS
from sidecar.stages.preprocess import shrink, to_tensor
from sidecar.training.augment import AugmentRecipe, augment
from sidecar.training.mobilenetv2 import MobileNetV2Features

log = logging.getLogger(__name__)
FEATURE_DIM = 1280


@dataclass(frozen=True)
class Recipe:
    iterations: int = 360
    identities_per_batch: int = 16
    images_per_identity: int = 4
    learning_rate: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup: int = 10
    frozen_layers: int = 7
    """Leading MobileNetV2 blocks kept at their starting weights (7 = stem to the 32-channel stage)."""
    triplet_margin: float = 0.3
    label_smoothing: float = 0.1
    threads: int = 2
    seed: int = 0
    augment: AugmentRecipe = field(default_factory=AugmentRecipe)


class ReIDNet(nn.Module):
    """Backbone, BNNeck and (for training only) the identity classifier.
    In eval mode it returns the embedding: the feature after the neck."""

    def __init__(self, identities: int) -> None:
        super().__init__()
        self.backbone = MobileNetV2Features()
        self.neck = nn.BatchNorm1d(FEATURE_DIM)
        self.neck.bias.requires_grad_(False)  # BNNeck: no shift, so the classifier's hyperplanes pass the origin
        self.classifier = nn.Linear(FEATURE_DIM, identities, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feature = self.backbone(images)
        embedding = self.neck(feature)
        return (feature, self.classifier(embedding)) if self.training else embedding

    def freeze(self, layers: int) -> None:
        for index, block in enumerate(self.backbone.features):
            for parameter in block.parameters():
                parameter.requires_grad_(index >= layers)

    def train(self, mode: bool = True) -> ReIDNet:
        """Frozen blocks stay in eval mode too: their batch norms keep the ImageNet statistics."""
        super().train(mode)
        for block in self.backbone.features:
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        return self


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hermans et al. 2017: for each anchor, its farthest positive against its nearest negative."""
    distances = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    hardest_positive = (distances * same).max(dim=1).values
    hardest_negative = (distances + same * 1e6).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def pk_batch(
    crops: Sequence[np.ndarray], labels: np.ndarray, members: Sequence[np.ndarray], identities: int, per_identity: int,
    spec: InputSpec, recipe: AugmentRecipe, rng: np.random.Generator, pool: np.ndarray | None = None,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """A P x K batch: `identities` identities drawn without replacement (from `pool`, default all),
    `per_identity` augmented crops of each (drawn with replacement when it has fewer).
    Returns (the chosen identities, images NCHW, their labels)."""
    chosen = rng.choice(len(members) if pool is None else pool, identities, replace=False)
    picks = np.concatenate([
        rng.choice(members[i], per_identity, replace=len(members[i]) < per_identity) for i in chosen
    ])
    size = (spec.width, spec.height)
    images = torch.from_numpy(to_tensor([augment(crops[i], size, recipe, rng) for i in picks], spec))
    return chosen, images, torch.from_numpy(labels[picks])


def train(
    crops: Sequence[np.ndarray], identities: Sequence[str], spec: InputSpec, starting_weights: dict[str, torch.Tensor],
    recipe: Recipe = Recipe(), progress: Callable[[int, float], None] | None = None,
    synthetic: Sequence[str] = (), synthetic_every: int = 4,
) -> ReIDNet:
    """A model trained on BGR `crops` labelled by `identities` (at least two
    identities; identities with one crop are seen through augmentation alone).
    `synthetic` names the identities that are renders: every `synthetic_every`-th
    batch draws only them, the others only real ones. `starting_weights` is a
    MobileNetV2Features state dict."""
    names = sorted(set(identities))
    if len(names) < 2:
        raise ValueError("training needs at least two identities")
    labels = np.array([names.index(i) for i in identities])
    crops = [shrink(c, 2 * max(spec.width, spec.height)) for c in crops]
    members = [np.flatnonzero(labels == i) for i in range(len(names))]
    rendered = np.isin(names, list(synthetic))
    real, renders = np.flatnonzero(~rendered), np.flatnonzero(rendered)
    if rendered.any() and min(len(real), len(renders)) < 2:
        raise ValueError("training with synthetic identities needs at least two real and two synthetic ones")
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng(recipe.seed)

    model = ReIDNet(len(names))
    model.backbone.load_state_dict(starting_weights)
    model.freeze(recipe.frozen_layers)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate,
                                 weight_decay=recipe.weight_decay)

    def rate(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - recipe.warmup) / max(1, recipe.iterations - recipe.warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    model.train()
    for step in range(recipe.iterations):
        pool = None if not rendered.any() else renders if step % synthetic_every == synthetic_every - 1 else real
        per_batch = min(recipe.identities_per_batch, len(names) if pool is None else len(pool))
        _, images, targets = pk_batch(crops, labels, members, per_batch, recipe.images_per_identity, spec,
                                      recipe.augment, rng, pool)
        feature, logits = model(images)
        loss = (F.cross_entropy(logits, targets, label_smoothing=recipe.label_smoothing)
                + batch_hard_triplet(feature, targets, recipe.triplet_margin))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, loss.item())
    return model.eval()


def embed(model: nn.Module, crops: Sequence[np.ndarray], spec: InputSpec, batch: int = 32) -> np.ndarray:
    """(N, 1280) unit vectors, computed as the sidecar's embed stage computes them.
    Each batch takes a model turn, as the sidecar's ONNX runs do (`adapt` embeds
    an event's crops in the background)."""
    size = (spec.width, spec.height)
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            resized = [cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in crops[start : start + batch]]
            with MODEL_TURNS.turn():
                out.append(F.normalize(model(torch.from_numpy(to_tensor(resized, spec))), dim=1).numpy())
    return np.concatenate(out) if out else np.empty((0, FEATURE_DIM), np.float32)


def export_onnx(model: ReIDNet, spec: InputSpec, path: Path) -> None:
    """The embedding part (backbone and neck) as ONNX: input `image` NCHW, output `embedding`."""
    model.eval()
    example = torch.zeros(1, 3, spec.height, spec.width)
    torch.onnx.export(
        model, (example,), str(path), input_names=["image"], output_names=["embedding"],
        dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17, dynamo=False,
    )
