"""Where the trainer runs: usable CPUs (cgroup-aware), thread settings, device, allocator.

Precision (fp32 or bf16) is chosen in precision.py."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from pathlib import Path

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 `cpu.max` or v1 CFS files), None if unlimited.

    A Kubernetes pod with `limits.cpu: 2` on a 64-core node sees 64 CPUs in os.cpu_count() but
    gets 2 CPUs' worth of time: more threads than that only thrash.
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def configure_threads(threads: int | None) -> int:
    """Intra-op threads = usable CPUs (or --threads); one inter-op thread (a single model)."""
    count = threads or usable_cpus()
    torch.set_num_threads(count)
    # Only settable before the first parallel work in the process.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    # Subnormal floats (tiny gradients, optimiser averages) are very slow on x86.
    torch.set_flush_denormal(True)
    return count


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit
_TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_buffers() -> bool:
    """Make glibc reuse freed activation buffers instead of unmapping them; False if not glibc.

    glibc serves blocks above its mmap threshold (128 KiB at first, raised only as larger
    blocks are freed) with a fresh mmap and unmaps them on free, so a CPU training step
    page-faults most of its activations and gradients in again every step: 20-30 % of a
    step's time on the benchmark machine (docs/benchmarks.md). A fixed 32 MiB threshold and a
    1 GiB trim threshold keep those pages in the heap for the next step. Peak memory is about
    the same (the same buffers are live at the peak); freed memory is kept, not returned.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: their allocators differ
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )


class DeviceError(Exception):
    """The asked-for device is not available."""


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def make_grad_scaler(enabled: bool):
    """torch.amp.GradScaler (2.3+) or torch.cuda.amp.GradScaler (1.13)."""
    scaler_class = getattr(torch.amp, "GradScaler", None)
    if scaler_class is not None:
        return scaler_class("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)
