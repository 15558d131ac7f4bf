"""What the words painted on a livery (sponsors, makes, names) add to
appearance, on the manifests of `liveryid eval`, with identify's rule
(`sidecar/stages/words.py`: words break appearance's ties within the match
margin).

    .venv/bin/python -m bench.manifests && .venv/bin/python -m bench.words

Every crop (the box `liveryid eval` embeds) is read with its words, as
identify reads a vehicle whose appearance ties cars; an enrolled car's words
are those read on its references. Prints, per manifest, rank-1 and the
open-set decision with appearance alone and with words, how many queries
have a word an enrolled car carries, and how many rank-1 results the words
fixed or broke; then the words read on each car's references, and the time
reading a crop's text takes with the numbers alone and with the words (the
F1 game queries' crops).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import msgspec
import numpy as np

from bench.datasets import DATA_DIR
from sidecar import evaluation
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.identification import match_policy
from sidecar.stages.words import word_evidence

MANIFESTS = Path(".cache/eval")
SETS = ("f1-3ref", "f1-draws/f1-3ref-draw1", "f1-draws/f1-3ref-draw2", "f1-boxed/f1-3ref-boxed",
        "f1-open/f1-3ref-open", "f1-open/f1-3ref-open-boxed", "epfl-1ref", "epfl-3ref", "khoa", "khoa-detected")
TIMED = "f1-3ref"


def main() -> None:
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    engine = Engine(settings_from_env())
    policy = match_policy(engine.embedder(), None, None, 5)
    print("| set | queries with a word an enrolled car carries | rank-1 appearance / with words | fixed / broken by words "
          "| true match | wrong match | false match (unknown cars) |")
    print("|---|---|---|---|---|---|---|")
    carried = []  # per set: the words read on each car's references
    for name in SETS:
        path = MANIFESTS / f"{name}.json"
        if not path.exists():
            sys.exit(f"no {path}: run `python -m bench.manifests` first")
        prepared = evaluation.prepare(engine, path, words=True)
        words = prepared.tie_words()
        assert words is not None
        scores, truths = prepared.scores(evaluation.IDENTIFY_SCORING), prepared.truths
        before, after = (evaluation.evaluate(prepared.name, scores, truths, policy, evaluation.IDENTIFY_SCORING,
                                             len(prepared.reference_cars), tie_words) for tie_words in (None, words))
        firsts, worded_firsts = ([v.candidates[0].car_id for v in evaluation.decisions(scores, policy, tie_words)]
                                 for tie_words in (None, words))
        known = [i for i, t in enumerate(truths) if t is not None]
        fixed = sum(firsts[i] != truths[i] and worded_firsts[i] == truths[i] for i in known)
        broken = sum(firsts[i] == truths[i] and worded_firsts[i] != truths[i] for i in known)
        evidenced = sum(bool(word_evidence(query, words.cars)) for query in words.queries)
        false_match = (f"{before.false_match_rate:.1%} / {after.false_match_rate:.1%}"
                       if before.unknown_queries else "-")
        print(f"| {prepared.name} | {evidenced} of {len(truths)} | {before.rank1:.1%} / {after.rank1:.1%} | "
              f"{fixed} / {broken} | {before.true_match_rate:.1%} / {after.true_match_rate:.1%} | "
              f"{before.wrong_match_rate:.1%} / {after.wrong_match_rate:.1%} | {false_match} |")
        carriers = [f"{car} {' '.join(sorted(w))}" for car, w in words.cars.items() if w]
        carried.append(f"{prepared.name}: {len(carriers)} of {len(words.cars)} cars: " + "; ".join(carriers))
    print("\nwords read on each car's references:\n" + "\n".join(carried))

    path = MANIFESTS / f"{TIMED}.json"
    manifest = msgspec.json.decode(path.read_bytes(), type=evaluation.EvalManifest)
    crops = [evaluation.sample_crop(engine, query, path.parent) for query in manifest.queries]
    reader = engine.number_reader()
    milliseconds = {}
    for with_words in (False, True):
        started = time.perf_counter()
        for vehicle in crops:
            reader.read(vehicle, with_words)
        milliseconds[with_words] = (time.perf_counter() - started) / len(crops) * 1000
    sizes = np.array([c.shape[:2] for c in crops])
    print(f"\nreading a crop's text ({len(crops)} {TIMED} query crops, median {np.median(sizes[:, 1]):.0f} x "
          f"{np.median(sizes[:, 0]):.0f} px): {milliseconds[False]:.0f} ms with the numbers alone, "
          f"{milliseconds[True]:.0f} ms with the words; threshold {policy.threshold}, margin {policy.margin} "
          "(identify's defaults); each cell: appearance / with words")


if __name__ == "__main__":
    main()
