"""The original single-container path, with the project's trainer image:

    docker run --rm -v "$PWD":/work --user "$(id -u):$(id -g)" carbonaware/trainer:dev \\
        carbonctl run --speed 3600 --start 16h --threshold 150 --poll 1h

waits for a cleaner grid on the shipped demo trace, trains MNIST (mounted at /data/mnist), and
leaves the CSV log and carbon_plot.png in the mounted folder, owned by the invoking user.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from carbonaware.core.intensity_log import IntensityLog
from PIL import Image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINER_IMAGE = "carbonaware/trainer:dev"
# Not root, and not the image's own user: the files must belong to whoever runs the container.
HOST_UID, HOST_GID = 4321, 4321
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def trainer_image(docker_build) -> str:
    return docker_build(REPO_ROOT, TRAINER_IMAGE, REPO_ROOT / "Dockerfile.trainer")


def test_carbonctl_run_in_one_container_leaves_log_and_plot_in_the_mounted_folder(
    trainer_image: str, mnist_dir: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, HOST_UID, HOST_GID)
    # The demo trace from 16:00 (~240 g/kWh) at one trace hour per second: it drops to
    # 143 g/kWh at 01:00, so the run waits ~9 s, then trains (1 epoch, 1,000 samples).
    command = [
        "docker", "run", "--rm",
        "-v", f"{work}:/work",
        "-v", f"{mnist_dir}:/data/mnist:ro",
        "--user", f"{HOST_UID}:{HOST_GID}",
        trainer_image,
        "carbonctl", "run", "--speed", "3600", "--start", "16h",
        "--threshold", "150", "--poll", "1h",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]

    assert "STAND-IN" not in output, output[-3000:]
    assert "MNIST trainer" in output, output[-3000:]
    assert "epoch 1/1 done" in output, output[-3000:]

    log, plot = work / "carbon_log.csv", work / "carbon_plot.png"
    for made in (log, plot):
        assert made.is_file(), f"{made.name} missing from the mounted folder: {os.listdir(work)}"
        assert (made.stat().st_uid, made.stat().st_gid) == (HOST_UID, HOST_GID)

    intensities = [r.intensity for r in IntensityLog.from_csv(log.read_text()).readings]
    # It waited: the first readings are above the threshold, a later one at or below it.
    assert intensities[0] > 150 and min(intensities) <= 150, intensities

    with Image.open(plot) as image:
        assert image.format == "PNG"
        assert image.width >= 800 and image.height >= 400, image.size
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
