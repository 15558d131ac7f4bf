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
    vectors = embedder(crops)
    assert session.batch_sizes == [MAX_BATCH, 3]
    assert vectors.shape == (MAX_BATCH + 3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(vectors[0], vectors[-1])
    assert embedder([]).shape == (0, 1280)
