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
    unpacked under `cache`; returns the unpacked root. The .deb itself is not kept (it goes with
    the temporary folder it was downloaded into)."""
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
        with deb.open("rb") as package_file:
            actual = hashlib.file_digest(package_file, "sha256").hexdigest()
        if actual != sha256:
            sys.exit(f"{deb.name} has sha256 {actual}, the build pins {sha256}")
        shutil.rmtree(root, ignore_errors=True)
        # The package's files as a tar stream, read as dpkg-deb writes it: only the wanted folders
        # reach the disk, and neither the archive nor the package is held in memory.
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as unpack:
            assert unpack.stdout is not None
            with tarfile.open(fileobj=unpack.stdout, mode="r|") as archive:
                for member in archive:
                    if any(member.name.removeprefix("./").startswith(folder) for folder in folders):
                        archive.extract(member, root, filter="data")
        if unpack.returncode != 0:
            sys.exit(f"dpkg-deb could not unpack {deb.name}")
    stamp.write_text(sha256)
    return root
