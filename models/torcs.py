"""TORCS's car models and track textures, from Debian's torcs-data package
(pinned by version and sha256): what the synthetic training photos of
sidecar/training/renders.py are drawn from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debian_package import unpack_debian_package
from sidecar.training.renders import CarModel, load_assets

TORCS_DATA = ("torcs-data", "1.3.7+dfsg-5", "33a170ec9db8bdf7e33cb07b96b9854d5ef9e47b1f82705e4c24d6caaf13fb99")
TORCS_ROOT = "usr/share/games/torcs"


def torcs_assets(cache: Path) -> tuple[list[CarModel], dict[str, np.ndarray]]:
    """The cars and textures, the package fetched and unpacked into `cache` on first use."""
    root = unpack_debian_package(*TORCS_DATA, [f"{TORCS_ROOT}/cars", f"{TORCS_ROOT}/data/textures"], cache)
    return load_assets(root / TORCS_ROOT)
