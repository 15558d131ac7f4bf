"""What the words painted on a livery (sponsors, makes, names) add to
appearance, on the manifests of `liveryid eval`, with identify's rule
(`sidecar/stages/words.py`: words break appearance's ties within the match
margin).

    .venv/bin/python -m bench.manifests && .venv/bin/python -m bench.words

Every crop (the box `liveryid eval` embeds) is read with the words, as
identify reads a vehicle whose appearance ties cars; an enrolled car's words
are those read on its references. Prints, per manifest, rank-1 and the
open-set decision with appearance alone and with words, how many queries
have a word an enrolled car carries, how many rank-1 results the words
fixed or broke; then the words read on each car's references, and the time
reading a crop's text takes with the numbers alone and with the words.
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
from sidecar.identification import match_policy, reference_box
from sidecar.protocol.messages import ImageRef
from sidecar.stages.decode import load_image
from sidecar.stages.embed import crop
from sidecar.stages.match import decide
from sidecar.stages.words import break_tie, word_evidence

MANIFESTS = Path(".cache/eval")
SETS = ("f1-3ref", "f1-draws/f1-3ref-draw1", "f1-draws/f1-3ref-draw2", "f1-boxed/f1-3ref-boxed",
        "f1-open/f1-3ref-open", "f1-open/f1-3ref-open-boxed", "epfl-1ref", "epfl-3ref", "khoa", "khoa-detected")


def main() -> None:
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    engine = Engine(settings_from_env())
    policy = match_policy(engine.embedder(), None, None, 5)
    read: dict[tuple[str, tuple[float, ...] | None], frozenset[str]] = {}
    seconds = {False: 0.0, True: 0.0}  # reading the crops: numbers only, and with the words

    def words(sample: evaluation.Sample, base: Path) -> frozenset[str]:
        key = (sample.image, tuple(sample.box) if sample.box else None)
        if key not in read:
            image = load_image(ImageRef(path=str(base / sample.image)), engine.limits)
            box, _, _ = reference_box(engine, image, sample.box, 0)
            vehicle = crop(image, box)
            for with_words in (False, True):
                started = time.perf_counter()
                read[key] = engine.number_reader().read(vehicle, with_words).words
                seconds[with_words] += time.perf_counter() - started
        return read[key]

    print("| set | queries with a word an enrolled car carries | rank-1 appearance / with words | fixed / broken by words "
          "| true match | wrong match | false match (unknown cars) |")
    print("|---|---|---|---|---|---|---|")
    carried = []  # per set: the words read on each car's references
    for name in SETS:
        path = MANIFESTS / f"{name}.json"
        if not path.exists():
            sys.exit(f"no {path}: run `python -m bench.manifests` first")
        manifest = msgspec.json.decode(path.read_bytes(), type=evaluation.EvalManifest)
        prepared = evaluation.prepare(engine, path)
        scores = evaluation.car_similarities(prepared.queries, prepared.references, prepared.reference_cars,
                                             evaluation.IDENTIFY_SCORING)
        car_words: dict[str, set[str]] = {car: set() for car in scores.cars}
        for reference in manifest.references:
            car_words[reference.car or ""] |= words(reference, path.parent)
        carriers = [f"{car} {' '.join(sorted(w))}" for car, w in car_words.items() if w]
        carried.append(f"{prepared.name}: {len(carriers)} of {len(car_words)} cars: " + "; ".join(carriers))
        firsts, verdicts, worded_firsts, worded_verdicts, evidenced = [], [], [], [], 0
        for index, query in enumerate(manifest.queries):
            candidates = scores.candidates(index)
            read_words = words(query, path.parent)
            evidenced += bool(word_evidence(read_words, car_words))
            verdict = decide(candidates, policy)
            worded = break_tie(verdict, candidates, read_words, car_words, policy)
            firsts.append(candidates[0].car_id)
            verdicts.append(verdict)
            worded_firsts.append(worded.verdict.candidates[0].car_id)
            worded_verdicts.append(worded.verdict)
        truths = prepared.truths
        known = [i for i, t in enumerate(truths) if t is not None]
        rank1, worded_rank1 = (np.mean([f[i] == truths[i] for i in known]) for f in (firsts, worded_firsts))
        fixed = sum(firsts[i] != truths[i] and worded_firsts[i] == truths[i] for i in known)
        broken = sum(firsts[i] == truths[i] and worded_firsts[i] != truths[i] for i in known)
        before, after = evaluation.match_rates(verdicts, truths), evaluation.match_rates(worded_verdicts, truths)
        cells = " | ".join(f"{b:.1%} / {a:.1%}" for b, a in zip(before, after))
        if None not in truths:
            cells = cells.rsplit(" | ", 1)[0] + " | -"
        print(f"| {prepared.name} | {evidenced} of {len(truths)} | {rank1:.1%} / {worded_rank1:.1%} | {fixed} / {broken} | {cells} |")
    with_any = sum(bool(w) for w in read.values())
    print("\nwords read on each car's references:\n" + "\n".join(carried))
    print(f"\n{len(read)} crops read, words on {with_any}; a crop's text took {seconds[False] / len(read) * 1000:.0f} ms "
          f"with the numbers alone, {seconds[True] / len(read) * 1000:.0f} ms with the words; threshold {policy.threshold}, margin {policy.margin} "
          "(identify's defaults); each cell: appearance / with words")


if __name__ == "__main__":
    main()
