"""The re-identification trainer on small synthetic identities: the recipe
learns, the export computes what torch computes, augmentations keep colour."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the `train` extra")

from sidecar.inference.manifest import InputSpec  # noqa: E402
from sidecar.inference.session import OrtSession  # noqa: E402
from sidecar.stages.preprocess import to_tensor  # noqa: E402
from sidecar.training.augment import AugmentRecipe, augment  # noqa: E402
from sidecar.training.mobilenetv2 import MobileNetV2Features  # noqa: E402
from sidecar.training import reid  # noqa: E402
from sidecar.training.reid import Recipe, batch_hard_triplet, embed, export_onnx, train  # noqa: E402

SPEC = InputSpec(name="image", height=64, width=64, channel_order="rgb", scale=1 / 255,
                 mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], resize="stretch")


def livery(colours: tuple[tuple[int, int, int], tuple[int, int, int]], rng: np.random.Generator) -> np.ndarray:
    """A 'car': two colour blocks, a dark wheel band, and noise, at a random size."""
    height, width = int(rng.integers(50, 90)), int(rng.integers(90, 160))
    image = np.empty((height, width, 3), np.uint8)
    image[:, : width // 2] = colours[0]
    image[:, width // 2 :] = colours[1]
    image[int(height * 0.8) :] = 30
    noise = rng.integers(-12, 13, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def test_augment_is_seeded_sized_and_keeps_hue() -> None:
    red = np.zeros((80, 120, 3), np.uint8)
    red[..., 2] = 200
    recipe = AugmentRecipe(erase=0.0)
    first = augment(red, (64, 48), recipe, np.random.default_rng(3))
    again = augment(red, (64, 48), recipe, np.random.default_rng(3))
    assert first.shape == (48, 64, 3) and np.array_equal(first, again)
    for seed in range(20):
        out = augment(red, (64, 48), recipe, np.random.default_rng(seed))
        hue = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[..., 0]
        assert np.all((hue <= 2) | (hue >= 178)), "a red livery must stay red"


def test_batch_hard_triplet_is_zero_only_when_identities_are_apart() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    mixed = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [5.1, 0.0]])
    assert batch_hard_triplet(apart, labels, 0.3).item() == 0.0
    assert batch_hard_triplet(mixed, labels, 0.3).item() > 4.0


@pytest.fixture(scope="module")
def trained() -> tuple[object, list[np.ndarray], list[str]]:
    rng = np.random.default_rng(0)
    palettes = {"red-white": ((0, 0, 220), (240, 240, 240)), "white-blue": ((240, 240, 240), (160, 40, 0)),
                "blue-yellow": ((200, 60, 0), (0, 220, 240)), "green-black": ((40, 160, 20), (20, 20, 20))}
    crops, identities = [], []
    for name, colours in palettes.items():
        for _ in range(4):
            crops.append(livery(colours, rng))
            identities.append(name)
    weights = MobileNetV2Features().state_dict()  # random: the test is about the recipe, not ImageNet
    recipe = Recipe(iterations=25, identities_per_batch=4, images_per_identity=2, warmup=3, frozen_layers=0)
    return train(crops, identities, SPEC, weights, recipe), crops, identities


def test_training_separates_identities(trained: tuple[object, list[np.ndarray], list[str]]) -> None:
    model, crops, identities = trained
    rng = np.random.default_rng(1)
    fresh = {"red-white": livery(((0, 0, 220), (240, 240, 240)), rng),
             "blue-yellow": livery(((200, 60, 0), (0, 220, 240)), rng)}
    gallery = embed(model, crops, SPEC)  # type: ignore[arg-type]
    queries = embed(model, list(fresh.values()), SPEC)  # type: ignore[arg-type]
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    nearest = [identities[int(np.argmax(gallery @ q))] for q in queries]
    assert nearest == list(fresh)


def test_exported_onnx_computes_the_torch_embedding(trained: tuple[object, list[np.ndarray], list[str]], tmp_path) -> None:
    model, crops, _ = trained
    path = tmp_path / "reid.onnx"
    export_onnx(model, SPEC, path)  # type: ignore[arg-type]
    batch = to_tensor([cv2.resize(c, (64, 64), interpolation=cv2.INTER_AREA) for c in crops[:5]], SPEC)
    (onnx_out,) = OrtSession(path, 1).run(["embedding"], {"image": batch})
    with torch.no_grad():
        torch_out = model(torch.from_numpy(batch)).numpy()  # type: ignore[operator]
    assert onnx_out.shape == (5, 1280)
    assert np.abs(onnx_out - torch_out).max() < 1e-3


def test_synthetic_identities_get_batches_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    palettes = [((0, 0, 220), (240, 240, 240)), ((240, 240, 240), (160, 40, 0)), ((200, 60, 0), (0, 220, 240)),
                ((40, 160, 20), (20, 20, 20)), ((0, 140, 255), (0, 0, 0)), ((90, 0, 90), (200, 200, 200))]
    names = ["real-a", "real-b", "real-c", "synthetic-a", "synthetic-b", "synthetic-c"]
    crops = [livery(palettes[i], rng) for i in range(6) for _ in range(2)]
    identities = [names[i] for i in range(6) for _ in range(2)]
    drawn: list[list[str]] = []
    original = reid.pk_batch

    def recording(*args: Any, **kwargs: Any) -> tuple[np.ndarray, Any, Any]:
        chosen, images, targets = original(*args, **kwargs)
        drawn.append([sorted(set(identities))[int(i)] for i in chosen])
        return chosen, images, targets

    monkeypatch.setattr(reid, "pk_batch", recording)
    recipe = Recipe(iterations=8, identities_per_batch=2, images_per_identity=2, warmup=2, frozen_layers=0)
    train(crops, identities, SPEC, MobileNetV2Features().state_dict(), recipe, synthetic=names[3:], synthetic_every=4)
    rendered = [all(n.startswith("synthetic") for n in batch) for batch in drawn]
    real = [not any(n.startswith("synthetic") for n in batch) for batch in drawn]
    assert rendered == [False, False, False, True] * 2 and all(r or s for r, s in zip(real, rendered))
    with pytest.raises(ValueError):
        train(crops[:8], identities[:8], SPEC, MobileNetV2Features().state_dict(), recipe, synthetic=names[3:4])
