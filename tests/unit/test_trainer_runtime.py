"""Where the trainer runs: CPU count under cgroup quotas (what a Kubernetes pod's `limits.cpu`
becomes) and the allocator setting of CPU training. Precision: test_trainer_precision.py."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from carbontrainer.runtime import cgroup_cpu_limit, usable_cpus

# The cgroup files are written under tmp_path: this machine's own cgroup has no CPU quota, so
# the quota a pod would get cannot be read for real here.


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota_caps_threads_at_one(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    assert usable_cpus(tmp_path) == 1


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


FAULTS_PER_STEP = """
import resource, sys, torch, torch.nn.functional as F
from carbontrainer.model import MnistNet
from carbontrainer.runtime import keep_freed_buffers
if sys.argv[1] == "tuned":
    assert keep_freed_buffers()
torch.set_num_threads(1)
model = MnistNet()
optimizer = torch.optim.Adadelta(model.parameters())
images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
def step():
    optimizer.zero_grad()
    F.nll_loss(model(images), labels).backward()
    optimizer.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt")
def test_training_steps_reuse_their_buffers_instead_of_faulting_them_in() -> None:
    # Each variant in its own process: the allocator setting is process-wide and sticky.
    def faults(mode: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", FAULTS_PER_STEP, mode],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.strip().splitlines()[-1])

    default, tuned = faults("default"), faults("tuned")
    # Measured here: ~5,500 minor page faults per step by default, ~30 tuned.
    assert tuned < default / 10, (default, tuned)
