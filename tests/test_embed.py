from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from sidecar.inference.manifest import Manifest
from sidecar.stages.embed import MAX_BATCH, Embedder, crop, l2_normalise

SPEC = msgspec.json.decode((Path(__file__).resolve().parents[1] / "models/manifest.json").read_bytes(), type=Manifest).get(
    "mobilenetv2-imagenet"
)


def test_crop_clips_to_the_image_and_never_comes_back_empty() -> None:
    image = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    assert crop(image, [2.2, 3.7, 5.1, 8.0]).shape == (5, 4, 3)  # floor/ceil outward
    assert crop(image, [-50, -50, 500, 500]).shape == (10, 20, 3)
    assert crop(image, [30, 30, 40, 40]).shape == (1, 1, 3)
    assert crop(image, None) is image


def test_l2_normalise_handles_zero_vectors() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


class FakeSession:
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def run(self, outputs: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = inputs["image"]
        self.batch_sizes.append(batch.shape[0])
        assert batch.shape[1:] == (3, 224, 224)
        # a "feature" that depends on the crop: its mean per channel, padded
        means = batch.mean(axis=(2, 3))
        return [np.concatenate([means, np.ones((len(batch), 1277), np.float32)], axis=1)]


def test_embedder_batches_in_chunks_and_returns_unit_vectors() -> None:
    session = FakeSession()
    embedder = Embedder(SPEC, session)  # type: ignore[arg-type]
    crops = [np.full((10 + i, 20, 3), i * 5, np.uint8) for i in range(MAX_BATCH + 3)]
    vectors = embedder.embed_crops(crops)
    assert session.batch_sizes == [MAX_BATCH, 3]
    assert vectors.shape == (MAX_BATCH + 3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(vectors[0], vectors[-1])
    assert embedder([]).shape == (0, 1280)
    # Without a box jitter a region is its crop's vector.
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)
    np.testing.assert_allclose(embedder([(image, [10, 5, 50, 40])]), embedder.embed_crops([image[5:40, 10:50]]))


def test_a_box_jitter_averages_the_box_grown_and_shrunk() -> None:
    jittered = msgspec.structs.replace(SPEC, box_jitter=0.1)
    embedder = Embedder(jittered, FakeSession())  # type: ignore[arg-type]
    assert embedder.key != Embedder(SPEC, FakeSession()).key  # type: ignore[arg-type]
    # Columns of different brightness, so each of the three crops has its own mean.
    image = np.repeat(np.linspace(0, 250, 100).astype(np.uint8)[None, :, None], 3, axis=2).repeat(50, axis=0)
    box = [20.0, 10.0, 70.0, 40.0]  # 50 x 30: 10% is 5 px and 3 px on each side
    grown, shrunk = image[7:43, 15:75], image[13:37, 25:65]
    expected = l2_normalise(embedder.embed_crops([image[10:40, 20:70], grown, shrunk]).sum(axis=0, keepdims=True))
    vectors = embedder([(image, box), (image, None), (image, np.array(box))])
    np.testing.assert_allclose(vectors[0], expected[0], rtol=1e-5)
    np.testing.assert_allclose(vectors[2], vectors[0], rtol=1e-6)
    assert not np.allclose(vectors[0], embedder.embed_crops([image[10:40, 20:70]])[0])
    # The whole image cannot grow: its box as it is twice, and shrunk.
    whole = l2_normalise(embedder.embed_crops([image, image, image[5:45, 10:90]]).sum(axis=0, keepdims=True))
    np.testing.assert_allclose(vectors[1], whole[0], rtol=1e-5)


def test_the_kept_region_of_a_photo_embeds_its_box_as_the_photo_does() -> None:
    embedder = Embedder(msgspec.structs.replace(SPEC, box_jitter=0.1), FakeSession())  # type: ignore[arg-type]
    # Brightness rising across and down, so a crop's vector says where its pixels were.
    photo = np.repeat((np.add.outer(np.arange(400) // 2, np.arange(600) // 3) % 256).astype(np.uint8)[..., None], 3, axis=2)
    for box in ([100.0, 50.0, 300.0, 250.0], [0.0, 0.0, 120.0, 90.0], [500.5, 300.2, 600.0, 400.0]):
        region, inside = embedder.kept_region(photo, box)
        assert region.size < photo.size and not np.shares_memory(region, photo)  # a copy, not a view of the photo
        np.testing.assert_allclose(embedder([(region, inside)]), embedder([(photo, box)]), rtol=1e-6)
        moved = [box[0] + 10, box[1], box[2] + 10, box[3]]
        assert not np.allclose(embedder([(region, inside)]), embedder([(photo, moved)]), rtol=1e-6)


def test_a_kept_region_shrunk_for_training_keeps_its_box_on_the_same_pixels() -> None:
    embedder = Embedder(msgspec.structs.replace(SPEC, box_jitter=0.1), FakeSession())  # type: ignore[arg-type]
    photo = np.zeros((2000, 3000, 3), np.uint8)
    photo[800:1200, 1000:2200] = 255  # a white car on black: the box is exactly the white
    box = [1000.0, 800.0, 2200.0, 1200.0]
    region, inside = embedder.kept_region(photo, box, longest=448)
    assert max(region.shape[:2]) <= 448 and not np.shares_memory(region, photo)
    x1, y1, x2, y2 = (round(c) for c in inside)
    assert region[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() == 255  # inside the box: all car
    assert region[: max(0, y1 - 2)].max() == 0 and region[:, : max(0, x1 - 2)].max() == 0  # around it: none
    small = embedder.kept_region(photo[900:1000, 1500:1600], [10.0, 10.0, 90.0, 90.0], longest=448)
    as_is = embedder.kept_region(photo[900:1000, 1500:1600], [10.0, 10.0, 90.0, 90.0])
    assert small[0].shape == as_is[0].shape and small[1] == as_is[1]  # never enlarged
    assert not np.shares_memory(small[0], photo)  # still a copy
