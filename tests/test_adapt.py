"""`adapt`: the ONNX graph as a torch module, clustering, the reference
check, and the whole method through the real sidecar on real photos."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from bench.datasets import epfl_frames
from sidecar import adaptation
from sidecar.adaptation import Adaptation
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.evaluation import IDENTIFY_SCORING, UnknownCheck, car_similarities, reference_check, unknown_check
from sidecar.identification import Identification
from sidecar.inference.manifest import InputSpec
from sidecar.inference.turns import MODEL_TURNS, background
from sidecar.protocol.endpoint import quiet_context
from sidecar.protocol.messages import AdaptParams, CarFields, EnrollParams, IdentifyParams, ImageRef, InitializeParams
from sidecar.stages.match import MatchPolicy, decide
from sidecar.training.adapt import MICRO_BATCH, AdaptRecipe, accumulate_gradients, adapt, dbscan, pseudo_labels
from sidecar.training.onnx_module import OnnxModule, load
from tests.sidecar_process import SidecarProcess

QUIET = quiet_context()


class SmallEmbedder(nn.Module):
    """Every operator family the shipped embedders use, plus a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.neck = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + torch.relu(self.depthwise(x))
        return self.head(self.neck(x.mean(dim=(2, 3))))


def export(module: nn.Module, path: Path) -> None:
    module.eval()
    torch.onnx.export(module, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"], output_names=["embedding"],
                      dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False)


def run(path: Path, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"image": batch})[0]


def test_onnx_module_computes_what_onnxruntime_computes_and_exports_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = SmallEmbedder()
    with torch.no_grad():  # statistics away from the identity, so a wrong batch norm shows
        original.neck.running_mean.uniform_(-1, 1)
        original.neck.running_var.uniform_(0.5, 2)
    export(original, tmp_path / "small.onnx")
    batch = np.random.default_rng(0).random((3, 3, 16, 16), np.float32)
    module = load(tmp_path / "small.onnx")
    with torch.no_grad():
        assert np.abs(module(torch.from_numpy(batch)).numpy() - run(tmp_path / "small.onnx", batch)).max() < 1e-5

    module.export(tmp_path / "again.onnx", 16, 16)
    assert np.abs(run(tmp_path / "again.onnx", batch) - run(tmp_path / "small.onnx", batch)).max() < 1e-5


def test_onnx_module_trains_only_what_is_not_frozen(tmp_path: Path) -> None:
    export(SmallEmbedder(), tmp_path / "small.onnx")
    module = load(tmp_path / "small.onnx")
    module.freeze(0.5)  # two convolutions: the first stays
    first, second = module.convolutions()
    before = [p.detach().clone() for p in first + second]
    optimiser = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    module(torch.rand(2, 3, 16, 16)).square().sum().backward()
    optimiser.step()
    after = first + second
    assert all(torch.equal(b, a) for b, a in zip(before[: len(first)], after[: len(first)]))
    assert not any(torch.equal(b, a) for b, a in zip(before[len(first):], after[len(first):]))
    stats = [name for name, _ in module.named_buffers()]
    assert len(stats) >= 2  # the neck's running mean and variance are not trained


def test_onnx_module_refuses_unsupported_operators() -> None:
    node = onnx.helper.make_node("Softmax", ["image"], ["embedding"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [1, 4])])
    with pytest.raises(ValueError, match="Softmax"):
        OnnxModule(onnx.helper.make_model(graph))


def test_dbscan_finds_dense_groups_and_leaves_stragglers_out() -> None:
    points = np.array([0.0, 0.1, 0.2, 0.15, 5.0, 5.1, 5.2, 5.05, 20.0])
    distance = np.abs(points[:, None] - points[None, :])
    labels = dbscan(distance, eps=0.3, min_samples=3)
    assert labels[8] == -1
    assert len(set(labels[:4])) == 1 and len(set(labels[4:8])) == 1 and labels[0] != labels[4]


def test_pseudo_labels_choose_the_radius_that_keeps_the_references_cars_apart() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    # Two of the three cars are close to each other: a wide radius merges them.
    centres[1] = centres[0] + 0.1 * rng.normal(size=16)

    def around(car: int, n: int) -> np.ndarray:
        points = centres[car] + 0.08 * rng.normal(size=(n, 16))
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    event = np.vstack([around(car, 40) for car in range(3)])
    references = np.vstack([around(car, 2) for car in range(3)])
    labels, radius, agreement = pseudo_labels(event, references, ["a", "a", "b", "b", "c", "c"], AdaptRecipe())
    assert agreement == 1.0 and radius == 0.45  # from 0.5 on, cars a and b are one cluster
    # Radii that keep the references as well: the narrowest when asked (adapt's check for unenrolled cars).
    assert pseudo_labels(event, references, ["a", "a", "b", "b", "c", "c"], AdaptRecipe(), widest=False)[1:] == (0.3, 1.0)
    majority = [np.bincount(labels[i * 40 : (i + 1) * 40][labels[i * 40 : (i + 1) * 40] >= 0]).argmax() for i in range(3)]
    assert len(set(majority)) == 3
    assert np.mean([labels[i * 40 + j] == majority[i] for i in range(3) for j in range(40)]) > 0.9


def test_a_training_step_in_parts_has_the_whole_batchs_gradient(tmp_path: Path) -> None:
    export(SmallEmbedder(), tmp_path / "small.onnx")
    module = load(tmp_path / "small.onnx")
    torch.manual_seed(0)
    images, targets = torch.rand(2 * MICRO_BATCH + 5, 3, 16, 16), torch.randint(0, 3, (2 * MICRO_BATCH + 5,))
    memory = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)

    whole = torch.nn.functional.normalize(module(images), dim=1)
    torch.nn.functional.cross_entropy(whole @ memory.T / 0.05, targets).backward()
    expected = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    module.zero_grad()
    features, loss = accumulate_gradients(module, images, targets, memory, 0.05)
    got = [p.grad for p in module.parameters() if p.grad is not None]
    assert len(got) == len(expected) > 0
    assert all(torch.allclose(g, e, rtol=1e-4, atol=1e-6) for g, e in zip(got, expected))
    assert torch.allclose(features, whole.detach(), atol=1e-6)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(whole @ memory.T / 0.05, targets).item(), rel=1e-5)


def test_adapt_pauses_its_training_while_an_interactive_request_is_in_flight(tmp_path: Path) -> None:
    export(SmallEmbedder(), tmp_path / "small.onnx")
    module = load(tmp_path / "small.onnx")
    spec = InputSpec(name="image", height=16, width=16, channel_order="rgb", scale=1 / 255,
                     mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], resize="stretch")
    rng = np.random.default_rng(0)

    def crops(colour: tuple[int, int, int], n: int) -> list[np.ndarray]:
        return [np.clip(np.array(colour) + rng.normal(0, 6, (24, 24, 3)), 0, 255).astype(np.uint8) for _ in range(n)]

    colours = [(230, 40, 40), (40, 200, 40), (40, 40, 230)]  # three cars, three liveries
    event = [c for colour in colours for c in crops(colour, 12)]
    references = [c for colour in colours for c in crops(colour, 2)]
    steps: list[int] = []
    first_step, interactive_in = threading.Event(), threading.Event()

    def progress(done: int, total: int, stage: str) -> None:
        steps.append(done)
        if done == 1:
            first_step.set()
            interactive_in.wait(5)

    def run() -> None:
        with background():
            adapt(module, event, references, ["a", "a", "b", "b", "c", "c"], spec,
                  AdaptRecipe(rounds=1, iterations=3, clusters_per_batch=3, images_per_cluster=2, min_samples=3, k1=8),
                  progress=progress)

    training = threading.Thread(target=run)
    training.start()
    assert first_step.wait(60), "adapt found nothing to train on"
    with MODEL_TURNS.interactive():
        interactive_in.set()
        time.sleep(0.3)
        assert steps == [1]  # the next step waits for the request
    training.join(60)
    assert steps == [1, 2, 3]


def test_pseudo_labels_number_only_the_clusters_the_event_is_in() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16))

    def around(car: int, n: int) -> np.ndarray:
        points = centres[car] + 0.08 * rng.normal(size=(n, 16))
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    # Cars d to h were enrolled, look alike and are not in the event: their
    # references form a cluster of their own.
    event = np.vstack([around(car, 40) for car in range(3)])
    references = np.vstack([around(3, 5), around(0, 2), around(1, 2), around(2, 2)])
    labels, _, _ = pseudo_labels(event, references, ["d", "e", "f", "g", "h", "a", "a", "b", "b", "c", "c"],
                                 AdaptRecipe())
    assert sorted(set(labels[labels >= 0])) == [0, 1, 2]


def test_reference_check_counts_rank1_true_and_false_matches() -> None:
    # Car a: two close references; car b: two references far apart, the
    # second close to car a's (a livery seen from a misleading side).
    vectors = np.array([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.0, 0.0, 1.0], [0.9, 0.0, 0.44]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    check = reference_check(vectors, ["a", "a", "b", "b"], MatchPolicy(threshold=0.8, margin=0.0, top_k=5))
    assert check.queries == 4
    assert check.rank1 == 0.75  # b's second reference finds car a first
    assert check.true_match_rate == 0.5  # and b's first is right but below the threshold
    assert check.false_match_rate == 0.75  # with its own car left out, all but b's first match the other car


def test_unknown_check_counts_the_new_matches_in_clusters_the_current_model_matched_nothing_of() -> None:
    clusters = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -1])
    before = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)  # cluster 0 is an enrolled car's
    after = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0], bool)  # its other crops now match too: fine
    # Clusters 1 and 2 looked unenrolled, and the new model matches one of their 5 crops; the outlier it matches
    # (a lone crop) is nobody's evidence.
    assert unknown_check(clusters, before, after) == UnknownCheck(crops=5, matched=1)
    assert unknown_check(clusters, before, before) == UnknownCheck(crops=5, matched=0)
    assert unknown_check(clusters, np.ones(10, bool), after) == UnknownCheck(crops=0, matched=0)
    assert adaptation._safe(UnknownCheck(crops=300, matched=3)) and not adaptation._safe(UnknownCheck(crops=300, matched=4))
    assert adaptation._safe(UnknownCheck(crops=0, matched=0))


def test_a_better_model_matching_apparently_unenrolled_cars_is_used_only_when_the_whole_field_is_enrolled() -> None:
    params = AdaptParams(images=["event"])
    claimed, spared = UnknownCheck(crops=100, matched=2), UnknownCheck(crops=100, matched=1)
    assert adaptation._switch(True, spared, params, unreadable=0)[0]
    switched, reason = adaptation._switch(True, claimed, params, unreadable=0)
    assert not switched and "2 of the 100" in reason and "whole_field" in reason
    assert adaptation._switch(True, claimed, AdaptParams(images=["event"], whole_field=True), unreadable=0)[0]
    assert not adaptation._switch(False, spared, params, unreadable=0)[0]
    assert not adaptation._switch(True, spared, params, unreadable=1)[0]
    assert not adaptation._switch(True, spared, AdaptParams(images=["event"], switch=False), unreadable=0)[0]


def test_reference_check_scores_each_reference_as_identify_would_without_it() -> None:
    rng = np.random.default_rng(3)  # noise where ranking by mean and by closest reference disagree
    centres = rng.normal(size=(4, 16))
    vectors = np.vstack([centre + rng.normal(scale=0.9, size=(3, 16)) for centre in centres]
                        + [centres[0] + rng.normal(size=(1, 16))])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    cars = [c for c in "abcd" for _ in range(3)] + ["e"]  # e: one reference, checked only as an unknown car
    policy = MatchPolicy(threshold=0.5, margin=0.02, top_k=5)
    known, unknown = [], []
    for i, car in enumerate(cars):
        others = [j for j in range(len(cars)) if j != i]
        scores = car_similarities(vectors[[i]], vectors[others], [cars[j] for j in others], IDENTIFY_SCORING)
        ranked = scores.candidates(0)
        if car in {cars[j] for j in others}:
            known.append((ranked[0].car_id == car, decide(ranked, policy)))
        rest = [j for j in range(len(cars)) if cars[j] != car]  # the car never enrolled
        alone = car_similarities(vectors[[i]], vectors[rest], [cars[j] for j in rest], IDENTIFY_SCORING)
        unknown.append(decide(alone.candidates(0), policy).decision == "match")
    check = reference_check(vectors, cars, policy)
    assert check.queries == len(known) == 12
    assert check.rank1 == pytest.approx(np.mean([first for first, _ in known]))
    assert check.true_match_rate == pytest.approx(np.mean([v.decision == "match" and v.car_id == cars[i]
                                                           for i, (_, v) in enumerate(known)]))
    assert check.false_match_rate == pytest.approx(np.mean(unknown))
    assert 0 < check.rank1 < 1 and 0 < check.false_match_rate  # the noise leaves something to get wrong


def enroll_three_cars(process: SidecarProcess, frames: dict[tuple[int, int], Path]) -> None:
    for car in (1, 2, 3):
        images = [{"path": str(frames[(car, frame)])} for frame in (1, 30, 60)]
        reply = process.request("enroll", {"car": {"label": f"car {car}"}, "images": images}, id=f"enroll{car}")
        assert reply["result"]["car"]["references"] == 3


def test_adapt_measures_on_the_references_and_switches_only_when_better(tmp_path: Path, dev_data: Path) -> None:
    frames = {(f.car, f.frame): f.path for f in epfl_frames()}
    event = tmp_path / "event"
    event.mkdir()
    for (car, frame), path in frames.items():
        if car in (1, 2, 3, 4) and frame % 8 == 0:  # car 4 is never enrolled
            shutil.copy(path, event / path.name)
    (event / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    library = tmp_path / "lib"
    process = SidecarProcess("json")
    try:
        shipped = process.request("initialize", {"library": str(library)}, id="init")["result"]["models"][1]
        enroll_three_cars(process, frames)
        reply = process.request("adapt", {"images": [str(event)], "rounds": 1, "iterations": 4}, id="adapt", timeout=600)
        result = reply["result"]
        assert result["adapted_from"] == shipped["name"] and result["photos"] == len(list(event.iterdir())) - 1
        assert [f["path"] for f in result["failed"]] == [str(event / "broken.jpg")]
        assert result["crops"] >= result["photos"] and result["before"]["references"] == 9
        assert result["better"] == (
            result["after"]["rank1"] >= result["before"]["rank1"]
            and result["after"]["true_match"] >= result["before"]["true_match"]
            and result["after"]["false_match"] <= result["before"]["false_match"]
            and result["after"] != result["before"])
        # Car 4's frames (13 of the event's 54 crops) form a cluster the shipped model matches to no enrolled car;
        # the enrolled cars' crops are matched, most of them.
        unknowns = result["unknowns"]
        assert 4 <= unknowns["crops"] <= result["crops"] // 2
        assert 0 <= unknowns["matched"] <= unknowns["crops"]
        assert result["switched"] == (result["better"] and unknowns["matched"] <= 0.01 * unknowns["crops"])
        # Where the time went, stage by stage (bench.adapt prints it).
        assert set(result["stage_seconds"]) == {"references", "event", "train", "check"}
        model_file = library / "models" / f"{result['model']}.onnx"
        assert model_file.exists() == result["switched"]
        models = process.request("initialize", {"library": str(library)}, id="again")["result"]["models"]
        assert models[1]["name"] == (result["model"] if result["switched"] else shipped["name"])
    finally:
        process.kill()


def test_a_switched_library_keeps_its_model_falls_back_when_it_is_damaged_and_reverts(
    tmp_path: Path, dev_data: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Switching, forced ('better' depends on training; the mechanism must not)."""
    monkeypatch.setattr(adaptation, "_better", lambda after, before: True)
    monkeypatch.setattr(adaptation, "_safe", lambda unknowns: True)
    frames = {(f.car, f.frame): f.path for f in epfl_frames()}
    event = [str(frames[(car, frame)]) for car in (1, 2, 3) for frame in range(2, 100, 12)]
    library = tmp_path / "lib"
    engine = Engine(settings_from_env())
    shipped = engine.embedder().key
    identification = Identification(engine)

    def enroll(label: str, car: int, frames_: tuple[int, ...], car_id: str | None = None) -> None:
        fields = CarFields(label=label) if car_id is None else CarFields(label=label, id=car_id)
        images = [ImageRef(path=str(frames[(car, f)])) for f in frames_]
        identification.enroll(EnrollParams(car=fields, images=images), QUIET)

    try:
        engine.open_library(library)
        for car in (1, 2, 3):
            enroll(f"car {car}", car, (1, 30, 60))
        result = Adaptation(engine).adapt(AdaptParams(images=event, rounds=1, iterations=2), QUIET)
        assert result.switched and engine.embedder().key != shipped
        spec = json.loads((library / "embedder.json").read_text())
        assert spec["name"] == result.model and spec["training"]["validation"]["references after"]
        assert len(engine.library().index) == 9  # every reference, embedded again by the new model

        # A reference enrolled now is embedded by the adapted model; identify matches with it.
        enroll("car 4", 4, (1,))
        found = identification.identify(IdentifyParams(image=ImageRef(path=str(frames[(2, 31)]))), QUIET)
        assert found.vehicles[0].candidates[0].label == "car 2"
    finally:
        engine.close()

    engine = Engine(settings_from_env())
    try:
        info = engine.initialize(InitializeParams(library=str(library)), QUIET)
        assert info.models[1].name == result.model and info.models[1].adapted_from == "liveryid-reid-mnv2"
        assert info.library is not None and info.library.references == 10
    finally:
        engine.close()

    (library / "models" / f"{result.model}.onnx").write_bytes(b"damaged")
    engine = Engine(settings_from_env())
    try:
        info = engine.initialize(InitializeParams(library=str(library)), QUIET)
        # The shipped model takes over and embeds car 4's reference, enrolled under the adapted one.
        assert info.models[1].adapted_from is None and info.models[1].status == "loaded"
        assert info.library is not None and info.library.references == 10
        assert Adaptation(engine).revert(None, QUIET).model == shipped
        assert not (library / "embedder.json").exists()
    finally:
        engine.close()
