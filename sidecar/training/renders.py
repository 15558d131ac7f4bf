"""Synthetic race-car photos rendered from TORCS's car models: the detector's
open-wheel training boxes.

No open-wheel photo with boxes may be trained on here (the F1 game set is
licensed for testing), but Debian's `torcs-data` package ships TORCS's cars
(an open-wheel single-seater, touring and GT cars, a rally bug and a buggy,
Free Art / GPL) and its track textures. Each scene draws one to three cars,
each in a random livery (a car's shape is what the detector should learn,
not TORCS's paint), seen from any side and from the ground to nearly
overhead, on a ground plane of asphalt, lines, kerbs, grass and gravel in
the same perspective, with a barrier or trees and sky above the horizon
when the camera is low. Faces are drawn flat-shaded, far to near, with
OpenCV: no GPU or OpenGL, and the same seed gives the same pixels, so the
detector built from them is reproducible.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

OPEN_WHEEL = "car1-ow1"
GROUND_TEXTURES = ("tr-asphalt.rgb", "tr-asphalt-p.rgb", "tr-b-asphalt.rgb", "tr-road1.rgb", "tr-concrete.rgb")
VERGE_TEXTURES = ("tr-grass.rgb", "tr-grass2.rgb", "tr-grass3.rgb", "tr-grass5.rgb", "tr-sand.rgb", "tr-gravel.rgb")
WALL_TEXTURES = ("tr-barrier.rgb", "tr-tirewall.rgb", "tr-wall.rgb", "tr-stone-wall.rgb", "people1.rgb",
                 "building1.rgb", "building2.rgb", "forest1.rgb", "forest2.rgb", "forest3.rgb")
GROUND_METRES = 80.0
GROUND_PIXELS = 1024


def read_sgi(path: Path) -> np.ndarray:
    """An SGI image (TORCS's .rgb textures, plain or run-length encoded) as BGR uint8."""
    data = path.read_bytes()
    magic, storage, bytes_per_channel, _, width, height, channels = struct.unpack(">hbbHHHH", data[:12])
    if magic != 474 or bytes_per_channel != 1:
        raise ValueError(f"{path}: not an 8-bit SGI image")
    if storage == 0:
        planes = np.frombuffer(data, np.uint8, width * height * channels, 512).reshape(channels, height, width)
    else:
        starts = np.frombuffer(data, ">u4", height * channels, 512)
        planes = np.zeros((channels, height, width), np.uint8)
        for row, start in enumerate(starts.tolist()):
            values = bytearray()
            while len(values) < width:
                count = data[start] & 0x7F
                if count == 0:
                    break
                if data[start] & 0x80:
                    values += data[start + 1 : start + 1 + count]
                    start += 1 + count
                else:
                    values += bytes([data[start + 1]]) * count
                    start += 2
            planes[row // height, row % height, : len(values)] = np.frombuffer(bytes(values[:width]), np.uint8)
    rgb = np.repeat(planes[:1], 3, axis=0) if channels < 3 else planes[:3]
    return np.ascontiguousarray(rgb[::-1].transpose(1, 2, 0)[::-1])  # SGI rows run bottom-up; RGB -> BGR


@dataclass(frozen=True)
class CarModel:
    name: str
    triangles: np.ndarray  # (T, 3, 3) metres: x forward, y up, z sideways
    colours: np.ndarray  # (T, 3) BGR, the texture under each triangle
    length: float

    @property
    def open_wheel(self) -> bool:
        return self.name == OPEN_WHEEL


def _numbers(xml: str, section: str, name: str) -> float:
    block = re.search(rf'<section name="{section}">(.*?)</section>', xml, re.S)
    if block is None:
        raise ValueError(f"no section {section}")
    value = re.search(rf'<attnum name="{name}"[^>]*val="([-0-9.]+)"', block.group(1))
    if value is None:
        raise ValueError(f"no {name} in {section}")
    return float(value.group(1))


def _wheel(x: float, z: float, ground: float, radius: float, width: float, sides: int = 14) -> np.ndarray:
    """A tyre as a closed cylinder of triangles across the car (axis z)."""
    angle = np.linspace(0, 2 * np.pi, sides + 1)
    rim = np.stack([x + radius * np.cos(angle), ground + radius + radius * np.sin(angle)], axis=1)
    outer = np.concatenate([rim, np.full((sides + 1, 1), z + width / 2)], axis=1)
    inner = np.concatenate([rim, np.full((sides + 1, 1), z - width / 2)], axis=1)
    tread = [np.stack([outer[k], outer[k + 1], inner[k + 1]]) for k in range(sides)]
    tread += [np.stack([outer[k], inner[k + 1], inner[k]]) for k in range(sides)]
    hub_out, hub_in = outer[:-1].mean(axis=0), inner[:-1].mean(axis=0)
    caps = [np.stack([hub_out, outer[k], outer[k + 1]]) for k in range(sides)]
    caps += [np.stack([hub_in, inner[k], inner[k + 1]]) for k in range(sides)]
    return np.asarray(tread + caps, np.float32)


def load_car(folder: Path) -> CarModel:
    """A TORCS car: its AC3D body (.acc, triangle strips), the texture colour under each triangle,
    and four tyres where its setup file puts the wheels (TORCS draws them apart from the body)."""
    name = folder.name
    lines = (folder / f"{name}.acc").read_text(errors="replace").splitlines()
    triangles: list[np.ndarray] = []
    colours: list[np.ndarray] = []
    textures: dict[str, np.ndarray] = {}
    vertices = np.zeros((0, 3))
    offset = np.zeros(3)
    texture: np.ndarray | None = None
    i = 0
    while i < len(lines):
        words = lines[i].split()
        i += 1
        if not words:
            continue
        if words[0] == "OBJECT":
            offset, texture = np.zeros(3), None
        elif words[0] == "loc":
            offset = np.asarray(words[1:4], float)
        elif words[0] == "texture" and texture is None:
            file = words[1].strip('"')
            if file not in textures and (folder / file).is_file():
                textures[file] = read_sgi(folder / file)
            texture = textures.get(file)
        elif words[0] == "numvert":
            count = int(words[1])
            vertices = np.asarray([row.split()[:3] for row in lines[i : i + count]], float) + offset
            i += count
        elif words[0] == "refs":
            count = int(words[1])
            refs = [row.split() for row in lines[i : i + count]]
            i += count
            index = [int(r[0]) for r in refs]
            uv = np.asarray([r[1:3] for r in refs], float)
            for k in range(count - 2):  # TORCS stores surfaces as triangle strips
                triangles.append(vertices[index[k : k + 3]])
                colours.append(_texel(texture, uv[k : k + 3].mean(axis=0)))
    body = np.asarray(triangles, np.float32)
    xml = (folder / f"{name}.xml").read_text(errors="replace")
    ground = float(body[..., 1].min()) - 0.06
    tyres = []
    for axle, wheel in (("Front Axle", "Front Right Wheel"), ("Rear Axle", "Rear Right Wheel")):
        x = _numbers(xml, axle, "xpos")
        z = abs(_numbers(xml, wheel, "ypos"))
        width = _numbers(xml, wheel, "tire width") / 1000
        radius = _numbers(xml, wheel, "rim diameter") * 0.0254 / 2 + width * _numbers(
            xml, wheel, "tire height-width ratio")
        tyres += [_wheel(x, z, ground, radius, width), _wheel(x, -z, ground, radius, width)]
    tyre_triangles = np.concatenate(tyres)
    tyre_colours = np.tile(np.asarray([[28, 28, 28]], np.float32), (len(tyre_triangles), 1))
    all_triangles = np.concatenate([body, tyre_triangles]) - np.asarray([0, ground, 0], np.float32)
    return CarModel(name, all_triangles, np.concatenate([np.asarray(colours, np.float32), tyre_colours]),
                    float(np.ptp(all_triangles[..., 0])))


def _texel(texture: np.ndarray | None, uv: np.ndarray) -> np.ndarray:
    if texture is None:
        return np.asarray([128, 128, 128], np.float32)
    height, width = texture.shape[:2]
    u, v = uv % 1.0
    return texture[min(int((1 - v) * height), height - 1), min(int(u * width), width - 1)].astype(np.float32)


def livery(car: CarModel, rng: np.random.Generator) -> np.ndarray:
    """Random paint: two or three colours laid out by planes across the car, a stripe now and then;
    dark parts (tyres, cockpit, floor) stay dark, and the texture's shading is kept."""
    base = car.colours
    brightness = base.max(axis=1, keepdims=True)
    dark = brightness[:, 0] < 60
    palette = rng.integers(0, 256, (3, 3)).astype(np.float32)
    if rng.random() < 0.3:  # white, black and silver liveries are common
        palette[0] = rng.choice([[240, 240, 240], [30, 30, 30], [170, 170, 175]])
    centres = car.triangles.mean(axis=1)
    centres = (centres - centres.min(axis=0)) / np.maximum(np.ptp(centres, axis=0), 1e-6)
    region = (centres @ rng.normal(size=3) > rng.normal() * 0.3).astype(int)
    if rng.random() < 0.5:
        region[np.abs(centres @ rng.normal(size=3) - rng.uniform(0, 1)) < rng.uniform(0.03, 0.1)] = 2
    detail = np.clip(brightness / np.maximum(np.median(brightness[~dark]) if (~dark).any() else 1, 1), 0.6, 1.2)
    colours = np.clip(palette[region] * detail, 0, 255)
    colours[dark] = base[dark]
    return colours


@dataclass(frozen=True)
class Camera:
    rotation: np.ndarray  # (3, 3) world -> camera rows: right, up, forward
    eye: np.ndarray  # (3,)
    focal: float
    centre: tuple[float, float]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates and depths of world points (..., 3)."""
        local = (points - self.eye) @ self.rotation.T
        depth = local[..., 2]
        pixels = np.stack([self.centre[0] + self.focal * local[..., 0] / depth,
                           self.centre[1] - self.focal * local[..., 1] / depth], axis=-1)
        return pixels, depth


def look_at(target: np.ndarray, azimuth: float, elevation: float, distance: float, focal: float,
            centre: tuple[float, float]) -> Camera:
    eye = target + distance * np.asarray([np.cos(elevation) * np.cos(azimuth), np.sin(elevation),
                                          np.cos(elevation) * np.sin(azimuth)])
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    return Camera(np.stack([right, np.cross(right, forward), forward]), eye, focal, centre)


def ground_image(textures: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A square of track seen from above, GROUND_METRES wide: asphalt with a verge on one or both
    sides, kerbs, and white or yellow lines."""
    def tiled(name: str, tiles: int) -> np.ndarray:
        tile = textures[name]
        size = -(-GROUND_PIXELS // tiles)
        whole = np.tile(cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA), (tiles, tiles, 1))
        return whole[:GROUND_PIXELS, :GROUND_PIXELS]

    image = tiled(str(rng.choice(GROUND_TEXTURES)), int(rng.integers(8, 24)))
    image = np.clip(image * rng.uniform(0.6, 1.2), 0, 255).astype(np.uint8)
    per_metre = GROUND_PIXELS / GROUND_METRES
    verge = tiled(str(rng.choice(VERGE_TEXTURES)), int(rng.integers(8, 24)))
    width = rng.uniform(10, 20) * per_metre
    middle = GROUND_PIXELS / 2 + rng.uniform(-8, 8) * per_metre
    edges = (middle - width / 2, middle + width / 2)
    columns = np.arange(GROUND_PIXELS)
    outside = (columns < edges[0]) | (columns > edges[1])
    if rng.random() < 0.3:
        outside &= columns < edges[0]
    image[:, outside] = verge[:, outside]
    for edge in edges:
        x = int(edge)
        if rng.random() < 0.5:  # a red-and-white kerb
            kerb = int(per_metre * 1.2)
            for y in range(0, GROUND_PIXELS, kerb * 2):
                cv2.rectangle(image, (x - kerb // 2, y), (x + kerb // 2, y + kerb), (40, 40, 220), -1)
                cv2.rectangle(image, (x - kerb // 2, y + kerb), (x + kerb // 2, y + 2 * kerb), (235, 235, 235), -1)
        else:
            colour = (235, 235, 235) if rng.random() < 0.7 else (40, 200, 230)
            cv2.line(image, (x, 0), (x, GROUND_PIXELS), colour, max(int(per_metre * 0.2), 1))
    if rng.random() < 0.5:  # a dashed centre line
        x = int(middle + rng.uniform(-3, 3) * per_metre)
        for y in range(0, GROUND_PIXELS, int(per_metre * 6)):
            cv2.line(image, (x, y), (x, y + int(per_metre * 3)), (235, 235, 235), max(int(per_metre * 0.15), 1))
    angle = rng.uniform(0, 360)
    turn = cv2.getRotationMatrix2D((GROUND_PIXELS / 2, GROUND_PIXELS / 2), angle, 1.0)
    return cv2.warpAffine(image, turn, (GROUND_PIXELS, GROUND_PIXELS), borderMode=cv2.BORDER_REFLECT)


def draw_backdrop(canvas: np.ndarray, camera: Camera, textures: dict[str, np.ndarray],
                  rng: np.random.Generator) -> None:
    """The ground in the camera's perspective and, above the horizon, a wall or trees under the sky."""
    height, width = canvas.shape[:2]
    ground = ground_image(textures, rng)
    half = GROUND_METRES / 2
    # The ground plane through the camera: a homography from ground-image pixels to the photo,
    # valid for the points in front of the camera.
    scale = GROUND_PIXELS / GROUND_METRES
    plane = np.asarray([[1 / scale, 0, -half], [0, 0, 0], [0, 1 / scale, -half]])
    projection = camera.rotation @ np.concatenate([np.eye(3), -camera.eye[:, None]], axis=1)
    homography = np.asarray([[camera.focal, 0, camera.centre[0]], [0, -camera.focal, camera.centre[1]],
                             [0, 0, 1]]) @ projection @ np.concatenate([plane, [[0, 0, 1]]], axis=0)
    warped = cv2.warpPerspective(ground, homography, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    rays = np.stack([(cols - camera.centre[0]) / camera.focal, -(rows - camera.centre[1]) / camera.focal,
                     np.ones_like(rows)], axis=-1) @ camera.rotation
    below = rays[..., 1] < -0.02
    canvas[below] = warped[below]
    if below.all():
        return
    sky_top, sky_bottom = rng.uniform(150, 255, 3), rng.uniform(200, 255, 3)
    sky_top[:] = np.sort(sky_top)  # BGR sorted ascending: red brightest, a warm hazy sky
    t = np.linspace(0, 1, height)[:, None, None]
    sky = np.broadcast_to((sky_top * (1 - t) + sky_bottom * t).astype(np.uint8), canvas.shape)
    wall = textures[str(rng.choice(WALL_TEXTURES))]
    wall_height = int(rng.uniform(0.05, 0.3) * height)
    horizon = np.where(below.any(axis=0), below.argmax(axis=0), height)
    strip = cv2.resize(np.tile(wall, (1, int(rng.integers(3, 10)), 1)), (width, max(wall_height, 1)))
    top = horizon - wall_height  # per column: the wall stands on the horizon, the sky above it
    above_wall = rows < top[None, :]
    on_wall = ~above_wall & (rows < horizon[None, :])
    canvas[above_wall] = sky[above_wall]
    canvas[on_wall] = strip[(rows - top[None, :])[on_wall].astype(int), cols[on_wall].astype(int)]


def draw_car(canvas: np.ndarray, car: CarModel, colours: np.ndarray, camera: Camera, position: np.ndarray,
             heading: float, light: np.ndarray) -> np.ndarray | None:
    """The car drawn into the canvas, with its shadow; its box (x1, y1, x2, y2) clipped to the
    canvas, or None when less than half of it is in frame."""
    turn = np.asarray([[np.cos(heading), 0, -np.sin(heading)], [0, 1, 0], [np.sin(heading), 0, np.cos(heading)]])
    world = car.triangles @ turn.T + position
    pixels, depth = camera.project(world)
    if (depth <= 0.1).any():
        return None
    height, width = canvas.shape[:2]
    shadow, _ = camera.project(world * np.asarray([1, 0, 1]) + np.asarray([0.2, 0, 0.2]))
    shadow_mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(shadow_mask, list(np.round(shadow * 4).astype(np.int32)), 255, shift=2)
    softened = cv2.GaussianBlur(shadow_mask, (0, 0), 2 + car.length * camera.focal / depth.mean() * 0.01)
    canvas[:] = (canvas * (1 - softened[..., None] / 255.0 * 0.55)).astype(np.uint8)
    normals = np.cross(world[:, 1] - world[:, 0], world[:, 2] - world[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    shading = 0.45 + 0.55 * np.abs(normals @ light) / np.maximum(lengths, 1e-9)
    shaded = np.clip(colours * shading[:, None], 0, 255)
    order = np.argsort(-depth.mean(axis=1), kind="stable")
    mask = np.zeros((height, width), np.uint8)
    points = np.round(pixels * 16).astype(np.int32)
    for t in order:
        if lengths[t] == 0:
            continue
        cv2.fillPoly(canvas, [points[t]], shaded[t].tolist(), lineType=cv2.LINE_AA, shift=4)
        cv2.fillPoly(mask, [points[t]], 255, shift=4)
    whole = pixels.reshape(-1, 2)
    full = (whole.max(axis=0) - whole.min(axis=0)).prod()
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    box = np.asarray([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    return box if (box[2] - box[0]) * (box[3] - box[1]) >= full / 2 else None


def random_elevation(rng: np.random.Generator) -> float:
    """Half the views from trackside (2-30 degrees up), half from stands, bridges and cranes (30-85)."""
    return float(np.radians(rng.uniform(2, 30) if rng.random() < 0.5 else rng.uniform(30, 85)))


def random_light(rng: np.random.Generator) -> np.ndarray:
    light = rng.normal(size=3) + np.asarray([0, 2.5, 0])
    return light / np.linalg.norm(light)


def frame(car: CarModel, width: int, height: int, fill: float, azimuth: float, elevation: float,
          centre: tuple[float, float], rng: np.random.Generator) -> Camera:
    """A camera that shows the car about `fill` of the photo's width wide, its middle at `centre`."""
    focal = width * rng.uniform(0.8, 3.0)
    distance = focal * car.length / (fill * width)
    return look_at(np.asarray([0.0, 0.5, 0.0]), azimuth, elevation, distance, focal, centre)


def finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera's softness and sensor noise."""
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.3, 1.0))
    return np.clip(canvas + rng.normal(0, rng.uniform(1, 5), canvas.shape), 0, 255).astype(np.uint8)


def random_car(cars: list[CarModel], rng: np.random.Generator) -> CarModel:
    """The open-wheel car half the time (the shape the generic models miss most), otherwise any car."""
    if rng.random() < 0.5:
        return next(c for c in cars if c.open_wheel)
    return cars[int(rng.integers(len(cars)))]


def scene(cars: list[CarModel], textures: dict[str, np.ndarray], rng: np.random.Generator, empty: bool = False
          ) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic photo (BGR) and its cars' boxes (N, 4); the open-wheel car is drawn in half the
    scenes. `empty`: the same kind of photo with no car, all negatives (track, kerbs, walls)."""
    width = int(rng.choice([640, 800, 960]))
    height = int(width * rng.choice([9 / 16, 2 / 3, 3 / 4, 1.0, 4 / 3]))
    canvas = np.zeros((height, width, 3), np.uint8)
    first = random_car(cars, rng)
    centre = (width * rng.uniform(0.2, 0.8), height * rng.uniform(0.25, 0.75))
    camera = frame(first, width, height, rng.uniform(0.1, 0.9), rng.uniform(0, 2 * np.pi), random_elevation(rng),
                   centre, rng)
    draw_backdrop(canvas, camera, textures, rng)
    light = random_light(rng)
    placements = [] if empty else [(first, np.zeros(3))]
    for _ in range(0 if empty else int(rng.choice([0, 0, 1, 2]))):
        gap = rng.uniform(first.length * 1.2, first.length * 4)
        direction = rng.uniform(0, 2 * np.pi)
        car = cars[int(rng.integers(len(cars)))]
        placements.append((car, np.asarray([gap * np.cos(direction), 0, gap * np.sin(direction)])))
    placements.sort(key=lambda p: -float(np.linalg.norm(p[1] - camera.eye)))  # far first
    heading = rng.uniform(0, 2 * np.pi)
    boxes = []
    for car, position in placements:
        box = draw_car(canvas, car, livery(car, rng), camera, position, heading + rng.normal() * 0.2, light)
        if box is not None:
            boxes.append(box)
    return finish(canvas, rng), np.asarray(boxes, np.float32).reshape(-1, 4)


def identity_views(cars: list[CarModel], textures: dict[str, np.ndarray], views: int, rng: np.random.Generator
                   ) -> list[np.ndarray]:
    """One synthetic identity for re-identification: a car (the open-wheel one half the time) in a
    random livery, photographed `views` times from random sides and heights on random
    backdrops, each photo cropped to the car's box with a small margin."""
    car = random_car(cars, rng)
    colours = livery(car, rng)
    crops: list[np.ndarray] = []
    width, height = 480, 360
    while len(crops) < views:
        camera = frame(car, width, height, rng.uniform(0.3, 0.7), rng.uniform(0, 2 * np.pi), random_elevation(rng),
                       (width / 2, height / 2), rng)
        canvas = np.zeros((height, width, 3), np.uint8)
        draw_backdrop(canvas, camera, textures, rng)
        box = draw_car(canvas, car, colours, camera, np.zeros(3), 0.0, random_light(rng))
        if box is None:
            continue
        margin = rng.uniform(0.02, 0.12, 4) * np.asarray([box[2] - box[0], box[3] - box[1]] * 2)
        x1, y1 = (np.maximum(box[:2] - margin[:2], 0)).astype(int)
        x2, y2 = (np.minimum(box[2:] + margin[2:], [width, height])).astype(int)
        crops.append(finish(canvas, rng)[y1:y2, x1:x2])
    return crops


def load_assets(torcs: Path) -> tuple[list[CarModel], dict[str, np.ndarray]]:
    """TORCS's cars and the track textures the scenes use, from an unpacked torcs-data tree
    (the folder holding `cars/` and `data/textures/`)."""
    cars = [load_car(folder) for folder in sorted((torcs / "cars").iterdir()) if (folder / f"{folder.name}.acc").is_file()]
    names = set(GROUND_TEXTURES + VERGE_TEXTURES + WALL_TEXTURES)
    textures = {name: read_sgi(torcs / "data" / "textures" / name) for name in sorted(names)}
    return cars, textures
