"""How much of the re-identification embedder's figures is its training seed?

    .venv/bin/python -m bench.manifests && .venv/bin/python -m bench.embedder_seeds [--seeds 1,2] [--iterations N] [--keep DIR]

Builds the project's embedder again as `build.py models` does, with other
seeds (`models/train_reid.py --seed N`: other batches, augmentations and
classifier start, the same recipe), into temporary models folders beside
the shipped models, and measures each as bench.colour_weight does at the
manifest's colour weight and box jitter: rank-1 / true match at the lowest
threshold keeping false matches at or under 1% on every real set, per
evaluation set, identify's scoring, appearance alone. The shipped build
(seed 0) is measured too. An embedder recipe is worth keeping when it moves
the mean over seeds, not one seed's figure, as bench.detector_seeds says of
the detector. `--keep DIR` keeps each build's models folder as DIR/seed-N,
for `LIVERYID_MODELS_DIR=DIR/seed-N .venv/bin/liveryid eval ...`. About
12 minutes a seed on 2 cores (the 360-step build about 10, the measuring the rest).
`--iterations N` builds with N training steps instead of the shipped recipe's (seed 0 too,
then: the shipped row stays for reference), as bench.detector_seeds does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.colour_weight import EVAL_DIR, SHOWN, AtTheRule, at_the_rule, prepared_sets, table_header
from bench.datasets import DATA_DIR
from bench.retrained import retrained_models, seed_folder
from sidecar.config import DEFAULT_MODELS_DIR, settings_from_env
from sidecar.engine import Engine
from sidecar.identification import match_policy

EMBEDDER = "liveryid-reid-mnv2"


def measure(models_dir: Path) -> tuple[AtTheRule, str]:
    """The build's figures at the threshold rule, and the header naming its sets."""
    engine = Engine(settings_from_env(models_dir=models_dir, embedder=EMBEDDER))
    prepared = prepared_sets(engine)
    return at_the_rule(prepared, match_policy(engine.embedder(), None, None, 5).margin), table_header("seed", prepared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2",
                        help="seeds to build (default 1,2; the shipped build, seed 0, is measured as it is)")
    parser.add_argument("--keep", type=Path, help="keep each build's models folder as KEEP/seed-N, for "
                        "`LIVERYID_MODELS_DIR=KEEP/seed-N liveryid eval`")
    parser.add_argument("--iterations", type=int, help="training steps per build (default: the shipped recipe's)")
    args = parser.parse_args()
    if not DATA_DIR.is_dir() or not EVAL_DIR.is_dir():
        sys.exit("needs the development data and `python -m bench.manifests`")
    shipped, header = measure(DEFAULT_MODELS_DIR)
    print("per set: rank-1 / true match at the lowest threshold keeping false matches <= 1% on every real set, "
          "identify's scoring, appearance alone")
    print(header)
    print(f"| 0 (shipped) | {shipped.cells()} |", flush=True)
    recipe = [] if args.iterations is None else ["--iterations", str(args.iterations)]
    measured = {} if recipe else {0: shipped}
    label = f", {args.iterations} steps" if args.iterations else ""
    for seed in [int(s) for s in args.seeds.split(",")]:
        with seed_folder(args.keep, seed) as folder:
            models = retrained_models(EMBEDDER, "train_reid.py", ["--seed", str(seed), *recipe], folder)
            measured[seed] = measure(models)[0]
        print(f"| {seed}{label} | {measured[seed].cells()} |", flush=True)
    ruled = [m for m in measured.values() if m.threshold is not None]
    if not ruled:
        sys.exit("no build has a threshold meeting the rule")
    print(f"\nmean over the {len(ruled)} seeds with a threshold meeting the rule (of {len(measured)}), rank-1 / true match:")
    for name in SHOWN:
        rank1 = np.asarray([m.reports[name].rank1 for m in ruled])
        true = np.asarray([m.reports[name].true_match_rate for m in ruled])
        print(f"- {ruled[0].reports[name].name}: {rank1.mean():.1%} ({rank1.min():.1%} to {rank1.max():.1%}) / "
              f"{true.mean():.1%} ({true.min():.1%} to {true.max():.1%})")
    views = np.asarray([m.lowest_view for m in ruled])
    print(f"- EPFL 1 ref, 8 views, lowest true match: {views.mean():.1%} ({views.min():.1%} to {views.max():.1%})")


if __name__ == "__main__":
    main()
