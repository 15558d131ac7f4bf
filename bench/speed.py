"""Milliseconds per `detect` and per `embed` call on this machine, through
the engine's method handlers (decode included, exactly what a request runs;
the JSON-RPC round trip adds what js-bindings/bench/ping.mjs measures).

    .venv/bin/python -m bench.speed [--calls N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

from bench.datasets import DATA_DIR, epfl_frames, f1_images
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.protocol.endpoint import quiet_context
from sidecar.protocol.messages import DetectParams, EmbedParams, ImageRef

CONTEXT = quiet_context()


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    call()  # warm-up: first runs allocate
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    if not DATA_DIR.is_dir():
        sys.exit(f"no development data at {DATA_DIR}")
    settings = settings_from_env()
    engine = Engine(settings)
    engine.detector(), engine.embedder()
    f1_photo = str(f1_images()[0][0])
    epfl = epfl_frames()[0]
    cases = {
        "detect, 1920x1080 PNG (F1 game)": lambda: engine.detect(DetectParams(image=ImageRef(path=f1_photo)), CONTEXT),
        "detect, 376x250 JPEG (EPFL)": lambda: engine.detect(DetectParams(image=ImageRef(path=str(epfl.path))), CONTEXT),
        "embed box, 1920x1080 PNG": lambda: engine.embed(EmbedParams(image=ImageRef(path=f1_photo), box=[223, 347, 1452, 700]), CONTEXT),
        "embed box, 376x250 JPEG": lambda: engine.embed(EmbedParams(image=ImageRef(path=str(epfl.path)), box=list(epfl.box)), CONTEXT),
    }
    print(f"{os.cpu_count()} CPUs, intra-op threads per session {settings.intra_op_threads}, {args.calls} calls each, one at a time")
    print("| call | p50 ms | mean ms | min ms |")
    print("|---|---|---|---|")
    for name, call in cases.items():
        times = timed(call, args.calls)
        print(f"| {name} | {statistics.median(times):.1f} | {statistics.fmean(times):.1f} | {min(times):.1f} |")


if __name__ == "__main__":
    main()
