"""How long the app waits for `identify` while a `tag` (or an `adapt`)
runs, through the real sidecar process (JSON-RPC on stdin/stdout, its
default two workers), against the same identify when the sidecar is idle.

    .venv/bin/python -m bench.responsiveness [--photos 60] [--interval 1] [--no-numbers] [--during tag|adapt]
                                             [--references N ...]

The photos and the 40-car library are bench.throughput's (24 MP JPEGs).
Identify asks about one of those photos, one request at a time, idle, then
once every --interval seconds while the tag runs (or an adapt on the same
photos, measuring only: switch false). With --references, idle identify
against libraries grown to N references.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import DATA_DIR
from bench.throughput import QUIET, build_photos, enroll
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.protocol.messages import InitializeParams

FILLER_PER_CAR = 100


class Client:
    """A minimal JSON-RPC client of `liveryid serve`: answers by id, with the time they arrived."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "sidecar", "--log-level", "WARNING", "serve"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.answers: dict[Any, tuple[float, dict[str, Any]]] = {}
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            if "id" in message:
                with self._arrived:
                    self.answers[message["id"]] = (time.perf_counter(), message)
                    self._arrived.notify_all()

    def send(self, id: Any, method: str, params: dict[str, Any]) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).encode() + b"\n")
        self.process.stdin.flush()
        return time.perf_counter()

    def wait(self, id: Any) -> tuple[float, dict[str, Any]]:
        with self._arrived:
            self._arrived.wait_for(lambda: id in self.answers)
            return self.answers[id]

    def call(self, id: Any, method: str, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        sent = self.send(id, method, params)
        arrived, answer = self.wait(id)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return 1000 * (arrived - sent), answer["result"]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()  # gone, and its library lock with it, before the next process opens the library


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    return (f"{len(ordered)} | {statistics.median(ordered):.0f} | {ordered[int(0.9 * (len(ordered) - 1))]:.0f} "
            f"| {ordered[-1]:.0f}")


def with_references(library: Path, total: int) -> None:
    """Fill the library up to `total` references with cars of random unit
    vectors (100 each): they cost the index search what real ones would and
    never match a real photo."""
    engine = Engine(settings_from_env())
    engine.initialize(InitializeParams(library=str(library)), QUIET)
    opened, embedder = engine.library(), engine.embedder()
    rng = np.random.default_rng(0)
    missing = total - len(opened.index)
    for start in range(0, missing, FILLER_PER_CAR):
        vectors = rng.standard_normal((min(FILLER_PER_CAR, missing - start), embedder.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        opened.enroll(None, {"label": f"filler {start // FILLER_PER_CAR}"},
                      [("synthetic", [0.0, 0.0, 1.0, 1.0], v, 1.0) for v in vectors], embedder.key)
    engine.close()


def identify_idle(library: Path, query: dict[str, Any], calls: int) -> list[float]:
    client = Client()
    try:
        client.call("init", "initialize", {"library": str(library)})
        client.call("warm", "identify", query)
        return [client.call(f"idle{i}", "identify", query)[0] for i in range(calls)]
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between identify calls during the tag")
    parser.add_argument("--no-numbers", action="store_true", help="identify without reading numbers (tag reads them)")
    parser.add_argument("--during", choices=["tag", "adapt"], default="tag", help="the background job")
    parser.add_argument("--references", type=int, nargs="+", metavar="N",
                        help="instead: idle identify against libraries of N references")
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    photos = build_photos(Path(".cache/throughput") / str(args.photos), args.photos)
    query: dict[str, Any] = {"image": {"path": str(photos[len(photos) // 2])}, "read_numbers": not args.no_numbers}
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library"
        enroll(library)
        if args.references:
            print(f"identify{' (numbers not read)' if args.no_numbers else ''} on a 24 MP JPEG (6016x4000), idle "
                  "sidecar; the 40 enrolled cars plus random references")
            print("| references | identify calls | p50 ms | p90 ms | max ms |")
            print("|---|---|---|---|---|")
            for total in sorted(args.references):
                with_references(library, total)
                print(f"| {total:,} | {summary(identify_idle(library, query, 30))} |", flush=True)
            return
        idle = identify_idle(library, query, 20)
        client = Client()
        try:
            client.call("init", "initialize", {"library": str(library)})
            client.call("warm", "identify", query)
            folder = [str(photos[0].parent)]
            job = {"images": folder, "rescan": True} if args.during == "tag" else {"images": folder, "switch": False}
            started = client.send("job", args.during, job)
            loaded: list[float] = []
            while "job" not in client.answers:
                time.sleep(args.interval)
                if "job" not in client.answers:
                    loaded.append(client.call(f"busy{len(loaded)}", "identify", query)[0])
            finished, answer = client.wait("job")
        finally:
            client.close()
    if "error" in answer:
        sys.exit(f"{args.during}: {answer['error']}")
    result, seconds = answer["result"], finished - started
    meanwhile = (f"a tag of {result['tagged']} such photos ({result['tagged'] / seconds:.2f} photos/s meanwhile)"
                 if args.during == "tag" else
                 f"an adapt on those photos ({result['crops']} crops, {seconds:.0f} s; switch false)")
    print(f"identify{' (numbers not read)' if args.no_numbers else ''} on a 24 MP JPEG (6016x4000), 40 enrolled cars, "
          f"idle and once every {args.interval:g} s during {meanwhile}")
    print("| sidecar | identify calls | p50 ms | p90 ms | max ms |")
    print("|---|---|---|---|---|")
    print(f"| idle | {summary(idle)} |")
    print(f"| {'tagging' if args.during == 'tag' else 'adapting'} | {summary(loaded)} |")


if __name__ == "__main__":
    main()
