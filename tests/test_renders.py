"""Synthetic training photos (sidecar/training/renders.py) on a small car and
textures this test writes in TORCS's own formats: SGI images, an AC3D body of
triangle strips, a setup file placing the wheels."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from sidecar.training import renders
from sidecar.training.renders import identity_views, load_assets, load_car, look_at, read_sgi, scene


def write_sgi(path: Path, rgb: np.ndarray, run_length: bool) -> None:
    """An 8-bit SGI file, rows bottom-up, plain or run-length encoded (as TORCS's textures are)."""
    height, width, channels = rgb.shape
    header = struct.pack(">hbbHHHH", 474, int(run_length), 1, 3, width, height, channels).ljust(512, b"\0")
    planes = rgb[::-1].transpose(2, 0, 1)
    if not run_length:
        path.write_bytes(header + planes.tobytes())
        return
    rows = []
    for plane in planes:
        for row in plane:
            # One literal run per row, then the end-of-row marker.
            rows.append(bytes([0x80 | width]) + row.tobytes() + b"\0")
    start = 512 + 8 * height * channels
    offsets, position = [], start
    for row_bytes in rows:
        offsets.append(position)
        position += len(row_bytes)
    table = struct.pack(f">{len(rows)}I", *offsets) + struct.pack(f">{len(rows)}I", *map(len, rows))
    path.write_bytes(header + table + b"".join(rows))


@pytest.mark.parametrize("run_length", [False, True])
def test_sgi_images_read_as_bgr_top_row_first(tmp_path: Path, run_length: bool) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_sgi(tmp_path / "t.rgb", rgb, run_length)
    assert np.array_equal(read_sgi(tmp_path / "t.rgb"), rgb[..., ::-1])


def write_car(folder: Path) -> None:
    """A 4 m long, 0.6 m tall block as triangle strips, its top textured red and its sides blue."""
    folder.mkdir(parents=True)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4] = (255, 0, 0)  # top half of the image (v > 0.5): red
    texture[4:] = (0, 0, 255)
    write_sgi(folder / "box.rgb", texture, run_length=True)
    x, y, z = (-2.0, 2.0), (0.1, 0.7), (-0.8, 0.8)
    corners = [(xi, yi, zi) for xi in x for yi in y for zi in z]
    strips = [((0, 1, 4, 5), 0.2), ((2, 3, 6, 7), 0.8), ((0, 2, 4, 6), 0.2), ((1, 3, 5, 7), 0.2)]
    lines = ["AC3Db", "OBJECT world", "kids 1", "OBJECT poly", 'texture "box.rgb"', f"numvert {len(corners)}"]
    lines += [" ".join(map(str, c)) for c in corners]
    lines.append(f"numsurf {len(strips)}")
    for refs, v in strips:
        lines += ["SURF 0x14", "mat 0", f"refs {len(refs)}"] + [f"{r} 0.5 {v}" for r in refs]
    lines.append("kids 0")
    (folder / "box.acc").write_text("\n".join(lines) + "\n")
    wheel = '<attnum name="ypos" val="{}"/><attnum name="rim diameter" val="13"/>' \
            '<attnum name="tire width" val="250"/><attnum name="tire height-width ratio" val="0.5"/>'
    (folder / "box.xml").write_text(
        '<params><section name="Front Axle"><attnum name="xpos" val="1.4"/></section>'
        '<section name="Rear Axle"><attnum name="xpos" val="-1.4"/></section>'
        f'<section name="Front Right Wheel">{wheel.format(-0.8)}</section>'
        f'<section name="Rear Right Wheel">{wheel.format(-0.8)}</section></params>')


def test_a_car_gets_its_body_texture_colours_and_four_tyres_on_the_ground(tmp_path: Path) -> None:
    write_car(tmp_path / "box")
    car = load_car(tmp_path / "box")
    tyres = car.triangles[8:]
    assert len(car.triangles) == 8 + 4 * 4 * 14  # 4 strips of 2 triangles; 4 tyres of 56
    # The top strip samples the red half of the texture, the sides the blue half (BGR).
    assert car.colours[2].tolist() == [0, 0, 255] and car.colours[0].tolist() == [255, 0, 0]
    assert car.triangles[..., 1].min() == pytest.approx(0.0, abs=0.02)  # tyres on the ground (a 14-gon)
    assert tyres[..., 0].min() < -1.4 < 1.4 < tyres[..., 0].max()
    assert not car.open_wheel and car.length == pytest.approx(np.ptp(car.triangles[..., 0]))


def test_the_box_of_a_drawn_car_bounds_exactly_the_pixels_it_changed(tmp_path: Path) -> None:
    write_car(tmp_path / "box")
    car = load_car(tmp_path / "box")
    canvas = np.full((240, 320, 3), 128, np.uint8)
    camera = look_at(np.zeros(3), np.radians(30), np.radians(20), 12.0, 300.0, (160.0, 120.0))
    light = np.asarray([0.0, 1.0, 0.0])
    colours = np.full((len(car.triangles), 3), 250.0)
    box = renders.draw_car(canvas, car, colours, camera, np.zeros(3), 0.0, light)
    assert box is not None
    bright = np.argwhere(canvas.max(axis=2) > 200)  # the car; its shadow only darkens the grey
    assert bright.size
    (top, left), (bottom, right) = bright.min(axis=0), bright.max(axis=0) + 1
    assert np.allclose(box, [left, top, right, bottom], atol=1)
    assert 60 < box[2] - box[0] < 300
    # Beside the car, out of frame: no box.
    assert renders.draw_car(canvas.copy(), car, colours, camera, np.asarray([0.0, 0.0, 40.0]), 0.0, light) is None


def write_assets(tmp_path: Path) -> None:
    """A TORCS tree with the block car as its open-wheel car, and noise for every texture a scene uses."""
    write_car(tmp_path / "cars" / renders.OPEN_WHEEL)
    textures = tmp_path / "data" / "textures"
    textures.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in set(renders.GROUND_TEXTURES + renders.VERGE_TEXTURES + renders.WALL_TEXTURES):
        write_sgi(textures / name, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), run_length=False)
    # The block car's .acc is named after its folder.
    folder = tmp_path / "cars" / renders.OPEN_WHEEL
    for suffix in (".acc", ".xml"):
        (folder / f"box{suffix}").rename(folder / f"{renders.OPEN_WHEEL}{suffix}")


def test_scenes_are_reproducible_and_box_every_car_in_frame(tmp_path: Path) -> None:
    write_assets(tmp_path)
    cars, texture_images = load_assets(tmp_path)
    assert [c.name for c in cars] == [renders.OPEN_WHEEL] and cars[0].open_wheel
    first = [scene(cars, texture_images, np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(first[0][0], first[1][0]) and np.array_equal(first[0][1], first[1][1])
    generator = np.random.default_rng(3)
    boxed = 0
    for _ in range(6):
        image, boxes = scene(cars, texture_images, generator)
        height, width = image.shape[:2]
        assert image.dtype == np.uint8 and width in (640, 800, 960)
        assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= [width, height]) & (boxes[:, 2:] > boxes[:, :2])).all()
        boxed += len(boxes)
    assert boxed >= 4


def test_an_identity_is_one_car_and_livery_seen_from_several_sides(tmp_path: Path) -> None:
    write_assets(tmp_path)
    cars, textures = load_assets(tmp_path)
    views = identity_views(cars, textures, 4, np.random.default_rng(5))
    again = identity_views(cars, textures, 4, np.random.default_rng(5))
    assert len(views) == 4 and all(np.array_equal(a, b) for a, b in zip(views, again))
    for crop in views:
        height, width = crop.shape[:2]
        assert crop.dtype == np.uint8 and 20 < width <= 480 and 10 < height <= 360
    # Each view its own side, light and backdrop.
    assert not np.array_equal(views[0], views[1])
