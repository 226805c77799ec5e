"""Data-parallel training: the world from the environment (pure), and real ranks on loopback.

The ranks are real `carbon-trainer` processes joined by gloo over 127.0.0.1, as pods of an
Indexed Job are over the pod network (the pods themselves are the operator's and e2e's part).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from carbontrainer.distributed import DEFAULT_PORT, World, WorldError, world_from
from carbontrainer.report import EXIT_INTERRUPTED, EXIT_USAGE
from trainer_ranks import finish_ranks, start_ranks

# 2,048 samples over 2 ranks at batch 64: 16 steps per rank and epoch.
QUICK = ["--max-samples", "2048", "--eval-samples", "1000", "--batch-size", "64"]


def test_the_rank_comes_from_the_indexed_jobs_completion_index() -> None:
    env = {"JOB_COMPLETION_INDEX": "1", "WORLD_SIZE": "3", "MASTER_ADDR": "train-0.train"}
    assert world_from(None, None, env) == World(rank=1, size=3, master_addr="train-0.train")


def test_torchruns_rank_wins_over_the_index_and_flags_win_over_both() -> None:
    env = {"RANK": "2", "JOB_COMPLETION_INDEX": "1", "WORLD_SIZE": "4", "MASTER_PORT": "23456"}
    assert world_from(None, None, env) == World(rank=2, size=4, master_port=23456)
    assert world_from(2, 0, env) == World(rank=0, size=2, master_port=23456)


def test_no_environment_is_one_rank() -> None:
    world = world_from(None, None, {})
    assert world == World(rank=0, size=1, master_addr="127.0.0.1", master_port=DEFAULT_PORT)
    assert not world.is_distributed and world.is_main


@pytest.mark.parametrize(
    ("workers", "rank", "env", "message"),
    [
        (2, 2, {}, "rank 2 is outside a world of 2"),
        (None, None, {"WORLD_SIZE": "0"}, "at least 1"),
        (None, None, {"JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX='x'"),
        (None, None, {"WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "not a TCP port"),
    ],
)
def test_a_world_that_cannot_work_is_refused(workers, rank, env, message) -> None:
    with pytest.raises(WorldError, match=message):
        world_from(workers, rank, env)


@pytest.mark.slow
def test_two_ranks_stop_together_and_resume_from_rank_0s_checkpoint(
    tmp_path: Path, mnist_dir: Path
) -> None:
    args = [*QUICK, "--data-dir", str(mnist_dir), "--epochs", "2", "--log-every", "1"]
    args += ["--checkpoint-dir", "ck", "--output-dir", "out"]
    ranks = start_ranks(args, tmp_path)
    # SIGTERM to rank 1 only: rank 0 learns of it through the per-step agreement.
    assert ranks[1].stdout is not None
    seen = []
    for line in ranks[1].stdout:
        seen.append(line)
        if line.startswith("epoch 2 step 3/"):
            ranks[1].send_signal(signal.SIGTERM)
            break
    rest, _ = ranks[1].communicate(timeout=600)
    code_1, stopped_1 = ranks[1].returncode, json.loads(rest.strip().splitlines()[-1])
    [(code_0, stopped_0, _)] = finish_ranks(ranks[:1])
    assert (code_0, code_1) == (EXIT_INTERRUPTED, EXIT_INTERRUPTED), "".join(seen) + rest
    assert stopped_0["status"] == stopped_1["status"] == "interrupted"
    assert stopped_0["samples"] == stopped_1["samples"], "the ranks stopped at different steps"
    assert [stopped_0["rank"], stopped_1["rank"]] == [0, 1]
    assert (tmp_path / "ck" / "checkpoint.pt").is_file()
    assert stopped_0["checkpoint_path"] == stopped_1["checkpoint_path"] == "ck/checkpoint.pt"
    # Each rank reports its own energy (the operator adds them up).
    assert stopped_0["energy_kwh"] > 0 and stopped_1["energy_kwh"] > 0

    resumed = finish_ranks(start_ranks(args, tmp_path))
    for code, final, stdout in resumed:
        assert code == 0, stdout
        assert final["resumed"] is True and final["resumed_from"]["epoch"] == 1
        assert final["resumed_from"]["step"] >= 3
        assert final["samples_all_runs"] == 2 * 2048 and final["world_size"] == 2
        assert final["accuracy"] > 0.8
    # Both ranks hold the same model, evaluated on their halves of the test set together.
    assert resumed[0][1]["accuracy"] == resumed[1][1]["accuracy"]
    assert (tmp_path / "out" / "model.pt").is_file()
    assert (tmp_path / "out" / "result.json").is_file()

    # The checkpoint's step means a step of 2 ranks: one rank may not continue it.
    single = subprocess.run(
        [sys.executable, "-m", "carbontrainer", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == EXIT_USAGE
    assert "workers=2" in single.stderr and "Traceback" not in single.stderr


def test_a_rank_outside_the_world_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "carbontrainer", "--workers", "2", "--rank", "5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip() == (
        "carbon-trainer: error: rank 5 is outside a world of 2 (ranks 0..1)"
    )
    assert json.loads(result.stdout.strip().splitlines()[-1])["exit_code"] == EXIT_USAGE
