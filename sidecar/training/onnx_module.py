"""An ONNX graph as a trainable torch module, and back.

`liveryid adapt` fine-tunes whatever embedder the library uses, and the
shipped models exist only as ONNX (export folded their batch norms into the
convolutions, so the original torch module cannot take the weights back).
Running the graph node by node with torch operations makes every float
initializer a parameter again; exporting the module gives an ONNX file with
the same input and output names, which the embed stage loads like any other.

Only the operators of convolutional embedders are covered (MobileNet,
ResNet-style graphs); anything else is refused by name when the module is
built, not in the middle of training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

# A node's inputs in order; None where an optional input is left out ("").
Inputs = list[Any]


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(x: Inputs, a: dict[str, Any]) -> torch.Tensor:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    inp = x[0]
    if pads[:2] != pads[2:]:  # ONNX pads begin and end separately; conv2d pads symmetrically
        inp = F.pad(inp, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0]
    return F.conv2d(inp, x[1], x[2] if len(x) > 2 else None, stride=tuple(a.get("strides", [1, 1])),
                    padding=tuple(pads[:2]), dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))


def _clip(x: Inputs, a: dict[str, Any]) -> torch.Tensor:
    low = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    high = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    return torch.clamp(x[0], low, high)


def _reduce_mean(x: Inputs, a: dict[str, Any]) -> torch.Tensor:
    axes = a["axes"] if "axes" in a else x[1].tolist()
    return torch.mean(x[0], dim=list(axes), keepdim=bool(a.get("keepdims", 1)))


def _batch_norm(x: Inputs, a: dict[str, Any]) -> torch.Tensor:
    # Always inference statistics: fine-tuning a few hundred steps on small
    # batches of one event would only make the running averages noisy.
    return F.batch_norm(x[0], x[3].detach(), x[4].detach(), x[1], x[2], training=False, eps=a.get("epsilon", 1e-5))


def _gemm(x: Inputs, a: dict[str, Any]) -> torch.Tensor:
    left = x[0].T if a.get("transA", 0) else x[0]
    right = x[1].T if a.get("transB", 0) else x[1]
    out = a.get("alpha", 1.0) * (left @ right)
    return out + a.get("beta", 1.0) * x[2] if len(x) > 2 and x[2] is not None else out


OPERATORS: dict[str, Callable[[Inputs, dict[str, Any]], torch.Tensor]] = {
    "Conv": _conv,
    "Clip": _clip,
    "Identity": lambda x, a: x[0],
    "Relu": lambda x, a: F.relu(x[0]),
    "Sigmoid": lambda x, a: torch.sigmoid(x[0]),
    "Add": lambda x, a: x[0] + x[1],
    "Mul": lambda x, a: x[0] * x[1],
    "ReduceMean": _reduce_mean,
    "GlobalAveragePool": lambda x, a: torch.mean(x[0], dim=(2, 3), keepdim=True),
    "BatchNormalization": _batch_norm,
    "Flatten": lambda x, a: torch.flatten(x[0], a.get("axis", 1)),
    "Gemm": _gemm,
}


class OnnxModule(nn.Module):
    """Runs an ONNX graph with torch: float weights are parameters (batch-norm
    statistics and integer tensors are buffers), so the graph can be trained."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node} - set(OPERATORS) - {"Constant"})
        if unsupported:
            raise ValueError(f"cannot fine-tune this model: operators {unsupported} are not supported")
        # Batch-norm statistics (fed straight from initializers, or through an Identity) are buffers.
        statistics = {n.input[i] for n in graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
        statistics |= {n.input[0] for n in graph.node if n.op_type == "Identity" and n.output[0] in statistics}
        self.weights = nn.ParameterDict()
        self._names: dict[str, str] = {}
        for index, tensor in enumerate(graph.initializer):
            key = f"w{index}"
            self._names[tensor.name] = key
            value = torch.from_numpy(numpy_helper.to_array(tensor).copy())
            if value.is_floating_point() and tensor.name not in statistics:
                self.weights[key] = nn.Parameter(value)
            else:
                self.register_buffer(key, value)
        initialised = set(self._names)
        self.input_names = [i.name for i in graph.input if i.name not in initialised]
        self.output_names = [o.name for o in graph.output]
        for index, node in enumerate(n for n in graph.node if n.op_type == "Constant"):
            key = f"c{index}"
            self._names[node.output[0]] = key
            self.register_buffer(key, torch.from_numpy(numpy_helper.to_array(_attributes(node)["value"]).copy()))
        self._nodes = [
            (n.op_type, list(n.input), list(n.output), _attributes(n)) for n in graph.node if n.op_type != "Constant"
        ]

    def _tensor(self, key: str) -> torch.Tensor:
        return self.weights[key] if key in self.weights else getattr(self, key)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_names[0]: image}
        values.update({name: self._tensor(key) for name, key in self._names.items()})
        for op_type, inputs, outputs, attributes in self._nodes:
            values[outputs[0]] = OPERATORS[op_type]([values[i] if i else None for i in inputs], attributes)
        return values[self.output_names[0]]

    def convolutions(self) -> list[list[nn.Parameter]]:
        """The parameters of each convolution (weight, bias), in graph order: what `freeze` counts."""
        return [
            [self.weights[self._names[i]] for i in inputs[1:] if i in self._names and self._names[i] in self.weights]
            for op_type, inputs, _, _ in self._nodes if op_type == "Conv"
        ]

    def freeze(self, share: float) -> None:
        """Keep the first `share` of the convolutions at their weights: the early
        layers see edges and textures, which an event does not change."""
        layers = self.convolutions()
        for index, parameters in enumerate(layers):
            for parameter in parameters:
                parameter.requires_grad_(index >= round(share * len(layers)))

    def export(self, path: Path, height: int, width: int) -> None:
        """The module as ONNX, with the graph's own input and output names and a dynamic batch."""
        example = torch.zeros(1, 3, height, width)
        name_in, name_out = self.input_names[0], self.output_names[0]
        with torch.no_grad():
            torch.onnx.export(
                self, (example,), str(path), input_names=[name_in], output_names=[name_out],
                dynamic_axes={name_in: {0: "batch"}, name_out: {0: "batch"}}, opset_version=17, dynamo=False,
            )


def load(path: Path) -> OnnxModule:
    return OnnxModule(onnx.load(str(path)))

