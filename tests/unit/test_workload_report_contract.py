"""The trainer's final report, from both sides: what ``carbon-trainer`` really prints, read by
each of its consumers (the operator's status, ``carbonctl run``'s log and summary, the plot).

The line comes from a real trainer run on a real MNIST subset; its energy fields from the
trainer's own energy classes for every method it can emit. RAPL and NVML hardware do not
exist on this VM: the RAPL part comes from a powercap tree with the kernel's file layout
(EnergyMonitor reads it as it reads sysfs), the NVML part is an ``EnergyPart`` with the
method names ``_NvmlGpu`` sets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from carbonaware.core import accounting
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.workload_report import is_measured, last_report, parse_report
from carbonaware.kube import job_results
from carbonaware.plotting import caption_text
from carbontrainer.energy import EnergyMonitor, EnergyPart, EnergyReport
from carbontrainer.report import to_json_line

CARBONCTL = str(Path(sys.executable).parent / "carbonctl")
KWH = 0.002


def _rapl_part(root: Path) -> EnergyPart:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    monitor = EnergyMonitor(powercap_root=root, interval_s=3600).start()
    (zone / "energy_uj").write_text("8200000\n")  # +7.2 J
    return monitor.stop().parts[0]


def _cpu_estimate_part(root: Path) -> EnergyPart:
    root.mkdir(parents=True)
    return EnergyMonitor(powercap_root=root, watts_per_core=10.0).start().stop().parts[0]


def _gpu(method: str) -> EnergyPart:
    return EnergyPart("gpu", 3600.0, True, method)


METHODS = {
    "rapl": lambda root: (_rapl_part(root),),
    "cpu-time-estimate": lambda root: (_cpu_estimate_part(root),),
    "rapl+nvml": lambda root: (_rapl_part(root), _gpu("nvml-energy-counter")),
    "estimate+nvml (mixed)": lambda root: (_cpu_estimate_part(root), _gpu("nvml-energy-counter")),
    "rapl+nvml-sampled": lambda root: (_rapl_part(root), _gpu("nvml-power-sampling")),
}
LABELS = {
    "rapl": "measured:rapl-package",
    "cpu-time-estimate": "estimated:cpu-time×10W/core",
    "rapl+nvml": "measured:rapl-package+measured:nvml-energy-counter",
    "estimate+nvml (mixed)": "estimated:cpu-time×10W/core+measured:nvml-energy-counter",
    "rapl+nvml-sampled": "measured:rapl-package+measured:nvml-power-sampling",
}


@pytest.fixture(scope="module")
def trainer_line(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The final line of one real, small trainer run."""
    work = tmp_path_factory.mktemp("trainer")
    result = subprocess.run(
        [sys.executable, "-m", "carbontrainer", "--data-dir", str(mnist_dir), "--epochs", "1",
         "--max-samples", "128", "--eval-samples", "128", "--batch-size", "64",
         "--checkpoint-dir", "ck", "--output-dir", "out", "--log-every", "0"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(params=sorted(METHODS))
def emitted(request, trainer_line: dict, tmp_path: Path) -> tuple[str, str]:
    """(method's expected label, the final line as the trainer writes it with that energy)."""
    energy = EnergyReport(METHODS[request.param](tmp_path / "powercap"))
    line = to_json_line(
        trainer_line
        | {
            "energy_kwh": KWH,  # a round figure: the label, not the value, is under test
            "energy_method": energy.method,
            "energy_measured": energy.measured,
        }
    )
    return LABELS[request.param], line


def test_the_operator_keeps_the_trainers_label_in_status(emitted) -> None:
    label, line = emitted
    pods = [{"status": {"containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"finishedAt": "2026-01-01T10:00:00Z",
                                                     "message": line}}}]}}]  # fmt: skip
    report = job_results.parse_trainer_result(job_results.termination_message(pods))
    assert report is not None and report.energy_label == label
    energy = accounting.job_energy(report, power_watts=60, pue=1.2, ran=timedelta(minutes=5))
    assert energy.method == label and energy.kwh == pytest.approx(KWH * 1.2)
    assert energy.measured == (label.count("measured:") == label.count("+") + 1)
    trainer_status = job_results.build_trainer_status(report)
    assert trainer_status["energyMethod"] == label and trainer_status["energyKWh"] == KWH
    assert trainer_status["durationSeconds"] == report.wall_seconds > 0


def test_carbonctl_run_and_the_plot_show_the_trainers_label(emitted, tmp_path: Path) -> None:
    label, line = emitted
    result = subprocess.run(
        [CARBONCTL, "run", "--provider", "static", "--value", "200", "--zone", "DE",
         "--pue", "1.5", "--", sys.executable, "-c", f"print({line!r})"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"({label})" in result.stdout  # the summary line
    meta = IntensityLog.from_csv((tmp_path / "carbon_log.csv").read_text()).metadata
    assert meta["energy_method"] == label
    assert float(meta["energy_kwh"]) == pytest.approx(KWH * 1.5)
    kind = "measured" if is_measured(label) else "estimated"
    assert meta["energy_detail"].startswith(f"{kind} by the command ({label})")
    assert f"({label})" in caption_text(meta).splitlines()[0]


def test_a_figure_without_a_label_is_not_called_measured() -> None:
    report = last_report(["epoch 1", '{"energy_kwh": 0.004, "accuracy": 0.9}'])
    assert report is not None and report.energy_label == "unlabelled"
    assert not report.energy_measured
    energy = accounting.job_energy(report, power_watts=60, pue=1.0, ran=timedelta(hours=1))
    assert energy.method == "unlabelled" and not energy.measured and energy.kwh == 0.004


def test_bad_fields_are_dropped_not_guessed() -> None:
    report = parse_report('{"energy_kwh": -1, "wall_seconds": "3", "accuracy": 0.5}')
    assert report is not None and report.energy_kwh is None and report.wall_seconds is None
    assert report.energy_label is None and report.accuracy == 0.5
    assert parse_report("Traceback (most recent call last):") is None
    assert parse_report("[1, 2]") is None
