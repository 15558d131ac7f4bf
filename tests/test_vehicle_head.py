"""The detector's retrained last layer (sidecar/training/vehicle_head.py) on
the real COCO NanoDet graph: assignment, learning, and the grafted ONNX
computing what torch computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="training needs the `train` extra")

from sidecar.inference.manifest import load_manifest  # noqa: E402
from sidecar.stages.preprocess import to_tensor  # noqa: E402
from sidecar.training import vehicle_head  # noqa: E402
from sidecar.training.vehicle_head import (  # noqa: E402
    CellSamples,
    FeatureExtractor,
    HeadRecipe,
    VehicleHead,
    atss_assign,
    coco_head,
    coco_head_3x3,
    collect,
    graft,
    train,
)

MODELS = Path(__file__).resolve().parents[1] / "models"
COCO = load_manifest(MODELS).get("nanodet-m-coco")
VEHICLES = [COCO.heads[0].classes.index(name) for name in COCO.heads[0].vehicle_classes]


@pytest.fixture(scope="module")
def coco_model() -> onnx.ModelProto:
    return onnx.load(MODELS / COCO.file)


def striped_block(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 320x240 grey scene with one boxed 'vehicle': a striped block no COCO class knows well."""
    image = np.clip(rng.normal(110, 12, (240, 320, 3)), 0, 255).astype(np.uint8)
    w, h = int(rng.integers(90, 160)), int(rng.integers(50, 90))
    x, y = int(rng.integers(0, 320 - w)), int(rng.integers(0, 240 - h))
    image[y : y + h, x : x + w] = (20, 20, 220)
    image[y : y + h, x : x + w : 12] = (240, 240, 240)
    return image, np.asarray([[x, y, x + w, y + h]], np.float32)


def test_atss_picks_cells_inside_the_box_at_a_scale_that_fits_it() -> None:
    centres = np.concatenate([vehicle_head.grid_centres(416 // s, s) for s in vehicle_head.STRIDES])
    level = np.concatenate([np.full((416 // s) ** 2, i) for i, s in enumerate(vehicle_head.STRIDES)])
    stride = np.asarray(vehicle_head.STRIDES, np.float32)[level]
    small, large = np.asarray([100, 100, 140, 130], np.float32), np.asarray([150, 150, 400, 330], np.float32)
    assigned = atss_assign(np.stack([small, large]), centres, level, stride)
    for index, box in enumerate((small, large)):
        cells = np.flatnonzero(assigned == index)
        assert cells.size > 0
        assert ((centres[cells] > box[:2]) & (centres[cells] < box[2:])).all()
    # A 40-pixel box is a stride-8 object, a 250-pixel box a stride-32 one.
    assert set(level[assigned == 0]) == {0}
    assert 2 in set(level[assigned == 1]) and 0 not in set(level[assigned == 1])
    assert (assigned[(centres[:, 0] < 90) & (centres[:, 1] < 90)] == -1).all()


def test_cell_samples_join_canvases_in_order_and_keep_only_the_joined_copy() -> None:
    rng = np.random.default_rng(3)
    samples = CellSamples()
    features = [rng.normal(size=(n, 128)).astype(np.float32) for n in (5, 0, 7)]
    maps = [rng.normal(size=(4, 4, 128)).astype(np.float16) for _ in features]
    for canvas, (cells, padded) in enumerate(zip(features, maps)):
        n = len(cells)
        samples.add({2: padded}, features=cells, level=np.full(n, 2), centres=np.zeros((n, 2), np.float32),
                    targets=np.zeros((n, 4), np.float32), weights=np.ones(n, np.float32),
                    box_weights=np.ones(n, np.float32), canvas=np.full(n, canvas))
    data = samples.stacked()
    np.testing.assert_array_equal(data["features"].numpy(), np.concatenate(features))
    np.testing.assert_array_equal(data["canvas"].numpy(), [0] * 5 + [2] * 7)
    assert len(samples.features) == 1 and samples.stacked()["features"].data_ptr() == data["features"].data_ptr()
    stacked = samples.stacked_maps()[2]
    assert stacked.dtype == torch.float16
    np.testing.assert_array_equal(stacked.numpy(), np.stack(maps))
    assert samples.stacked_maps()[2].data_ptr() == stacked.data_ptr()


def test_training_learns_to_score_the_labelled_object(coco_model: onnx.ModelProto) -> None:
    rng = np.random.default_rng(0)
    scenes = [striped_block(rng) for _ in range(8)]
    # Photos with nothing boxed are negatives, cropped at random where others zoom on their first box.
    negatives = [(np.clip(rng.normal(110, 12, (240, 320, 3)), 0, 255).astype(np.uint8), np.zeros((0, 4), np.float32))
                 for _ in range(2)]
    scenes += negatives
    recipe = HeadRecipe(canvases_per_image=3, iterations=150, batch_canvases=8, random_negatives=128)
    assert recipe.retrained_3x3  # the shipped recipe, stride 16 and 32 convolutions retrained
    extractor = FeatureExtractor(coco_model, COCO.input, threads=2, map_levels=recipe.retrained_3x3)
    samples = collect([(image, boxes, False) for image, boxes in scenes], extractor, VEHICLES, recipe)
    data = samples.stacked()
    positive = ~torch.isnan(data["targets"][:, 0])
    assert not positive[data["canvas"] >= 8 * 3].any() and (data["canvas"] >= 8 * 3).any()
    before = VehicleHead(coco_head(coco_model), VEHICLES)
    after = train(samples, coco_head(coco_model), VEHICLES, recipe, coco_head_3x3(coco_model))
    initial_3x3 = {level: conv for level, conv in coco_head_3x3(coco_model).items() if level in recipe.retrained_3x3}
    moved = [np.abs(conv.weight.detach().numpy().reshape(128, 128, 3, 3) - initial_3x3[int(level)][0]).max()
             for level, conv in after.convs_3x3.items()]
    assert len(moved) == 2 and min(moved) > 1e-4  # the convolutions learnt too
    with torch.no_grad():
        score_before = before(data["features"], data["level"])[:, 0].sigmoid()
        features_after = after.cell_features(data["features"], data["level"], data["canvas"], data["centres"],
                                             samples.stacked_maps())
        score_after = after(features_after, data["level"])[:, 0].sigmoid()
    assert score_after[positive].mean() > score_before[positive].mean() + 0.2
    assert score_after[~positive].mean() < 0.05


def test_training_3x3_convolutions_needs_their_maps(coco_model: onnx.ModelProto) -> None:
    image, box = striped_block(np.random.default_rng(2))
    recipe = HeadRecipe(canvases_per_image=1, iterations=1, batch_canvases=1)
    samples = collect([(image, box, False)], FeatureExtractor(coco_model, COCO.input, threads=2), VEHICLES, recipe)
    with pytest.raises(ValueError, match="needs their maps"):
        train(samples, coco_head(coco_model), VEHICLES, recipe, coco_head_3x3(coco_model))


def test_a_cell_neighbourhood_through_the_3x3_layer_gives_the_graphs_features(coco_model: onnx.ModelProto) -> None:
    image, _ = striped_block(np.random.default_rng(3))
    canvas = np.full((416, 416, 3), 114, np.uint8)
    canvas[:240, :320] = image
    features, _, _, maps = FeatureExtractor(coco_model, COCO.input, threads=2, map_levels=(1, 2))(canvas)
    head = VehicleHead(coco_head(coco_model), VEHICLES, 0, {1: coco_head_3x3(coco_model)[1],
                                                             2: coco_head_3x3(coco_model)[2]})
    extractor = FeatureExtractor(coco_model, COCO.input, threads=2)
    level, centres = torch.from_numpy(extractor.level), torch.from_numpy(extractor.centres.astype(np.float32))
    with torch.no_grad():
        recomputed = head.cell_features(torch.zeros(len(level), 128), level, torch.zeros(len(level), dtype=torch.long),
                                        centres, {k: torch.from_numpy(v[None]) for k, v in maps.items()})
    retrained = extractor.level > 0
    np.testing.assert_allclose(recomputed.numpy()[retrained], features[retrained], atol=1e-4)
    assert (recomputed.numpy()[~retrained] == 0).all()  # stride 8 keeps the features it was given


@pytest.mark.parametrize(("hidden", "retrained_3x3"), [(0, ()), (16, ()), (16, (1, 2))])
def test_the_grafted_graph_computes_the_head_and_keeps_the_coco_outputs(coco_model: onnx.ModelProto,
                                                                         hidden: int,
                                                                         retrained_3x3: tuple[int, ...]) -> None:
    import onnxruntime as ort

    head = VehicleHead(coco_head(coco_model), VEHICLES, hidden,
                       {level: coco_head_3x3(coco_model)[level] for level in retrained_3x3})
    with torch.no_grad():
        head.layers[1].weight[0] += 0.01  # anything but the initial weights
        for conv in head.convs_3x3.values():
            conv.weight.mul_(1.1)
        for branch in head.branches:  # the residual branch starts at zero: make it count
            torch.nn.init.normal_(branch[2].weight, std=0.05)
            torch.nn.init.normal_(branch[2].bias, std=0.05)
    grafted = graft(coco_model, head)
    image, _ = striped_block(np.random.default_rng(1))
    canvas = np.full((416, 416, 3), 114, np.uint8)
    canvas[:240, :320] = image
    tensor = to_tensor([canvas], COCO.input)
    names = [f"{kind}_s{s}" for s in vehicle_head.STRIDES for kind in ("vehicle", "vehicle_boxes", "scores")]
    out = dict(zip(names, ort.InferenceSession(grafted.SerializeToString()).run(names, {"image": tensor})))
    coco_scores = ort.InferenceSession(coco_model.SerializeToString()).run(["scores_s16"], {"image": tensor})[0]
    np.testing.assert_array_equal(out["scores_s16"], coco_scores)

    extractor = FeatureExtractor(coco_model, COCO.input, threads=2, map_levels=retrained_3x3)
    features, _, _, maps = extractor(canvas)
    level = torch.from_numpy(extractor.level)
    with torch.no_grad():
        cell_features = head.cell_features(torch.from_numpy(features), level, torch.zeros(len(level), dtype=torch.long),
                                           torch.from_numpy(extractor.centres.astype(np.float32)),
                                           {k: torch.from_numpy(v[None]) for k, v in maps.items()})
        expected = head(cell_features, level).numpy()
    got = np.concatenate([np.concatenate([out[f"vehicle_s{s}"][0], out[f"vehicle_boxes_s{s}"][0]], axis=1)
                          for s in vehicle_head.STRIDES])
    np.testing.assert_allclose(got[:, 0], 1 / (1 + np.exp(-expected[:, 0])), atol=1e-5)
    np.testing.assert_allclose(got[:, 1:], expected[:, 1:], atol=1e-4)
