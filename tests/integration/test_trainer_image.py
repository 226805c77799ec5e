"""Dockerfile.trainer: build the image for real and train in it (Debian trixie's CPU torch 2.6)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from docker_fixtures import run_docker

REPO_ROOT = Path(__file__).resolve().parents[2]
TAG = "carbonaware/trainer:test"
QUICK = ["--max-samples", "2000", "--eval-samples", "1000", "--batch-size", "64"]

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def trainer_image(docker_build) -> str:
    return docker_build(REPO_ROOT, TAG, REPO_ROOT / "Dockerfile.trainer")


def _final_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _writable_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)  # the image runs as uid 10001
    return path


def test_image_runs_as_non_root_with_the_trainer_entrypoint(trainer_image: str) -> None:
    inspect = run_docker("image", "inspect", trainer_image, "--format", "{{json .Config}}")
    config = json.loads(inspect.stdout)
    assert config["User"] == "10001:10001"
    # Flags go to carbon-trainer; a command (carbonctl run ...) runs instead.
    assert config["Entrypoint"][:2] == ["/bin/sh", "-c"]
    assert "exec carbon-trainer" in config["Entrypoint"][2]


def test_training_in_the_image_reports_json_and_termination_message(
    trainer_image: str, mnist_dir: Path, tmp_path: Path
) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    termination_log.chmod(0o666)
    result = run_docker(
        "run",
        "--rm",
        "-v",
        f"{mnist_dir}:/data/mnist:ro",
        "-v",
        f"{termination_log}:/dev/termination-log",
        trainer_image,
        *QUICK,
        "--epochs",
        "1",
        timeout_s=600,
    )
    assert result.returncode == 0, result.stderr
    final = _final_json(result.stdout)
    assert final["status"] == "completed" and final["device"] == "cpu"
    assert final["accuracy"] > 0.7
    assert final["torch_version"].startswith("2."), "expected a PyTorch 2.x (Debian trixie's)"
    # The image has the host's fast paths: the precision measured at start, the allocator.
    assert final["precision_choice"]["how"] == "measured"
    assert final["precision_choice"]["fp32_step_ms"] > 0
    assert final["energy_method"].startswith(("estimated:cpu-time", "measured:rapl"))
    # Kubernetes shows this file as the pod's termination message.
    assert json.loads(termination_log.read_text()) == final


def test_missing_data_in_the_image_is_one_line_and_exit_2(trainer_image: str) -> None:
    result = run_docker("run", "--rm", trainer_image, "--epochs", "1", timeout_s=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "/data/mnist/MNIST/raw" in result.stderr


def test_docker_stop_checkpoints_and_a_new_container_resumes(
    trainer_image: str, mnist_dir: Path, tmp_path: Path
) -> None:
    checkpoints = _writable_dir(tmp_path / "checkpoints")
    args = [
        "-v",
        f"{mnist_dir}:/data/mnist:ro",
        "-v",
        f"{checkpoints}:/home/trainer/checkpoints",
        trainer_image,
        *QUICK,
        "--epochs",
        "1",
        "--log-every",
        "1",
    ]
    container = run_docker("run", "--detach", *args).stdout.strip()
    try:
        deadline = time.monotonic() + 300
        while "step 5/" not in run_docker("logs", container).stdout:
            assert time.monotonic() < deadline, "training never reached step 5"
            time.sleep(0.5)
        # `docker stop` sends SIGTERM like a Job suspension or an eviction does.
        run_docker("stop", "--time", "60", container, timeout_s=90)
        exit_code = int(run_docker("wait", container).stdout.strip())
        logs = run_docker("logs", container).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    assert exit_code == 75, logs
    assert _final_json(logs)["status"] == "interrupted"
    assert (checkpoints / "checkpoint.pt").is_file()

    resumed = run_docker("run", "--rm", *args, timeout_s=600)
    assert resumed.returncode == 0, resumed.stderr
    final = _final_json(resumed.stdout)
    assert final["resumed"] is True and final["resumed_from"]["step"] >= 5
    assert final["samples_all_runs"] == 2000 and final["accuracy"] > 0.7


def test_two_ranks_train_together_in_the_image(trainer_image: str, mnist_dir: Path) -> None:
    # Debian's torch has gloo: two ranks in one container on loopback, as two pods of an
    # Indexed Job would over the pod network (JOB_COMPLETION_INDEX is what Kubernetes sets).
    rank = (
        "JOB_COMPLETION_INDEX={i} carbon-trainer --max-samples 2000 --eval-samples 1000 "
        "--batch-size 64 --epochs 1 --threads 1 --log-every 0 --output-dir /tmp/out{i} "
        "--checkpoint-dir /tmp/ck > /tmp/rank{i}.log 2>&1"
    )
    script = (
        f"export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500; "
        f"({rank.format(i=1)}) & {rank.format(i=0)}; wait; tail -n 1 /tmp/rank0.log /tmp/rank1.log"
    )
    result = run_docker(
        "run", "--rm", "-v", f"{mnist_dir}:/data/mnist:ro", trainer_image, "sh", "-c", script,
        timeout_s=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    finals = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [final["rank"] for final in finals] == [0, 1], result.stdout
    for final in finals:
        assert final["status"] == "completed" and final["world_size"] == 2
        assert final["samples"] == 1000 and final["samples_all_runs"] == 2000
        assert final["accuracy"] > 0.7
