"""Generate protocol/schema.json and protocol/methods.md from the Structs and
the method table. `python3 build.py generate` runs it (and then the
TypeScript generator); `python3 build.py check` fails CI when they drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from sidecar import errors
from sidecar.protocol.messages import PROTOCOL_VERSION
from sidecar.protocol.methods import METHODS, NOTIFICATIONS

ERROR_DOCS: dict[type[errors.RpcError], str] = {
    errors.ParseError: "The frame is not valid JSON / msgpack. `id` is null.",
    errors.InvalidRequest: "Not a JSON-RPC 2.0 request object, an id already in flight, or a message over the size limit.",
    errors.MethodNotFound: "No such method.",
    errors.InvalidParams: "Params do not match the method's schema; `data.field` names the offending field (e.g. `params.image.path`).",
    errors.InternalError: "A bug in the sidecar; details go to its log (stderr), never to the wire.",
    errors.ImageUnreadable: "The image file is missing, unreadable, or not a decodable JPEG/PNG/WebP/TIFF.",
    errors.ImageTooLarge: "The image exceeds `max_image_pixels` (see `initialize`) or the file-size limit; refused before decoding.",
    errors.MmapOutOfRange: "The mmap `offset + length` lies beyond the file, or raw pixels' shape does not match `length`.",
    errors.ModelMissing: "A model the method needs is missing or fails its sha256 check; `data.build` says how to build it.",
    errors.LibraryInUse: "Another liveryid process has the library open for writing.",
    errors.LibraryNotOpen: "The method needs a library: send `initialize` with `library` first.",
    errors.NotFound: "No car, reference or detection with that id; `data` names it.",
    errors.TrainingUnavailable: "The method trains a model and this installation cannot: it needs torch (`pip install liveryid[train]`).",
    errors.LibraryTooNew: "The library was written by a newer liveryid (a later database schema); this one leaves it untouched.",
    errors.RequestCancelled: "The request was cancelled by `$/cancelRequest` (LSP's RequestCancelled code).",
}


def schema() -> dict[str, Any]:
    types: list[Any] = []
    for spec in METHODS.values():
        types += [t for t in (spec.params, spec.result) if t is not None]
    types += NOTIFICATIONS.values()
    _, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")

    def ref(type_: Any) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{type_.__name__}"} if type_ is not None else {"type": "null"}

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://liveryid.local/protocol/schema.json",
        "title": "liveryid sidecar protocol",
        "description": "JSON-RPC 2.0 messages of the liveryid sidecar. Generated from sidecar/protocol/messages.py; do not edit.",
        "x-protocol-version": PROTOCOL_VERSION,
        "x-methods": {
            name: {"params": ref(spec.params), "result": ref(spec.result), "summary": spec.summary,
                   "notification": spec.notification}
            for name, spec in METHODS.items()
        },
        "x-notifications": {name: {"params": ref(t)} for name, t in NOTIFICATIONS.items()},
        "x-errors": {cls.__name__: {"code": cls.code, "meaning": ERROR_DOCS[cls]} for cls in errors.ERROR_CLASSES},
        "$defs": dict(sorted(components.items())),
    }


def _type_text(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return f"`{prop['$ref'].rsplit('/', 1)[1]}`"
    if "anyOf" in prop:
        return " or ".join(_type_text(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " \\| ".join(f'`"{v}"`' for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"array of {_type_text(prop.get('items', {}))}"
    return f"`{kind}`"


def _fields(definition: dict[str, Any]) -> list[str]:
    required = set(definition.get("required", []))
    rows = ["| field | type | required | default | notes |", "|---|---|---|---|---|"]
    for name, prop in definition.get("properties", {}).items():
        default = json.dumps(prop["default"]) if "default" in prop else ""
        notes = prop.get("description", "").replace("\n", " ")
        rows.append(f"| `{name}` | {_type_text(prop)} | {'yes' if name in required else ''} | {default} | {notes} |")
    return rows


def methods_markdown(doc: dict[str, Any]) -> str:
    defs = doc["$defs"]
    lines = [
        "# liveryid protocol: methods",
        "",
        "Generated from `sidecar/protocol/` by `python3 build.py generate`; do not edit.",
        f"Protocol version {doc['x-protocol-version']}. Wire and framing: see `protocol/README.md`.",
        "",
    ]
    for name, method in doc["x-methods"].items():
        lines += [f"## `{name}`", "", method["summary"], ""]
        if method["notification"]:
            lines += ["Sent as a notification (no `id`, no response).", ""]
        for role in ("params", "result"):
            target = method[role]
            if "$ref" not in target:
                lines += [f"**{role}**: `null`", ""]
                continue
            type_name = target["$ref"].rsplit("/", 1)[1]
            lines += [f"**{role}**: `{type_name}`", ""]
            if defs[type_name].get("properties"):
                lines += _fields(defs[type_name]) + [""]
    lines += ["## Notifications from the sidecar", ""]
    for name, notification in doc["x-notifications"].items():
        type_name = notification["params"]["$ref"].rsplit("/", 1)[1]
        lines += [f"### `{name}`", "", f"**params**: `{type_name}`", ""] + _fields(defs[type_name]) + [""]
    lines += ["## Types", ""]
    for type_name, definition in defs.items():
        if definition.get("properties") and not any(
            m[r].get("$ref", "").endswith(f"/{type_name}") for m in doc["x-methods"].values() for r in ("params", "result")
        ):
            lines += [f"### `{type_name}`", ""]
            if definition.get("description"):
                lines += [definition["description"], ""]
            lines += _fields(definition) + [""]
    lines += ["## Errors", "", "| code | name | meaning |", "|---|---|---|"]
    for error_name, error in doc["x-errors"].items():
        lines.append(f"| {error['code']} | {error_name} | {error['meaning']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(sys.argv[1])
    doc = schema()
    (out / "schema.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "methods.md").write_text(methods_markdown(doc))


if __name__ == "__main__":
    main()
