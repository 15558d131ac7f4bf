"""Unsupervised adaptation of an embedder to one event: pseudo-labels from
clustering, then contrastive fine-tuning on them, repeated.

The recipe is Cluster Contrast (Dai et al., "Cluster Contrast for
Unsupervised Person Re-Identification", 2021), the simplest of the
pseudo-label family that the field's unsupervised ReID results build on:
- embed every unlabelled crop of the event with the current model;
- cluster: DBSCAN on the k-reciprocal Jaccard distance (Zhong et al. 2017),
  which joins two crops only when their neighbourhoods agree; crops in no
  cluster are left out of the round. DBSCAN's radius decides everything
  (too wide and every car is one cluster, too narrow and there is nothing to
  learn from), and the right one differs from event to event, so the
  enrolled references are clustered with the crops and the radius that
  best keeps each car's references together, and apart from the others',
  is used;
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
from sidecar.inference.turns import MODEL_TURNS
from sidecar.stages.preprocess import shrink
from sidecar.training.augment import AugmentRecipe
from sidecar.training.onnx_module import OnnxModule
from sidecar.training.reid import embed, pk_batch

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
    radii: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
    """DBSCAN radii on the Jaccard distance tried each round (Cluster Contrast uses 0.6)."""
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    threads: int = 2
    seed: int = 0
    augment: AugmentRecipe = field(default_factory=AugmentRecipe)


@dataclass(frozen=True)
class RoundReport:
    crops: int
    radius: float
    agreement: float
    """Pairwise F1 of the clustering on the references (same car together, other cars apart)."""
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


def pseudo_labels(
    vectors: np.ndarray, references: np.ndarray, cars: Sequence[str], recipe: AdaptRecipe, widest: bool = True,
) -> tuple[np.ndarray, float, float]:
    """Cluster labels of the unit `vectors` (-1: outlier; clusters numbered
    0 to k-1), clustered together with the `references` of known `cars`;
    returns (labels, radius, agreement). Among radii that keep the references
    equally well, the widest clusters more of the event (what training
    wants), the narrowest more often leaves a car nobody enrolled apart from
    an enrolled look-alike (what checking for such cars wants)."""
    joint = np.vstack([references, vectors])
    jaccard = k_reciprocal_distance(joint @ joint.T, recipe.k1, recipe.k2)
    same = np.asarray(cars)[:, None] == np.asarray(cars)[None, :]
    pairs = np.triu_indices(len(cars), 1)
    best: tuple[float, float, np.ndarray] | None = None
    for radius in recipe.radii:
        labels = dbscan(jaccard, radius, recipe.min_samples)
        ref_labels = labels[: len(cars)]
        together = (ref_labels[:, None] == ref_labels[None, :]) & (ref_labels[:, None] >= 0)
        hits = (same & together)[pairs].sum()
        agreement = 2 * hits / max(1, 2 * hits + (~same & together)[pairs].sum() + (same & ~together)[pairs].sum())
        if best is None or agreement > best[0] or (agreement == best[0] and widest):  # radii rise
            best = (float(agreement), radius, labels[len(cars):])
    assert best is not None
    labels = best[2]
    # A cluster of references alone (cars enrolled but absent from the event)
    # has nothing to train on: number only the clusters the vectors are in.
    present = np.unique(labels[labels >= 0])
    return np.where(labels >= 0, np.searchsorted(present, labels), -1), best[1], best[0]


MICRO_BATCH = 16
"""Crops per forward and backward pass of a training step."""


def accumulate_gradients(
    module: OnnxModule, images: torch.Tensor, targets: torch.Tensor, memory: torch.Tensor, temperature: float,
) -> tuple[torch.Tensor, float]:
    """Backpropagate the batch's mean contrastive loss against the cluster
    `memory`, MICRO_BATCH crops at a time, each part a model turn; returns the
    batch's unit features (detached) and its loss. The module's batch norms are
    frozen, so a crop's loss does not depend on the others in its batch and
    the summed gradient is the whole batch's: identify sent during an adapt
    shares the cores with one part, not the step (no part starts while it is
    in flight), and a step keeps a fraction of the activations."""
    features, loss = [], 0.0
    for start in range(0, len(images), MICRO_BATCH):
        with MODEL_TURNS.turn():
            part = F.normalize(module(images[start : start + MICRO_BATCH]), dim=1)
            part_loss = F.cross_entropy(part @ memory.T / temperature, targets[start : start + MICRO_BATCH],
                                        reduction="sum") / len(images)
            part_loss.backward()
        features.append(part.detach())
        loss += part_loss.item()
    return torch.cat(features), loss


def adapt(
    module: OnnxModule, crops: Sequence[np.ndarray], references: Sequence[np.ndarray], cars: Sequence[str],
    spec: InputSpec, recipe: AdaptRecipe = AdaptRecipe(),
    appearance: Callable[[np.ndarray, bool], np.ndarray] = lambda v, refs: v,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[RoundReport]:
    """Fine-tune `module` in place on unlabelled BGR `crops`; the `references`
    (crops of the enrolled `cars`) only choose the clustering radius, they
    are not trained on. `appearance(embeddings, of_references)` maps the
    module's unit embeddings to the vectors that matching compares (the stage
    may fuse colours into them): clusters are formed on those."""
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng(recipe.seed)
    crops = [shrink(c, 2 * max(spec.width, spec.height)) for c in crops]
    references = [shrink(c, 2 * max(spec.width, spec.height)) for c in references]
    module.freeze(recipe.frozen_share)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    reports = []
    total = recipe.rounds * recipe.iterations
    for round_index in range(recipe.rounds):
        embeddings = embed(module, crops, spec)
        labels, radius, agreement = pseudo_labels(
            appearance(embeddings, False), appearance(embed(module, references, spec), True), cars, recipe)
        clusters = int(labels.max()) + 1
        if clusters < 2:
            log.info("round %d: %d cluster(s) among %d crops, nothing to learn from", round_index + 1, clusters, len(crops))
            reports.append(RoundReport(len(crops), radius, agreement, clusters, int((labels >= 0).sum()), float("nan")))
            break
        members = [np.flatnonzero(labels == c) for c in range(clusters)]
        memory = F.normalize(torch.from_numpy(np.stack([embeddings[m].mean(axis=0) for m in members])), dim=1)
        per_batch = min(recipe.clusters_per_batch, clusters)
        losses = []
        for step in range(recipe.iterations):
            MODEL_TURNS.pause_for_interactive()
            chosen, images, targets = pk_batch(crops, labels, members, per_batch, recipe.images_per_cluster, spec,
                                               recipe.augment, rng)
            optimiser.zero_grad()
            features, loss = accumulate_gradients(module, images, targets, memory, recipe.temperature)
            with MODEL_TURNS.turn():
                optimiser.step()
            with torch.no_grad():
                for c in chosen:
                    batch_mean = features[targets == int(c)].mean(dim=0)
                    memory[c] = F.normalize(recipe.momentum * memory[c] + (1 - recipe.momentum) * batch_mean, dim=0)
            losses.append(loss)
            if progress is not None:
                progress(round_index * recipe.iterations + step + 1, total, f"round {round_index + 1}")
        reports.append(RoundReport(len(crops), radius, agreement, clusters, int((labels >= 0).sum()),
                                   float(np.mean(losses[-10:]))))
        log.info("round %d: radius %.2f (reference agreement %.2f), %d clusters, %d of %d crops clustered, loss %.3f",
                 round_index + 1, radius, agreement, clusters, reports[-1].clustered, len(crops), reports[-1].loss)
    module.eval()
    return reports
