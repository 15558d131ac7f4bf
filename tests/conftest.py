from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.datasets import DATA_DIR
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from tests.sidecar_process import SidecarProcess

FIXTURES = Path(__file__).resolve().parents[1] / "protocol" / "conformance" / "fixtures"


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The real engine on the default models (built by `build.py models`)."""
    return Engine(settings_from_env())


@pytest.fixture
def dev_data() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"development data not found at {DATA_DIR} (it lives beside the clone, in ../shared/data)")
    return DATA_DIR


@pytest.fixture(params=["json", "msgpack"])
def sidecar(request: pytest.FixtureRequest) -> Iterator[SidecarProcess]:
    process = SidecarProcess(request.param)
    yield process
    process.kill()
