"""How much the livery's colours should weigh against the CNN embedding,
and the threshold that goes with each weight (issue #4).

    .venv/bin/python -m bench.manifests && .venv/bin/python -m bench.colour_weight [--weights 0 0.35 0.6]

The evaluation manifests are embedded once by the default embedder; each
weight fuses its two parts again (`colour.fuse`), takes the lowest threshold
that keeps false matches at or under 1% on every real set (the rule each
embedder's default threshold follows; the real sets: EPFL with 1 and 3
references and with the one reference at each of 8 views, Khoa whole and
detected) and prints rank-1 and true match there, identify's scoring, and
apart the true matches of EPFL car 04, the one car in full race livery
(a rally car, white with coloured graphics that differ from side to side).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.datasets import DATA_DIR
from sidecar import evaluation
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.identification import match_policy
from sidecar.stages.colour import fuse
from sidecar.stages.embed import l2_normalise
from sidecar.stages.match import MatchPolicy

EVAL_DIR = Path(".cache/eval")
SHOWN = ["epfl-1ref.json", "epfl-3ref.json", "khoa.json", "khoa-detected.json", "f1-3ref.json", "f1-boxed/f1-3ref-boxed.json"]
REAL = ["epfl-1ref.json", "epfl-3ref.json", "khoa.json", "khoa-detected.json"]
VIEWS = "epfl-views/*.json"
THRESHOLDS = np.round(np.arange(0.65, 0.951, 0.025), 3)
RALLY_CAR = "04"


def reweighted(vectors: np.ndarray, cnn_dim: int, embedded_weight: float, weight: float) -> np.ndarray:
    """Vectors fused at `embedded_weight`, fused again at `weight`. Normalised
    again: a vector averaged over boxes (the embedder's box jitter) has parts
    shorter than unit, and its mean is what fusing each box's at `weight` gives."""
    cnn = vectors[:, :cnn_dim] / np.sqrt(1.0 - embedded_weight)
    colours = vectors[:, cnn_dim:] / np.sqrt(embedded_weight)
    return l2_normalise(fuse(cnn, colours, weight))


def rally_true_match(prepared: evaluation.Prepared, policy: MatchPolicy) -> float:
    rows = [i for i, truth in enumerate(prepared.truths) if truth == RALLY_CAR]
    scores = prepared.scores(evaluation.IDENTIFY_SCORING).of(rows)
    return evaluation.evaluate(prepared.name, scores, [RALLY_CAR] * len(rows), policy, evaluation.IDENTIFY_SCORING, 0).true_match_rate


def prepared_sets(engine: Engine) -> dict[str, evaluation.Prepared]:
    """The shown sets and the 8 views, embedded by the engine's embedder."""
    paths = {name: EVAL_DIR / name for name in SHOWN} | {str(p.relative_to(EVAL_DIR)): p for p in sorted(EVAL_DIR.glob(VIEWS))}
    return {name: evaluation.prepare(engine, path) for name, path in paths.items()}


@dataclass(frozen=True)
class AtTheRule:
    """Figures at the lowest threshold keeping false matches <= 1% on every real set (None: no threshold does)."""

    threshold: float | None
    reports: dict[str, evaluation.Report]
    lowest_view: float
    """The lowest true match of the 8 single views."""
    rally: tuple[float, float]
    """EPFL car 04's true match with 1 and 3 references."""

    def cells(self) -> str:
        if self.threshold is None:
            return "none | " + " | ".join("-" for _ in SHOWN) + " | - | -"
        return (f"{self.threshold} | " + " | ".join(f"{self.reports[name].rank1:.1%} / {self.reports[name].true_match_rate:.1%}"
                                                    for name in SHOWN)
                + f" | {self.lowest_view:.1%} | {self.rally[0]:.1%} / {self.rally[1]:.1%}")


def at_the_rule(prepared: dict[str, evaluation.Prepared], margin: float) -> AtTheRule:
    real = REAL + [name for name in prepared if name not in SHOWN]
    threshold = evaluation.lowest_safe_threshold([prepared[name] for name in real], evaluation.IDENTIFY_SCORING, margin,
                                                 THRESHOLDS)
    if threshold is None:
        return AtTheRule(None, {}, 0.0, (0.0, 0.0))
    policy = MatchPolicy(threshold, margin, 5)
    reports = {name: evaluation.evaluate(p.name, p.scores(evaluation.IDENTIFY_SCORING), p.truths, policy,
                                         evaluation.IDENTIFY_SCORING, 0) for name, p in prepared.items()}
    views = min(reports[name].true_match_rate for name in real if name not in REAL)
    rally = (rally_true_match(prepared["epfl-1ref.json"], policy), rally_true_match(prepared["epfl-3ref.json"], policy))
    return AtTheRule(threshold, reports, views, rally)


def table_header(first: str, names: dict[str, evaluation.Prepared]) -> str:
    return (f"| {first} | threshold | " + " | ".join(names[name].name for name in SHOWN)
            + " | EPFL 1 ref, 8 views: lowest true match | EPFL car 04 (rally livery) true match, 1 / 3 refs |\n"
            + "|---|---|" + "---|" * (len(SHOWN) + 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.2, 0.35, 0.5, 0.55, 0.6, 0.65, 0.7])
    args = parser.parse_args()
    if not DATA_DIR.is_dir() or not EVAL_DIR.is_dir():
        sys.exit("needs the development data and `python -m bench.manifests`")
    engine = Engine(settings_from_env())
    embedder = engine.embedder()
    spec = embedder.spec
    if not spec.colour_weight:
        sys.exit(f"{spec.name} fuses no colours")
    margin = match_policy(embedder, None, None, 5).margin
    prepared = prepared_sets(engine)
    print(f"{spec.name}: default weight {spec.colour_weight}, threshold {spec.match_threshold}; "
          f"per set: rank-1 / true match at the weight's threshold (false matches <= 1% on every real set)")
    print(table_header("colour weight", prepared))
    for weight in args.weights:
        fused = {name: replace(p, references=reweighted(p.references, spec.output_dim, spec.colour_weight, weight),
                               queries=reweighted(p.queries, spec.output_dim, spec.colour_weight, weight))
                 for name, p in prepared.items()}
        print(f"| {weight} | {at_the_rule(fused, margin).cells()} |", flush=True)

if __name__ == "__main__":
    main()
