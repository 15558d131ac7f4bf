"""Unsupervised adaptation of an embedder to one event: pseudo-labels from
clustering, then contrastive fine-tuning on them, repeated.

The recipe is Cluster Contrast (Dai et al., "Cluster Contrast for
Unsupervised Person Re-Identification", 2021), the simplest of the
pseudo-label family that the field's unsupervised ReID results build on:
- embed every unlabelled crop of the event with the current model;
- cluster: DBSCAN on the k-reciprocal Jaccard distance (Zhong et al. 2017),
  which joins two crops only when their neighbourhoods agree; crops in no
  cluster are left out of the round;
- fine-tune with a cluster memory: one unit centroid per cluster, an InfoNCE
  loss of each crop against all centroids, centroids pulled towards the crops
  of each batch (momentum);
- repeat with the better model's clusters.

Nothing here knows which car is which: the caller decides whether the result
is better on the references the user enrolled, and only then uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sidecar.evaluation import k_reciprocal_distance
from sidecar.inference.manifest import InputSpec
from sidecar.stages.preprocess import shrink, to_tensor
from sidecar.training.augment import AugmentRecipe, augment
from sidecar.training.onnx_module import OnnxModule
from sidecar.training.reid import embed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptRecipe:
    rounds: int = 2
    iterations: int = 60
    """Fine-tuning steps per round."""
    clusters_per_batch: int = 16
    images_per_cluster: int = 4
    learning_rate: float = 1e-4
    weight_decay: float = 5e-4
    frozen_share: float = 0.4
    """Leading share of the convolutions kept as they are."""
    temperature: float = 0.05
    momentum: float = 0.2
    """How much of a centroid survives each update towards its batch's crops."""
    eps: float = 0.6
    """DBSCAN radius on the Jaccard distance (Cluster Contrast's value)."""
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    threads: int = 2
    seed: int = 0
    augment: AugmentRecipe = field(default_factory=AugmentRecipe)


@dataclass(frozen=True)
class RoundReport:
    crops: int
    clusters: int
    clustered: int
    """Crops in some cluster (the rest are outliers, not trained on this round)."""
    loss: float


def dbscan(distance: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """Cluster labels (-1 for outliers) from a square distance matrix: a point
    with at least `min_samples` neighbours within `eps` (itself included) is a
    core point; clusters are core points joined through their neighbourhoods,
    plus the points they reach."""
    neighbours = distance <= eps
    core = neighbours.sum(axis=1) >= min_samples
    labels = np.full(len(distance), -1, np.int64)
    cluster = 0
    for start in np.flatnonzero(core):
        if labels[start] != -1:
            continue
        labels[start] = cluster
        frontier = [int(start)]
        while frontier:
            point = frontier.pop()
            if not core[point]:
                continue
            for reached in np.flatnonzero(neighbours[point] & (labels == -1)):
                labels[reached] = cluster
                frontier.append(int(reached))
        cluster += 1
    return labels


def pseudo_labels(vectors: np.ndarray, recipe: AdaptRecipe) -> np.ndarray:
    """Cluster labels of unit vectors (-1: outlier)."""
    if len(vectors) < recipe.min_samples:
        return np.full(len(vectors), -1, np.int64)
    jaccard = k_reciprocal_distance(vectors @ vectors.T, recipe.k1, recipe.k2)
    return dbscan(jaccard, recipe.eps, recipe.min_samples)


def adapt(
    module: OnnxModule, crops: Sequence[np.ndarray], spec: InputSpec, recipe: AdaptRecipe = AdaptRecipe(),
    appearance: Callable[[np.ndarray], np.ndarray] = lambda v: v,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[RoundReport]:
    """Fine-tune `module` in place on unlabelled BGR `crops`. `appearance`
    maps the module's unit embeddings to the vectors that matching compares
    (the stage may fuse colours into them): clusters are formed on those."""
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng(recipe.seed)
    crops = [shrink(c, 2 * max(spec.width, spec.height)) for c in crops]
    module.freeze(recipe.frozen_share)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    size = (spec.width, spec.height)
    reports = []
    total = recipe.rounds * recipe.iterations
    for round_index in range(recipe.rounds):
        embeddings = embed(module, crops, spec)
        labels = pseudo_labels(appearance(embeddings), recipe)
        clusters = int(labels.max()) + 1
        if clusters < 2:
            log.info("round %d: %d cluster(s) among %d crops, nothing to learn from", round_index + 1, clusters, len(crops))
            reports.append(RoundReport(len(crops), clusters, int((labels >= 0).sum()), float("nan")))
            break
        members = [np.flatnonzero(labels == c) for c in range(clusters)]
        memory = F.normalize(torch.from_numpy(np.stack([embeddings[m].mean(axis=0) for m in members])), dim=1)
        per_batch = min(recipe.clusters_per_batch, clusters)
        losses = []
        for step in range(recipe.iterations):
            chosen = rng.choice(clusters, per_batch, replace=False)
            picks = np.concatenate([
                rng.choice(members[c], recipe.images_per_cluster, replace=len(members[c]) < recipe.images_per_cluster)
                for c in chosen
            ])
            images = torch.from_numpy(to_tensor([augment(crops[i], size, recipe.augment, rng) for i in picks], spec))
            targets = torch.from_numpy(labels[picks])
            features = F.normalize(module(images), dim=1)
            loss = F.cross_entropy(features @ memory.T / recipe.temperature, targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                for c in chosen:
                    batch_mean = features[targets == int(c)].mean(dim=0)
                    memory[c] = F.normalize(recipe.momentum * memory[c] + (1 - recipe.momentum) * batch_mean, dim=0)
            losses.append(loss.item())
            if progress is not None:
                progress(round_index * recipe.iterations + step + 1, total, f"round {round_index + 1}")
        reports.append(RoundReport(len(crops), clusters, int((labels >= 0).sum()), float(np.mean(losses[-10:]))))
        log.info("round %d: %d clusters, %d of %d crops clustered, loss %.3f", round_index + 1, clusters,
                 reports[-1].clustered, len(crops), reports[-1].loss)
    module.eval()
    return reports
