"""The livery colour stage and its fusion with the embedding."""

from __future__ import annotations

import numpy as np

from sidecar.stages.colour import DIM, colour_histogram, fuse


def block(bgr: tuple[int, int, int], size: tuple[int, int] = (90, 160)) -> np.ndarray:
    image = np.empty((*size, 3), np.uint8)
    image[:] = bgr
    return image


def test_histograms_are_unit_vectors_that_tell_colours_apart_at_any_size() -> None:
    red_small, red_large = colour_histogram(block((0, 0, 210), (40, 70))), colour_histogram(block((0, 0, 210), (900, 1600)))
    pink = colour_histogram(block((180, 105, 255)))
    assert red_small.shape == (DIM,) and abs(float(np.linalg.norm(red_small)) - 1) < 1e-6
    assert float(red_small @ red_large) > 0.99
    assert float(red_small @ pink) < 0.1


def test_the_border_of_a_box_does_not_count() -> None:
    car = block((0, 0, 210), (64, 64))
    framed = car.copy()
    framed[:5] = framed[-5:] = 0  # 5 of 64 pixels each side: inside the dropped border
    framed[:, :5] = framed[:, -5:] = 0
    assert float(colour_histogram(car) @ colour_histogram(framed)) > 0.999


def test_fused_cosine_is_the_weighted_sum_of_the_two_cosines() -> None:
    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in rng.standard_normal((2, 3, 16)))
    c, d = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in rng.random((2, 3, DIM)))
    fused_ac, fused_bd = fuse(a, c, 0.35), fuse(b, d, 0.35)
    np.testing.assert_allclose(np.linalg.norm(fused_ac, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose((fused_ac * fused_bd).sum(1), 0.65 * (a * b).sum(1) + 0.35 * (c * d).sum(1), atol=1e-6)
