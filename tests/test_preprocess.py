"""Image-to-tensor conversions shared by the models."""

from __future__ import annotations

import msgspec
import numpy as np

from sidecar.inference.manifest import InputSpec
from sidecar.stages.preprocess import halved, to_tensor


def spec(order: str, mean: list[float], std: list[float]) -> InputSpec:
    return msgspec.convert({"name": "x", "height": 6, "width": 5, "channel_order": order, "scale": 1 / 255,
                            "mean": mean, "std": std, "resize": "stretch"}, InputSpec)


def test_to_tensor_normalises_each_channel_in_the_models_order() -> None:
    images = [np.random.default_rng(i).integers(0, 256, (6, 5, 3), dtype=np.uint8) for i in range(3)]
    for order in ("rgb", "bgr"):
        model = spec(order, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        tensor = to_tensor(images, model)
        assert tensor.shape == (3, 3, 6, 5) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
        for image, planes in zip(images, tensor):
            channels = image[:, :, ::-1] if order == "rgb" else image
            for c in range(3):
                expected = (channels[:, :, c].astype(np.float32) * np.float32(1 / 255) - np.float32(model.mean[c])) \
                    / np.float32(model.std[c])
                np.testing.assert_array_equal(planes[c], expected)


def test_halved_averages_2x2_pixels_while_the_target_still_fits() -> None:
    image = np.zeros((41, 81, 3), np.uint8)
    image[0::2, 0::2] = 200  # one bright pixel in each 2x2 block: halving averages it to 50
    half = halved(image, 40, 20)
    assert half.shape == (20, 40, 3)  # halved once; the odd last row and column are dropped
    assert (half == 50).all()
    quarter = halved(image, 20, 10)
    assert quarter.shape == (10, 20, 3)  # once more would leave 10x5, under the size asked
    same = halved(image, 50, 30)
    assert same is image
