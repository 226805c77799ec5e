"""Energy: RAPL counters (with wraparound), the CPU-time estimate, and the method labels."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from carbontrainer.energy import EnergyMonitor, process_cpu_seconds, wrapped_delta

# No RAPL is readable on this VM, so a powercap tree with the kernel's file layout is written
# under tmp_path and its counters advanced by hand: the real sysfs cannot exist here.


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int) -> Path:
    zone = root / name
    zone.mkdir()
    (zone / "name").write_text(f"{label}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_wrapped_delta() -> None:
    assert wrapped_delta(100, 250, 1000) == 150
    assert wrapped_delta(900, 50, 1000) == 150


def test_rapl_packages_measured_across_wraparound(tmp_path: Path) -> None:
    package0 = _zone(tmp_path, "intel-rapl:0", "package-0", 990_000_000, 1_000_000_000)
    package1 = _zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000, 1_000_000_000)
    # A sub-zone (core) is part of its package: counting it too would double count.
    _zone(package0, "intel-rapl:0:0", "core", 0, 1_000_000_000)
    (tmp_path / "intel-rapl:0:0").symlink_to(package0 / "intel-rapl:0:0")
    monitor = EnergyMonitor(powercap_root=tmp_path, interval_s=3600).start()
    (package0 / "energy_uj").write_text("10000000\n")  # wrapped: +20 J
    (package1 / "energy_uj").write_text("35000000\n")  # +30 J
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("999000000\n")
    report = monitor.stop()
    assert report.joules == pytest.approx(50.0)
    assert report.kwh == pytest.approx(50.0 / 3.6e6)
    assert report.measured
    assert report.method == "measured:rapl-package"
    assert any("whole CPU package" in note for note in report.notes)


def test_unreadable_rapl_falls_back_to_the_labelled_estimate(tmp_path: Path) -> None:
    zone = _zone(tmp_path, "intel-rapl:0", "package-0", 0, 1000)
    (zone / "energy_uj").unlink()  # as when the counter is root-only
    monitor = EnergyMonitor(powercap_root=tmp_path, watts_per_core=20.0).start()
    cpu_before = process_cpu_seconds()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    burnt = process_cpu_seconds() - cpu_before
    report = monitor.stop()
    assert not report.measured
    assert report.method == "estimated:cpu-time×20W/core"
    # ≥ the CPU time we burnt × 20 W, and not wildly more (the sampler thread is idle).
    assert 20.0 * burnt <= report.joules <= 20.0 * (burnt + 0.3)
