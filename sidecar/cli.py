"""Command line: `liveryid serve` for the app, and the same engine for
people at a terminal (`detect`, `embed`, `info`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import msgspec

from sidecar import __version__
from sidecar.config import Settings, settings_from_env
from sidecar.errors import RpcError
from sidecar.protocol.framing import WIRES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveryid", description="Vehicle detection and re-identification for motorsport photos.")
    parser.add_argument("--version", action="version", version=f"liveryid {__version__}")
    parser.add_argument("--models", type=Path, help="folder holding manifest.json and the ONNX models")
    parser.add_argument("--workers", type=int, help="requests run in parallel (default 2)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="speak JSON-RPC 2.0 on stdin/stdout (for the app)")
    serve.add_argument("--wire", choices=WIRES, default="json",
                       help="json: one message per line; msgpack: 4-byte big-endian length + msgpack")

    detect = commands.add_parser("detect", help="print the vehicles found in images")
    detect.add_argument("images", nargs="+", type=Path)
    detect.add_argument("--min-score", type=float, help="lowest detector score kept (default: the protocol's)")
    detect.add_argument("--json", action="store_true", help="one JSON result per line")

    embed = commands.add_parser("embed", help="print the embedding of an image (region)")
    embed.add_argument("image", type=Path)
    embed.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"))

    commands.add_parser("info", help="print the models and whether they load")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_env(models_dir=args.models, workers=args.workers)
    if args.command == "serve":
        from sidecar.serve import claim_stdout, serve

        wire = claim_stdout()
        sys.exit(serve(settings, args.wire, sys.stdin.buffer, wire))
    try:
        sys.exit(_run_command(args, settings))
    except RpcError as exc:
        print(f"liveryid: {exc.message}", file=sys.stderr)
        sys.exit(1)


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    """The terminal commands call the engine's methods exactly as the app does."""
    from sidecar.engine import Engine
    from sidecar.protocol.endpoint import CancelToken, RequestContext
    from sidecar.protocol.messages import DetectParams, EmbedParams, ImageRef, InitializeParams

    engine = Engine(settings)
    context = RequestContext(0, CancelToken(), False, lambda method, params: None)
    if args.command == "info":
        print(msgspec.json.format(msgspec.json.encode(engine.initialize(InitializeParams(), context)).decode()))
        return 0
    if args.command == "embed":
        result = engine.embed(EmbedParams(image=ImageRef(path=str(args.image)), box=args.box), context)
        print(msgspec.json.encode(result, enc_hook=lambda v: v.tolist()).decode())
        return 0
    failures = 0
    for path in args.images:
        try:
            options = {} if args.min_score is None else {"min_score": args.min_score}
            found = engine.detect(DetectParams(image=ImageRef(path=str(path)), **options), context)
        except RpcError as exc:
            failures += 1
            print(f"{path}: error {exc.code}: {exc.message}", file=sys.stderr)
            continue
        if args.json:
            print(msgspec.json.encode({"path": str(path), **msgspec.structs.asdict(found)}).decode())
            continue
        print(f"{path}  {found.width}x{found.height}  {len(found.vehicles)} vehicle(s)")
        for vehicle in found.vehicles:
            x1, y1, x2, y2 = vehicle.box
            print(f"  {vehicle.label:<10} {vehicle.score:.2f}  box=({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})")
    return 1 if failures else 0
