"""`carbon-trainer` as a user (or the scheduler) runs it: a real process on real MNIST subsets."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from carbontrainer.report import EXIT_INTERRUPTED, REQUIRED_FIELDS
from carbontrainer.train import TrainConfig, train

# Small subsets keep these runs to tens of seconds on 2 shared cores.
QUICK = ["--max-samples", "1536", "--eval-samples", "1000", "--batch-size", "64"]


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carbontrainer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        **kwargs,
    )


def _final_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_missing_data_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path / "empty"), "--epochs", "1", "--no-download"]
    result = _run(args, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(tmp_path / "empty" / "MNIST" / "raw") in lines[0]
    final = _final_json(result.stdout)
    assert final["status"] == "error" and final["exit_code"] == 2


@pytest.fixture(scope="module")
def mnist_mirror(mnist_dir: Path) -> Iterator[str]:
    """A loopback HTTP server serving the four MNIST files as ``<name>.gz``, as the real
    mirrors do (the internet is out of reach here)."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0)
    for path in (mnist_dir / "MNIST" / "raw").iterdir():
        body = gzip.compress(path.read_bytes(), compresslevel=1)
        server.expect_request(f"/mnist/{path.name}.gz").respond_with_data(body)
    server.start()
    yield server.url_for("/mnist/")
    server.stop()


def test_missing_data_is_downloaded_by_default(tmp_path: Path, mnist_mirror: str) -> None:
    """The Kubernetes quick start's image has no MNIST: the trainer fetches it where a
    mirror is reachable (MNIST_MIRROR here; torchvision's mirrors by default)."""
    empty = tmp_path / "data"
    result = _run(
        ["--data-dir", str(empty), "--max-samples", "256", "--eval-samples", "200",
         "--log-every", "0", "--checkpoint-dir", "ck", "--output-dir", "out"],
        tmp_path, env={"MNIST_MIRROR": mnist_mirror},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _final_json(result.stdout)["status"] == "completed"
    assert sorted(p.name for p in (empty / "MNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]


def test_offline_the_missing_data_error_stays_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: an offline cluster
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    result = _run(
        ["--data-dir", str(tmp_path / "empty")],
        tmp_path, env={"MNIST_MIRROR": closed},
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"MNIST not found in {tmp_path / 'empty' / 'MNIST'}/raw" in lines[0]
    assert f"downloading it failed: {closed}" in lines[0]


@pytest.mark.parametrize("option", ["--checkpoint-dir", "--output-dir"])
def test_unwritable_folder_is_one_line_and_exit_2_before_training(
    tmp_path: Path, mnist_dir: Path, option: str
) -> None:
    # A path under a regular file: not creatable even as root (a read-only mode would not
    # stop root, which these tests may run as).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folder = blocker / "sub"
    result = _run(["--data-dir", str(mnist_dir), *QUICK, option, str(folder)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and str(folder) in lines[0], result.stderr
    assert "training on" not in result.stdout  # refused before any work, not after an epoch
    final = _final_json(result.stdout)
    assert final["status"] == "error" and final["exit_code"] == 2


def test_bad_flag_is_one_line_and_exit_2(tmp_path: Path, mnist_dir: Path) -> None:
    result = _run(["--data-dir", str(mnist_dir), "--epochs", "0"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--epochs" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_short_run_learns_and_reports_every_field(tmp_path: Path, mnist_dir: Path) -> None:
    result = _run(
        [
            *QUICK,
            "--data-dir",
            str(mnist_dir),
            "--epochs",
            "1",
            "--log-every",
            "8",
            "--checkpoint-dir",
            "ck",
            "--output-dir",
            "out",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("epoch 1 step 8/24 loss") and "samples/s" in line for line in lines)
    final = json.loads(lines[-1])
    assert set(REQUIRED_FIELDS) <= final.keys()
    assert final["status"] == "completed" and final["exit_code"] == 0
    # Chance is 10 %; 1 536 images for one epoch get well past 70 %.
    assert final["accuracy"] > 0.7
    assert final["samples"] == 1536 and final["epochs"] == 1
    assert final["energy_kwh"] > 0 and final["energy_method"].startswith("estimated:cpu-time")
    assert final["device"] == "cpu" and final["resumed"] is False
    assert Path(tmp_path, final["checkpoint_path"]).is_file()
    assert (tmp_path / "out" / "model.pt").is_file()
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == final


@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_and_the_rerun_resumes_to_the_same_result(
    tmp_path: Path, mnist_dir: Path
) -> None:
    args = [
        *QUICK,
        "--data-dir",
        str(mnist_dir),
        "--epochs",
        "2",
        "--log-every",
        "1",
        "--checkpoint-dir",
        "ck",
        "--output-dir",
        "out",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "carbontrainer", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("epoch 2 step 5/"):
            process.send_signal(signal.SIGTERM)
            break
    rest, stderr = process.communicate(timeout=300)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    interrupted = _final_json(rest)
    assert interrupted["status"] == "interrupted" and interrupted["exit_reason"] == "SIGTERM"
    checkpoint = tmp_path / interrupted["checkpoint_path"]
    assert checkpoint.is_file()
    assert not list((tmp_path / "ck").glob("*.tmp")), "temporary file left behind"

    started = time.perf_counter()
    resumed = _run(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    final = _final_json(resumed.stdout)
    assert final["resumed"] is True
    assert final["resumed_from"]["epoch"] == 1 and final["resumed_from"]["step"] >= 5
    assert final["samples"] < 1536, "the resumed run retrained what was already done"
    assert final["samples_all_runs"] == 2 * 1536
    assert final["accuracy"] > 0.8
    assert time.perf_counter() - started < 300

    # The resumed run trained in the precision the interrupted one measured and chose.
    assert final["precision"] == interrupted["precision"]
    assert final["precision_choice"]["how"] == "kept from the checkpoint"
    # An uninterrupted run with the same seed and precision ends with the same model quality.
    uninterrupted = train(
        TrainConfig(
            data_dir=mnist_dir,
            epochs=2,
            batch_size=64,
            max_samples=1536,
            eval_samples=1000,
            seed=1,
            log_every=0,
            amp=interrupted["precision"] == "bfloat16",
        ),
        log=lambda _line: None,
    )
    assert final["accuracy"] == pytest.approx(uninterrupted.accuracy, abs=0.002)
    assert final["loss"] == pytest.approx(uninterrupted.loss, rel=0.01)


def test_checkpoint_from_other_settings_is_refused_with_one_line(
    tmp_path: Path, mnist_dir: Path
) -> None:
    stops = iter([False, True])
    outcome = train(
        TrainConfig(
            data_dir=mnist_dir,
            checkpoint_dir=tmp_path / "ck",
            epochs=1,
            batch_size=64,
            max_samples=256,
            eval_samples=100,
            log_every=0,
        ),
        log=lambda _line: None,
        should_stop=lambda: next(stops),
    )
    assert outcome.status == "interrupted" and outcome.samples == 64
    result = _run(
        [
            "--data-dir",
            str(mnist_dir),
            "--checkpoint-dir",
            "ck",
            "--batch-size",
            "32",
            "--max-samples",
            "256",
            "--epochs",
            "1",
        ],
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "batch_size=64" in result.stderr
