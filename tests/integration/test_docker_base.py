"""The locally made base image behaves like the python:3.11-slim image the Dockerfiles name.

No registry can be reached here, so hack/docker.sh builds `python:3.11-slim-bookworm` from a
debootstrap of Debian bookworm. These tests run real containers from it (no network needed:
nothing here talks to anything beyond this machine).
"""

from __future__ import annotations

import re
import ssl
import textwrap
from pathlib import Path

import pytest
from docker_fixtures import BASE_IMAGE, run_docker

pytestmark = pytest.mark.docker

HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def pem_blocks_as_der(text: str) -> list[bytes]:
    return [ssl.PEM_cert_to_DER_cert(block) for block in PEM_BLOCK.findall(text)]


def run_in_base(*command: str, volumes: dict[Path, str] | None = None) -> str:
    args = ["run", "--rm", "--network", "none"]
    for host_path, container_path in (volumes or {}).items():
        args += ["--volume", f"{host_path}:{container_path}:ro"]
    result = run_docker(*args, BASE_IMAGE, *command)
    assert result.returncode == 0, f"{command} failed in {BASE_IMAGE}:\n{result.stderr}"
    return result.stdout


def test_python_is_3_11_under_both_names() -> None:
    out = run_in_base(
        "sh", "-c", "python -c 'import sys; print(sys.version_info[:2])' && python3 --version"
    )
    python_version, python3_version = out.splitlines()
    assert python_version == "(3, 11)"
    assert python3_version.startswith("Python 3.11.")


def test_trusts_the_gateway_cas_the_host_trusts() -> None:
    """Containers reach PyPI and Debian through the host's gateway, which presents
    certificates from the CAs in the host's /usr/local/share/ca-certificates."""
    host_cas = sorted(HOST_EXTRA_CAS.glob("*.crt"))
    if not host_cas:
        pytest.skip(f"this host trusts no extra CA in {HOST_EXTRA_CAS}: nothing to carry over")
    expected = {der for ca in host_cas for der in pem_blocks_as_der(ca.read_text())}
    # The default context is what pip, requests and urllib use inside the image.
    out = run_in_base(
        "python3",
        "-c",
        "import ssl\n"
        "for der in ssl.create_default_context().get_ca_certs(binary_form=True):\n"
        "    print(ssl.DER_cert_to_PEM_cert(der))\n",
    )
    trusted = set(pem_blocks_as_der(out))
    assert len(trusted) > 100  # Debian's bundle is there too, not only the gateway's CAs
    assert expected <= trusted


def test_pip_installs_into_the_image_python(tmp_path: Path) -> None:
    """Like the official image (and unlike plain Debian), `pip install` needs no venv."""
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "hello-base"
            version = "1.0"
            """
        )
    )
    (tmp_path / "hello_base.py").write_text("GREETING = 'installed by pip'\n")
    out = run_in_base(
        "sh",
        "-c",
        "cp -r /src /tmp/src && pip install --quiet --no-index --no-build-isolation /tmp/src"
        " && cd / && python -c 'import hello_base; print(hello_base.GREETING)'",
        volumes={tmp_path: "/src"},
    )
    assert out.strip().splitlines()[-1] == "installed by pip"


def test_apt_uses_the_hosts_mirror() -> None:
    host_sources = Path("/etc/apt/sources.list.d/debian.sources")
    if not host_sources.is_file():
        pytest.skip("the host has no /etc/apt/sources.list.d/debian.sources to compare with")
    image_sources = run_in_base("cat", "/etc/apt/sources.list.d/debian.sources")
    assert image_sources == host_sources.read_text()


def test_docker_build_from_the_base_needs_no_registry(tmp_path: Path, docker_build) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        "RUN python -c \"print('built', 6 * 7)\" > /built.txt\n"
        'CMD ["cat", "/built.txt"]\n'
    )
    tag = docker_build(tmp_path, "carbonaware-test/base-child:latest")
    result = run_docker("run", "--rm", "--network", "none", tag)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "built 42"
