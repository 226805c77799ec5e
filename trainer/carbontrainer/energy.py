"""Energy this training used: measured where the machine allows, else an honest estimate.

- CPU, measured: Intel/AMD RAPL package counters in /sys/class/powercap (`energy_uj`, which
  wraps at `max_energy_range_uj`). RAPL counts the whole socket: every process on it, not just
  this one, so on a shared node it over-counts; the method string says `rapl-package`.
- GPU, measured: NVML (nvidia-ml-py) total-energy counter where the GPU has one (Volta and
  later), else board power sampled in the background thread and integrated (trapezoids).
- CPU, estimated (VMs and containers, where RAPL is absent or unreadable): this process's CPU
  time (user + system, all threads) × watts per busy core (`--watts-per-core`, env
  CARBON_TRAINER_WATTS_PER_CORE, default 10 W). See trainer/README.md for how this compares
  with CodeCarbon's method.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POWERCAP_ROOT = Path("/sys/class/powercap")
DEFAULT_WATTS_PER_CORE = 10.0
JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class EnergyPart:
    """Energy of one component (CPU or GPU) with how it was obtained."""

    component: str  # "cpu" | "gpu"
    joules: float
    measured: bool
    method: str  # e.g. "rapl-package", "nvml-energy-counter", "cpu-time×10W/core"


@dataclass(frozen=True)
class EnergyReport:
    parts: tuple[EnergyPart, ...]
    notes: tuple[str, ...] = ()

    @property
    def joules(self) -> float:
        return sum(part.joules for part in self.parts)

    @property
    def kwh(self) -> float:
        return self.joules / JOULES_PER_KWH

    @property
    def measured(self) -> bool:
        """True only when every part was measured (nothing estimated)."""
        return all(part.measured for part in self.parts)

    @property
    def method(self) -> str:
        """E.g. `measured:rapl-package`, `estimated:cpu-time×10W/core`, or both joined by +."""
        return "+".join(
            f"{'measured' if part.measured else 'estimated'}:{part.method}" for part in self.parts
        )


def wrapped_delta(previous: int, current: int, max_range: int) -> int:
    """Counter increase between two reads of a counter that wraps at `max_range`."""
    return current - previous if current >= previous else current + max_range - previous


def estimate_cpu_joules(cpu_seconds: float, watts_per_core: float) -> float:
    return cpu_seconds * watts_per_core


def process_cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads (not of children)."""
    times = os.times()
    return times.user + times.system


def watts_per_core_from_env(default: float = DEFAULT_WATTS_PER_CORE) -> float:
    value = os.environ.get("CARBON_TRAINER_WATTS_PER_CORE")
    return float(value) if value else default


@dataclass
class _RaplZone:
    energy_file: Path
    max_range: int
    last: int
    total_uj: int = 0

    def sample(self) -> None:
        current = int(self.energy_file.read_text())
        self.total_uj += wrapped_delta(self.last, current, self.max_range)
        self.last = current


def rapl_package_zones(root: Path = POWERCAP_ROOT) -> list[_RaplZone]:
    """Readable top-level package zones (not their core/uncore/dram sub-zones: no double count)."""
    zones = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue
        try:
            if not (zone / "name").read_text().strip().startswith("package"):
                continue
            zones.append(
                _RaplZone(
                    energy_file=zone / "energy_uj",
                    max_range=int((zone / "max_energy_range_uj").read_text()),
                    last=int((zone / "energy_uj").read_text()),
                )
            )
        except (OSError, ValueError):  # unreadable without root since the 2020 RAPL advisory
            continue
    return zones


class _NvmlGpu:
    """One GPU's energy through NVML: the total-energy counter, else power × time."""

    def __init__(self, pynvml, handle) -> None:
        self._nvml = pynvml
        self._handle = handle
        try:
            self._start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.method = "nvml-energy-counter"
        except pynvml.NVMLError:
            self._start_mj = None
            self.method = "nvml-power-sampling"
        self._joules = 0.0
        self._last_time = time.monotonic()
        self._last_watts = self._power_watts()

    def _power_watts(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0

    def sample(self) -> None:
        if self._start_mj is not None:
            return
        now, watts = time.monotonic(), self._power_watts()
        self._joules += (now - self._last_time) * (watts + self._last_watts) / 2
        self._last_time, self._last_watts = now, watts

    def joules(self) -> float:
        if self._start_mj is None:
            return self._joules
        return (self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._start_mj) / 1e3


def _open_nvml_gpu(cuda_index: int) -> tuple[_NvmlGpu | None, str | None]:
    try:
        import pynvml
    except ImportError:
        return None, "GPU energy not measured: nvidia-ml-py (pynvml) is not installed"
    try:
        import torch

        pynvml.nvmlInit()
        uuid = getattr(torch.cuda.get_device_properties(cuda_index), "uuid", None)
        if uuid is not None:
            handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        else:  # torch 1.13: assume NVML and CUDA enumerate alike
            handle = pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
        return _NvmlGpu(pynvml, handle), None
    except Exception as error:  # pynvml.NVMLError and lookup failures
        return None, f"GPU energy not measured: NVML unavailable ({error})"


@dataclass
class EnergyMonitor:
    """Samples the counters in a background thread between `start()` and `stop()`."""

    cuda_index: int | None = None
    watts_per_core: float = DEFAULT_WATTS_PER_CORE
    interval_s: float = 1.0
    powercap_root: Path = POWERCAP_ROOT
    _zones: list[_RaplZone] = field(default_factory=list)
    _gpu: _NvmlGpu | None = None
    _notes: list[str] = field(default_factory=list)
    _cpu_start: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> EnergyMonitor:
        self._zones = rapl_package_zones(self.powercap_root)
        if self._zones:
            self._notes.append("RAPL counts the whole CPU package, other processes included")
        if self.cuda_index is not None:
            self._gpu, note = _open_nvml_gpu(self.cuda_index)
            if note:
                self._notes.append(note)
        self._cpu_start = process_cpu_seconds()
        self._thread = threading.Thread(target=self._run, name="energy-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        for zone in self._zones:
            zone.sample()
        if self._gpu is not None:
            self._gpu.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except (OSError, ValueError):
                pass  # one lost sample; RAPL deltas stay exact, power sampling loses a slice
            except Exception:  # NVML errors: keep the thread alive
                pass

    def report(self) -> EnergyReport:
        """Energy since start (callable repeatedly; the last call after `stop()` is final)."""
        with contextlib.suppress(Exception):
            self._sample()
        parts = []
        if self._zones:
            joules = sum(zone.total_uj for zone in self._zones) / 1e6
            parts.append(EnergyPart("cpu", joules, True, "rapl-package"))
        else:
            cpu_seconds = process_cpu_seconds() - self._cpu_start
            parts.append(
                EnergyPart(
                    "cpu",
                    estimate_cpu_joules(cpu_seconds, self.watts_per_core),
                    False,
                    f"cpu-time×{self.watts_per_core:g}W/core",
                )
            )
        if self._gpu is not None:
            parts.append(EnergyPart("gpu", self._gpu.joules(), True, self._gpu.method))
        return EnergyReport(tuple(parts), tuple(self._notes))

    def stop(self) -> EnergyReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.report()
