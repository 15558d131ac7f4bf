"""`adapt`: fit the library's embedder to the user's own event.

The photos are unlabelled: the vehicles the detector finds in them are
clustered into pseudo-identities and the embedder is fine-tuned on those
(sidecar/training/adapt.py). Whether the result is better is decided on the
only labels there are, the references the user enrolled: each reference of
a car with several is matched against the rest (rank-1, true matches at the
embedder's threshold), and against the other cars alone (false matches, as
for a car nobody enrolled). The new model is used only when it is at least
as good on all three and better on one, and when it leaves the event's
apparently unenrolled cars unmatched (`evaluation.unknown_check`): a car in
the photos that nobody enrolled is learnt like the others, and can be learnt
as an enrolled look-alike without the references showing it (unless the
user says the whole field is enrolled: then those are enrolled cars the
current model misses).

Switching re-embeds every reference with the new model into the database,
builds its index, and only then points the library at it; the shipped
model's vectors and index stay, so `adapt.revert` is instant and a crash at
any step leaves the library on one model or the other. The model file lives
in the library (`models/`), named by its sha256, with its spec (training
data, recipe, before/after figures) in `embedder.json`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from sidecar.engine import Engine
from sidecar.errors import InvalidParams, RpcError, TrainingUnavailable
from sidecar.evaluation import ReferenceCheck, UnknownCheck, matched, reference_check, unknown_check
from sidecar.identification import expand_photos, match_policy
from sidecar.inference.manifest import EmbedderSpec, Training, sha256_of
from sidecar.inference.session import OrtSession
from sidecar.inference.turns import background
from sidecar.library.library import Library
from sidecar.library.store import ReferenceRow
from sidecar.protocol.endpoint import RequestContext
from sidecar.protocol.messages import AdaptParams, AdaptResult, AdaptRevertResult, TagFailure
from sidecar.protocol.messages import ReferenceCheck as ReferenceCheckMessage
from sidecar.protocol.messages import UnknownCheck as UnknownCheckMessage
from sidecar.stages import colour
from sidecar.stages.decode import decode_photo, read_file
from sidecar.stages.embed import Embedder, Region, crop
from sidecar.stopwatch import Stopwatch

if TYPE_CHECKING:  # torch is imported only when adapt runs
    from sidecar.training.adapt import AdaptRecipe
    from sidecar.training.onnx_module import OnnxModule

log = logging.getLogger(__name__)
# Smaller boxes are distant cars: a few hundred pixels of blur teach nothing.
MIN_CROP_SIDE = 48
UNKNOWN_BUDGET = 0.01
"""Share of the apparently unenrolled cars' crops a new model may match: the false-match rate issue #4 allows."""


class Adaptation:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @background()
    def adapt(self, params: AdaptParams, context: RequestContext) -> AdaptResult:
        try:
            from sidecar.training import adapt as training
            from sidecar.training.onnx_module import load
        except ImportError as exc:
            raise TrainingUnavailable(
                f"adapt trains a model and needs torch, which this installation lacks ({exc}); "
                "install liveryid with the `train` extra", {"missing": exc.name}) from None
        library = self.engine.library()
        current = self.engine.embedder()
        base_name = current.spec.adapted_from or current.spec.name
        policy = match_policy(current, None, None, 5)

        watch = Stopwatch()
        with watch.stage("references"):
            references = library.store.references()
            # Each reference's region, checked as matching sees it (the embedder averages boxes) and trained on as
            # a crop; only the region is kept of each photo: a library of 24 MP photos would not fit in memory whole.
            readable: list[tuple[ReferenceRow, Region]] = []
            for reference in references:
                photo = self.engine.reference_image(reference.source)
                if photo is not None:
                    readable.append((reference, current.kept_region(photo, reference.box)))
            cars = [r.car_id for r, _ in readable]
            if not any(cars.count(c) > 1 for c in cars):
                raise InvalidParams("adapt checks the new model on the enrolled references: enroll two or more "
                                    "references of at least one car first", {"field": "library"})
            regions = [region for _, region in readable]
            checked = [crop(*region) for region in regions]
            references_before = current(regions)
            before = reference_check(references_before, cars, policy)

        with watch.stage("event"):
            event, photos, failed = self._event_regions(params, context)
            crops = [crop(*region) for region in event]
        if len(crops) < 2 * training.AdaptRecipe().min_samples:
            raise InvalidParams(f"{len(crops)} vehicles found in {photos} photos: too few to learn from",
                                {"field": "params.images"})
        recipe = training.AdaptRecipe(rounds=params.rounds, iterations=params.iterations)
        with watch.stage("train"):
            module = load(self.engine.model_file(current.spec.name))
            crop_colours = np.stack([colour.colour_histogram(c) for c in crops])
            reference_colours = np.stack([colour.colour_histogram(c) for c in checked])

            def appearance(embeddings: np.ndarray, of_references: bool) -> np.ndarray:
                """What matching compares: the embedding fused with the crops' colours, as the embed stage does."""
                weight = current.spec.colour_weight
                colours = reference_colours if of_references else crop_colours
                return colour.fuse(embeddings, colours, weight) if weight else embeddings

            rounds = training.adapt(module, crops, checked, cars, current.spec.input, recipe, appearance,
                                    lambda done, total, stage: context.progress(done, total, f"train: {stage}"))
            spec = self._save(library, module, current.spec, base_name, recipe, len(crops), photos, before)
        with watch.stage("check"):
            settings = self.engine.settings
            adapted = Embedder(spec, OrtSession(library.models_dir / spec.file, settings.intra_op_threads,
                                                settings.spin_wait))
            references_after = adapted(regions)
            after = reference_check(references_after, cars, policy)
            context.progress(1, 1, "check the event's unenrolled cars")
            event_before = current(event)
            clusters = training.pseudo_labels(event_before, references_before, cars, recipe, widest=False)[0]
            unknowns = unknown_check(clusters, matched(event_before, references_before, cars, policy),
                                     matched(adapted(event), references_after, cars, policy))
        assert spec.training is not None
        spec = msgspec.structs.replace(spec, training=msgspec.structs.replace(
            spec.training, validation={**spec.training.validation, **_figures("after", after)}))
        log.info("adapted %s: before %s, after %s, %s; seconds %s", base_name, before, after, unknowns,
                 watch.rounded())

        better = _better(after, before)
        switched, reason = _switch(better, unknowns, params, unreadable=len(references) - len(readable))
        if switched:
            library.store.add_embeddings(adapted.key, [(r.id, v) for (r, _), v in zip(readable, references_after)])
            self.engine.use_adapted(spec)
        else:
            (library.models_dir / spec.file).unlink()
        last = rounds[-1]
        return AdaptResult(
            model=spec.name, adapted_from=base_name, photos=photos, crops=len(crops), radius=last.radius, clusters=last.clusters,
            clustered=last.clustered, before=_message(before), after=_message(after), better=better,
            unknowns=UnknownCheckMessage(crops=unknowns.crops, matched=unknowns.matched), switched=switched,
            reason=reason, failed=failed, stage_seconds=watch.rounded(),
        )

    def revert(self, params: None, context: RequestContext) -> AdaptRevertResult:
        """Back to the shipped embedder; the adapted model stays in the library's folder."""
        self.engine.library()
        return AdaptRevertResult(model=self.engine.use_adapted(None).key)

    def _event_regions(self, params: AdaptParams, context: RequestContext) -> tuple[list[Region], int, list[TagFailure]]:
        """The regions of the vehicles in up to `max_photos` photos spread over the event, as matching reads them."""
        photos = sorted(set(expand_photos(params.images, params.recursive)))
        if len(photos) > params.max_photos:
            photos = [photos[int(i)] for i in np.linspace(0, len(photos) - 1, params.max_photos).round()]
        detector = self.engine.detector()
        classes = self.engine.vehicle_classes(None)
        embedder = self.engine.embedder()
        # Training works from crops at most twice the model's input: keep no more pixels than that.
        longest = 2 * max(embedder.spec.input.width, embedder.spec.input.height)
        regions, failed = [], []
        for done, path in enumerate(photos):
            context.progress(done, len(photos), "find vehicles")
            try:
                image = decode_photo(read_file(str(path), self.engine.limits), str(path), self.engine.limits).pixels
            except RpcError as exc:
                failed.append(TagFailure(path=str(path), code=exc.code, message=exc.message))
                continue
            found = detector(image, None, classes)
            for box in found.boxes:
                if min(box[2] - box[0], box[3] - box[1]) >= MIN_CROP_SIDE:
                    regions.append(embedder.kept_region(image, box, longest))
        return regions, len(photos) - len(failed), failed

    def _save(self, library: Library, module: OnnxModule, base: EmbedderSpec, base_name: str, recipe: AdaptRecipe, crops: int,
              photos: int, before: ReferenceCheck) -> EmbedderSpec:
        """Export the module into the library's models folder, named by its content."""
        library.models_dir.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.models_dir) as tmp:
            exported = Path(tmp) / "model.onnx"
            module.export(exported, base.input.height, base.input.width)
            digest = sha256_of(exported)
            name = f"{base_name}-adapted-{digest[:12]}"
            exported.replace(library.models_dir / f"{name}.onnx")
        return msgspec.structs.replace(
            base, name=name, version=time.strftime("%Y-%m-%d"), file=f"{name}.onnx", sha256=digest,
            adapted_from=base_name, build="liveryid adapt",
            training=Training(
                starting_weights=f"{base.name} ({base.sha256[:12]})",
                data=[f"{crops} unlabelled vehicle crops from {photos} photos of the library's event"],
                recipe=f"Cluster Contrast: {recipe}",
                validation=_figures("before", before),
                measured_with="adapt's reference check (sidecar/evaluation.py reference_check)",
            ),
        )

    def handlers(self) -> dict[str, Callable[[Any, RequestContext], Any]]:
        return {"adapt": self.adapt, "adapt.revert": self.revert}


def _better(after: ReferenceCheck, before: ReferenceCheck) -> bool:
    no_worse = (after.rank1 >= before.rank1 and after.true_match_rate >= before.true_match_rate
                and after.false_match_rate <= before.false_match_rate)
    return no_worse and (after.rank1, after.true_match_rate, -after.false_match_rate) != (
        before.rank1, before.true_match_rate, -before.false_match_rate)


def _safe(unknowns: UnknownCheck) -> bool:
    return unknowns.matched <= UNKNOWN_BUDGET * unknowns.crops


def _switch(better: bool, unknowns: UnknownCheck, params: AdaptParams, unreadable: int) -> tuple[bool, str]:
    """Whether the library uses the new model, and why (or why not)."""
    if not better:
        return False, "the new model is not better on the enrolled references: kept the current one"
    if not params.whole_field and not _safe(unknowns):
        return False, (f"better on the enrolled references, but it matches {unknowns.matched} of the {unknowns.crops} "
                       "crops of cars the current model takes for unenrolled ones (their clusters hold no match): "
                       "kept the current model. Enroll every car of the event and adapt again with whole_field, "
                       "which lets it match them")
    if unreadable:
        return False, (f"better on the references, but {unreadable} reference image(s) could not be read again to "
                       "embed them with it: kept the current model")
    if not params.switch:
        return False, "better on the enrolled references; not switched (switch: false)"
    return True, "better on the enrolled references: the library now uses it"


def _figures(when: str, check: ReferenceCheck) -> dict[str, str]:
    return {f"references {when}": f"rank-1 {check.rank1:.1%}, true match {check.true_match_rate:.1%}, "
                                  f"false match {check.false_match_rate:.1%} ({check.queries} references)"}


def _message(check: ReferenceCheck) -> ReferenceCheckMessage:
    return ReferenceCheckMessage(references=check.queries, rank1=check.rank1, true_match=check.true_match_rate,
                                 false_match=check.false_match_rate)
