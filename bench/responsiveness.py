"""How long the app waits for `identify` while a `tag` runs, through the
real sidecar process (JSON-RPC on stdin/stdout, its default two workers),
against the same identify when the sidecar is idle.

    .venv/bin/python -m bench.responsiveness [--photos 30]

The photos and the 40-car library are bench.throughput's (24 MP JPEGs).
Identify asks about one of those photos, one request at a time, the next
sent when the previous is answered.
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

from bench.datasets import DATA_DIR
from bench.throughput import build_photos, enroll


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


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    return (f"{len(ordered)} | {statistics.median(ordered):.0f} | {ordered[int(0.9 * (len(ordered) - 1))]:.0f} "
            f"| {ordered[-1]:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=30)
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    photos = build_photos(Path(".cache/throughput") / str(args.photos), args.photos)
    query = {"image": {"path": str(photos[len(photos) // 2])}}
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library"
        enroll(library)
        client = Client()
        try:
            client.call("init", "initialize", {"library": str(library)})
            client.call("warm", "identify", query)
            idle = [client.call(f"idle{i}", "identify", query)[0] for i in range(10)]
            started = client.send("tag", "tag", {"images": [str(photos[0].parent)], "rescan": True})
            loaded: list[float] = []
            while "tag" not in client.answers:
                loaded.append(client.call(f"busy{len(loaded)}", "identify", query)[0])
            finished, tag = client.wait("tag")
        finally:
            client.close()
    result = tag["result"]
    print(f"identify on a 24 MP JPEG (6016x4000), 40 enrolled cars; tag of {result['tagged']} such photos at "
          f"{result['tagged'] / (finished - started):.2f} photos/s while identify runs beside it")
    print("| sidecar | identify calls | p50 ms | p90 ms | max ms |")
    print("|---|---|---|---|---|")
    print(f"| idle | {summary(idle)} |")
    print(f"| tagging | {summary(loaded)} |")


if __name__ == "__main__":
    main()
