"""A models folder beside the shipped one with one model rebuilt by its
build script under other arguments, for benches that ask what a change
to a training recipe (or only its seed) does to the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sidecar.config import DEFAULT_MODELS_DIR
from sidecar.inference.manifest import LOCAL_BUILDS_FILE, sha256_of


def retrained_models(name: str, script: str, arguments: list[str], folder: Path) -> Path:
    """`folder` holding the shipped models (linked) and manifest, model `name` rebuilt by
    `models/<script> --cache .cache --output ... <arguments>` and pinned by its own sha256."""
    manifest = json.loads((DEFAULT_MODELS_DIR / "manifest.json").read_text())
    for entry in manifest["models"]:
        target = folder / entry["file"]
        if entry["name"] != name:
            target.symlink_to(DEFAULT_MODELS_DIR / entry["file"])
            continue
        subprocess.run([sys.executable, DEFAULT_MODELS_DIR / script, "--cache", ".cache", "--output", target,
                        *arguments], check=True, stdout=sys.stderr,
                       env={**os.environ, "PYTHONPATH": str(DEFAULT_MODELS_DIR.parent)})
        entry["sha256"] = sha256_of(target)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if (DEFAULT_MODELS_DIR / LOCAL_BUILDS_FILE).exists():  # vouches for the linked models built on this machine
        (folder / LOCAL_BUILDS_FILE).symlink_to(DEFAULT_MODELS_DIR / LOCAL_BUILDS_FILE)
    return folder


@contextmanager
def seed_folder(keep: Path | None, seed: int) -> Iterator[Path]:
    """Where a seed's build goes: KEEP/seed-N, kept (a fresh folder: an earlier build is never
    overwritten), or without `keep` a temporary folder."""
    if keep is not None:
        folder = keep / f"seed-{seed}"
        folder.mkdir(parents=True)
        yield folder
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
