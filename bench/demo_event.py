"""A demo event from the development data, for `python3 build.py demo`:
reference folders for EPFL cars 01-07 (three viewing angles each) and an
event folder with every 6th frame of all ten cars (08-10 never enrolled),
as symbolic links: the data itself is never copied or written to.

    .venv/bin/python -m bench.demo_event OUT_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.datasets import epfl_frames
from bench.manifests import UNKNOWN_EPFL_CARS, closest, epfl_angles

REFERENCE_ANGLES = (45.0, 165.0, 285.0)


def main() -> None:
    workspace = Path(sys.argv[1])
    shutil.rmtree(workspace, ignore_errors=True)
    refs, event = workspace / "refs", workspace / "event"
    turns = epfl_angles()
    frames = epfl_frames()
    for car in sorted({f.car for f in frames} - UNKNOWN_EPFL_CARS):
        folder = refs / f"EPFL car {car:02d}"
        folder.mkdir(parents=True)
        for angle in REFERENCE_ANGLES:
            chosen = closest([f for f in frames if f.car == car], angle, turns)
            (folder / chosen.path.name).symlink_to(chosen.path)
    event.mkdir(parents=True)
    for frame in frames[3::6]:
        (event / frame.path.name).symlink_to(frame.path)
    print(f"{refs}: {len(list(refs.iterdir()))} cars; {event}: {len(list(event.iterdir()))} photos", file=sys.stderr)


if __name__ == "__main__":
    main()
