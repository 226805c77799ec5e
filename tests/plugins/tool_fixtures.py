"""Fixtures for the real tools the packaging and monitoring tests drive.

- `helm` (session): the helm binary hack/build-helm.sh builds from its Go module (cached in
  ~/.cache/carbonaware/helm-<version>/bin; built on first use, which takes a few minutes).
- `promtool` / `prometheus_bin` (session): Debian's prometheus package, installed by
  hack/prometheus.sh where missing; tests skip, saying why, where it cannot be installed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL_UNAVAILABLE = 3  # hack/prometheus.sh: cannot install here


def _run_script(request: pytest.FixtureRequest, script: str) -> subprocess.CompletedProcess:
    # Not captured: a first build or install takes minutes; show its progress.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / script)], stdout=subprocess.PIPE, text=True
        )


@pytest.fixture(scope="session")
def helm(request: pytest.FixtureRequest) -> str:
    result = _run_script(request, "build-helm.sh")
    if result.returncode != 0:
        pytest.fail(f"hack/build-helm.sh failed (exit {result.returncode})", pytrace=False)
    return str(Path(result.stdout.strip().splitlines()[-1]) / "helm")


@pytest.fixture(scope="session")
def prometheus_dir(request: pytest.FixtureRequest) -> Path:
    result = _run_script(request, "prometheus.sh")
    if result.returncode == TOOL_UNAVAILABLE:
        pytest.skip("prometheus unavailable: hack/prometheus.sh could not install it here")
    if result.returncode != 0:
        pytest.fail(f"hack/prometheus.sh failed (exit {result.returncode})", pytrace=False)
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def promtool(prometheus_dir: Path) -> str:
    return str(prometheus_dir / "promtool")


@pytest.fixture(scope="session")
def prometheus_bin(prometheus_dir: Path) -> str:
    return str(prometheus_dir / "prometheus")
