"""Fixtures the integration modules share: the CRDs installed once per module, and a
loopback Electricity Maps server whose zones can be told to misbehave (faultkit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import FaultServer, install_crds

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd(kubectl: str, kubeconfig: Path) -> None:
    install_crds(kubectl, kubeconfig, REPO / "manifests")


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()
