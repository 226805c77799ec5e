"""Shared pytest fixtures.

Real data lives beside the project in ../shared/data (see its README); tests read it there
and skip with a clear message where it is missing. Never copy it into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CARBONAWARE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real traces and MNIST in ../shared/data."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is missing (set CARBONAWARE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def traces_dir(shared_data: Path) -> Path:
    return shared_data / "traces"


@pytest.fixture(scope="session")
def mnist_dir(shared_data: Path) -> Path:
    path = shared_data / "mnist"
    if not (path / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST is missing from {path}")
    return path


# Fixture plugins, one module per concern (tests/plugins is on pytest's pythonpath).
pytest_plugins = ["cluster_fixtures", "docker_fixtures", "kueue_fixtures", "tool_fixtures"]
