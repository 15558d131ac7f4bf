"""Make an ONNX graph byte-for-byte reproducible.

tf2onnx numbers its generated tensors with a global counter and emits
independent branches in whatever order its optimiser visits them, so two
conversions of the same weights differ in names and node order while
computing the same thing. Renaming every tensor from its structure (what
produces it, from which inputs) and ordering nodes by that structure makes
the output depend only on the computation, so the manifest can pin its
sha256 and `build.py models` can prove it rebuilt the same model.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import sys
from pathlib import Path

import onnx


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def canonicalize(model: onnx.ModelProto) -> None:
    graph = model.graph
    kept = {v.name for v in graph.input} | {v.name for v in graph.output}

    # Each tensor's identity: an initializer is its content, a graph input its
    # name, a node output what computes it. Two tensors with one identity are
    # the same value, so duplicate initializers collapse.
    identity: dict[str, str] = {v.name: _digest(b"input", v.name.encode()) for v in graph.input}
    for tensor in graph.initializer:
        body = onnx.TensorProto()
        body.CopyFrom(tensor)
        body.name = ""
        identity[tensor.name] = _digest(b"init", body.SerializeToString())

    producers = {out: node for node in graph.node for out in node.output}
    node_key: dict[int, str] = {}

    def key_of(node: onnx.NodeProto) -> str:
        if id(node) not in node_key:
            inputs = [identity_of(name).encode() for name in node.input]
            attrs = [a.SerializeToString() for a in node.attribute]
            node_key[id(node)] = _digest(node.domain.encode(), node.op_type.encode(), *inputs, b"|", *attrs)
        return node_key[id(node)]

    def identity_of(name: str) -> str:
        if name == "":
            return ""
        if name not in identity:
            node = producers[name]
            identity[name] = _digest(key_of(node).encode(), str(list(node.output).index(name)).encode())
        return identity[name]

    for node in graph.node:
        for out in node.output:
            identity_of(out)

    # Kahn's topological sort, ties broken by structural key.
    consumers: dict[str, list[onnx.NodeProto]] = {}
    pending: dict[int, int] = {}
    for node in graph.node:
        deps = {n for n in node.input if n in producers}
        pending[id(node)] = len(deps)
        for dep in deps:
            consumers.setdefault(dep, []).append(node)
    ready = [(key_of(n), i, n) for i, n in enumerate(graph.node) if pending[id(n)] == 0]
    heapq.heapify(ready)
    # Equal keys are exact duplicates (one is emitted): a unique second field
    # keeps the heap from ever comparing the nodes themselves.
    arrival = itertools.count(len(graph.node))
    ordered: list[onnx.NodeProto] = []
    emitted: set[str] = set()
    while ready:
        key, _, node = heapq.heappop(ready)
        if key not in emitted:  # else an exact duplicate of a node already emitted
            emitted.add(key)
            ordered.append(node)
        for out in node.output:
            for consumer in consumers.get(out, []):
                pending[id(consumer)] -= 1
                if pending[id(consumer)] == 0:
                    heapq.heappush(ready, (key_of(consumer), next(arrival), consumer))

    # Names: graph inputs/outputs keep theirs, everything else is numbered in
    # the canonical order.
    canonical: dict[str, str] = {}
    for tensor_id in sorted({identity[t.name] for t in graph.initializer}):
        canonical[tensor_id] = f"w{len(canonical)}"
    for index, node in enumerate(ordered):
        for slot, out in enumerate(node.output):
            canonical.setdefault(identity[out], out if out in kept else f"t{index}_{slot}")
        node.name = f"n{index}_{node.op_type}"

    def rename(name: str) -> str:
        return name if name == "" or name in kept else canonical[identity[name]]

    for node in ordered:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    unique_inits = {}
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
        unique_inits.setdefault(tensor.name, tensor)
    inits = sorted(unique_inits.values(), key=lambda t: int(t.name[1:]))
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.value_info[:]
    graph.doc_string = ""  # converters write temporary paths here


def save_canonical(model: onnx.ModelProto, description: str, output: Path) -> None:
    """The last step of every converter: canonicalise, describe, check, write."""
    canonicalize(model)
    model.graph.doc_string = description
    onnx.checker.check_model(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, output)
    print(f"wrote {output}", file=sys.stderr)
