"""Export a re-identification checkpoint a user brings (torchreid OSNet,
FastReID ResNet-IBN bag of tricks or stronger baseline) to ONNX for the
sidecar's embedder, and describe it for the manifest; or describe an ONNX
file the user exported themselves.

Runs in the sidecar's environment with the `train` extra (torch), from
`python3 build.py import-reid`, never in the sidecar.

    python models/import_reid.py CHECKPOINT --arch ARCH --height H --width W --output X.onnx --describe X.json
    python models/import_reid.py MODEL.onnx --describe X.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch

from canonical_onnx import save_canonical
from sidecar.training.architectures import ARCHITECTURES, TRAINING_ONLY

IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The weights of a torchreid (`state_dict`), FastReID (`model`) or bare checkpoint, without `module.` prefixes."""
    try:
        loaded: Any = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Training checkpoints may pickle more than tensors (optimiser state, configs); the user vouches for the file.
        print(f"{checkpoint.name}: not a plain tensor file, loading it as a full pickle", file=sys.stderr)
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict):
        sys.exit(f"{checkpoint}: no state dict found (expected torchreid's `state_dict` or FastReID's `model`)")
    return {k.removeprefix("module."): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def build(arch: str, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The architecture with the checkpoint's weights, refusing a checkpoint of another architecture by name."""
    model = ARCHITECTURES[arch](weights)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(k for k in set(weights) - set(expected) if not k.startswith(TRAINING_ONLY))
    wrong_shape = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or wrong_shape:
        sys.exit(f"the checkpoint is not a {arch}: " + "; ".join(
            f"{what} {names[:6]}{' ...' if len(names) > 6 else ''} ({len(names)})"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if names))
    model.load_state_dict({k: weights[k] for k in expected})
    return model.eval()


def normalisation(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """FastReID keeps its input normalisation (0-255 pixels, RGB) in the checkpoint; torchreid uses ImageNet's."""
    if "pixel_mean" in weights and "pixel_std" in weights:
        return {"scale": 1.0, "mean": weights["pixel_mean"].flatten().tolist(), "std": weights["pixel_std"].flatten().tolist()}
    return IMAGENET


def export(checkpoint: Path, arch: str, height: int, width: int, output: Path, describe: Path) -> None:
    weights = state_dict(checkpoint)
    model = build(arch, weights)
    with torch.no_grad():
        dim = int(model(torch.zeros(2, 3, height, width)).shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "embedder.onnx"
        torch.onnx.export(
            model, (torch.zeros(1, 3, height, width),), str(raw), input_names=["image"], output_names=["embedding"],
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17, dynamo=False,
        )
        save_canonical(onnx.load(raw), f"{arch} from {checkpoint.name}", output)
    describe.write_text(json.dumps({
        "arch": arch, "input": "image", "output": "embedding", "output_dim": dim, "height": height, "width": width,
        **normalisation(weights)}, indent=1) + "\n")


def describe_onnx(model_path: Path, describe: Path) -> None:
    """Input and output names, input size and embedding size of an ONNX file the user exported."""
    graph = onnx.load(model_path).graph
    initialised = {t.name for t in graph.initializer}
    (image,) = [i for i in graph.input if i.name not in initialised]
    output = graph.output[0]
    dims = [d.dim_value for d in image.type.tensor_type.shape.dim]
    embedding = [d.dim_value for d in output.type.tensor_type.shape.dim]
    if len(dims) != 4 or not (dims[2] and dims[3]) or len(embedding) != 2 or not embedding[1]:
        sys.exit(f"{model_path}: expected an image input (N, 3, H, W) and an embedding output (N, D); "
                 f"found {dims} and {embedding}")
    describe.write_text(json.dumps({"arch": "onnx", "input": image.name, "output": output.name, "output_dim": embedding[1],
                                    "height": dims[2], "width": dims[3]}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a checkpoint (.pth, .pth.tar, .pt) or an ONNX file")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES))
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--describe", type=Path, required=True)
    args = parser.parse_args()
    if args.model.suffix == ".onnx":
        describe_onnx(args.model, args.describe)
    elif args.arch is None or args.output is None:
        parser.error("a checkpoint needs --arch and --output")
    else:
        export(args.model, args.arch, args.height, args.width, args.output, args.describe)


if __name__ == "__main__":
    main()
