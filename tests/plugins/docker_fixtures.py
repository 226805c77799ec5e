"""Fixtures for tests that need a Docker engine (owned by the Docker/node work).

- `docker_engine` (session): runs `hack/docker.sh up` (installs Debian's docker.io if
  missing, starts dockerd, creates the base image `python:3.11-slim-bookworm` from a
  debootstrap, since no registry can be reached). Skips, printing why, where no engine can
  run here (the script exits 3); fails when the engine runs but the base image cannot be made.
- `docker_build` (session): a function that builds an image with the legacy builder
  (Debian's docker.io has no buildx, so BuildKit is off) and fails the test with the build's
  output when the build fails.
- Tests marked `docker` get the engine automatically.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_SCRIPT = REPO_ROOT / "hack" / "docker.sh"
BASE_IMAGE = "python:3.11-slim-bookworm"
ENGINE_UNAVAILABLE = 3  # hack/docker.sh's exit code when no engine can run on this machine
BUILD_OUTPUT_TAIL_LINES = 60


@dataclass(frozen=True)
class DockerEngine:
    server_version: str
    base_image: str


def run_docker(*args: str, timeout_s: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """`docker ARGS`, output captured as text; the caller checks the return code."""
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout_s, **kwargs
    )


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> DockerEngine:
    # Not captured: a cold run installs packages and debootstraps for minutes; show progress.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        up = subprocess.run(
            ["bash", str(DOCKER_SCRIPT), "up"], stderr=subprocess.PIPE, text=True, timeout=1800
        )
    last_line = (up.stderr.strip().splitlines() or [f"exit {up.returncode}"])[-1]
    if up.returncode == ENGINE_UNAVAILABLE:
        pytest.skip(f"needs a Docker engine: {last_line}")
    if up.returncode != 0:
        pytest.fail(f"hack/docker.sh up failed: {up.stderr.strip()}", pytrace=False)
    version = run_docker("version", "--format", "{{.Server.Version}}", timeout_s=30)
    return DockerEngine(server_version=version.stdout.strip(), base_image=BASE_IMAGE)


@pytest.fixture(scope="session")
def docker_build(docker_engine: DockerEngine) -> Callable[..., str]:
    def build(context: Path, tag: str, dockerfile: Path | None = None) -> str:
        args = ["build", "--tag", tag]
        if dockerfile is not None:
            args += ["--file", str(dockerfile)]
        result = run_docker(
            *args, str(context), timeout_s=1800, env={**os.environ, "DOCKER_BUILDKIT": "0"}
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).splitlines()[-BUILD_OUTPUT_TAIL_LINES:]
            pytest.fail(f"docker build of {tag} failed:\n" + "\n".join(output), pytrace=False)
        return tag

    return build


@pytest.fixture(autouse=True)
def _docker_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker"):
        request.getfixturevalue("docker_engine")
