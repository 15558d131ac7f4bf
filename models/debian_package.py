"""Files out of a pinned Debian package: TORCS's car models and track
textures, which the vehicle detector's synthetic training photos are drawn
from (sidecar/training/renders.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def unpack_debian_package(package: str, version: str, sha256: str, folders: list[str], cache: Path) -> Path:
    """The `folders` (paths inside the package, e.g. `usr/share/games/torcs/cars`) of the Debian
    package `package=version`, downloaded once with apt-get, checked against its sha256 and
    unpacked under `cache`; returns the unpacked root. The .deb itself is not kept."""
    root = cache / f"{package}-{version}"
    stamp = root / ".unpacked"
    if stamp.exists() and stamp.read_text() == sha256:
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        download = ["apt-get", "download", f"{package}={version}"]
        if subprocess.run(download, cwd=tmp, stdout=sys.stderr).returncode != 0:
            if os.geteuid() != 0:
                sys.exit(f"cannot download the Debian package {package}={version}: run `apt-get update` as root "
                         "(a fresh machine has no package lists) and build again")
            subprocess.run(["apt-get", "update"], check=True, stdout=sys.stderr)
            subprocess.run(download, cwd=tmp, check=True, stdout=sys.stderr)
        (deb,) = Path(tmp).glob("*.deb")
        actual = hashlib.sha256(deb.read_bytes()).hexdigest()
        if actual != sha256:
            sys.exit(f"{deb.name} has sha256 {actual}, the build pins {sha256}")
        shutil.rmtree(root, ignore_errors=True)
        contents = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
        deb.unlink()
        with tempfile.TemporaryFile(dir=tmp) as tar_file:
            tar_file.write(contents)
            del contents
            tar_file.seek(0)
            with tarfile.open(fileobj=tar_file) as archive:
                wanted = [m for m in archive.getmembers()
                          if any(m.name.lstrip("./").startswith(folder) for folder in folders)]
                archive.extractall(root, members=wanted, filter="data")
    stamp.write_text(sha256)
    return root
