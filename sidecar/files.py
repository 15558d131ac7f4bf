"""Writing a file so that a crash leaves the old one or the new one, never half of either."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write beside `path` (a hidden temporary name), then rename over it."""
    tmp = path.with_name(f".{path.name}.liveryid-tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
