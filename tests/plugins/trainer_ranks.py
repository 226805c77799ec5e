"""Real `carbon-trainer` ranks on loopback: N processes joined by gloo over 127.0.0.1, as the
pods of an Indexed Job are over the pod network (JOB_COMPLETION_INDEX is what Kubernetes
sets). Their final lines are the reports the operator adds up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ranks(args: list[str], cwd: Path, workers: int = 2) -> list[subprocess.Popen]:
    port = str(_free_port())
    ranks = []
    for rank in range(workers):
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "WORLD_SIZE": str(workers),
            "JOB_COMPLETION_INDEX": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-m", "carbontrainer", *args, "--threads", "1"],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return ranks


def finish_ranks(ranks: list[subprocess.Popen]) -> list[tuple[int, dict, str]]:
    """(exit code, final JSON line, stdout) of each rank."""
    results = []
    for process in ranks:
        stdout, stderr = process.communicate(timeout=600)
        assert stdout.strip(), stderr
        results.append((process.returncode, json.loads(stdout.strip().splitlines()[-1]), stdout))
    return results
