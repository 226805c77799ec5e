"""``carbonctl run``, ``intensity`` and ``plot`` through the real console script.

Every test starts ``carbonctl`` as a subprocess, as a user would, with real traces from
../shared/data (via the ``traces_dir`` fixture) or the shipped synthetic demo trace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.model import Reading
from carbonaware.plotting import caption_text

CARBONCTL = str(Path(sys.executable).parent / "carbonctl")
PY = sys.executable


def carbonctl(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60):
    return subprocess.run(
        [CARBONCTL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def gb_replay(traces_dir: Path) -> list[str]:
    """Replay GB 2022 from 2022-07-23 03:00 (257 g/kWh, below 150 from 09:00) at 3600×."""
    trace = traces_dir / "electricitymaps" / "GB_2022_hourly.csv"
    return ["--provider", "replay", "--trace", str(trace), "--zone", "GB",
            "--start", "2022-07-23T03:00", "--speed", "3600"]  # fmt: skip


def read_log(path: Path) -> IntensityLog:
    return IntensityLog.from_csv(path.read_text(encoding="utf-8"))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and 20_000 < len(data) < 1_000_000


def test_run_waits_for_a_clean_hour_on_the_gb_trace(traces_dir, tmp_path):
    result = carbonctl(
        "run", *gb_replay(traces_dir), "--poll", "1h", "--threshold", "150",
        "--max-delay", "12h", "--power-watts", "200",
        "--", PY, "-c", "import time; print('training', flush=True); time.sleep(1)",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    waits = [line for line in result.stdout.splitlines() if " wait: " in line]
    assert len(waits) >= 5 and "above threshold 150" in waits[0]
    assert "training" in result.stdout

    log = read_log(tmp_path / "carbon_log.csv")
    meta = log.metadata
    started = datetime.fromisoformat(meta["started_at"])
    submitted = datetime.fromisoformat(meta["submitted_at"])
    assert meta["zone"] == "GB" and meta["status"] == "completed" and meta["exit_code"] == "0"
    before = [r for r in log.readings if r.timestamp <= started]
    waiting = before[:-1]  # the last one is the reading that let it start
    assert len(waiting) >= 5 and all(r.intensity > 150 for r in waiting)
    assert before[-1].intensity <= 150 and before[-1].timestamp.hour == 9
    assert started - submitted >= (before[-1].timestamp - waiting[0].timestamp) * 0.9
    assert meta["energy_method"] == "estimated" and meta["emissions_method"] == "integrated"
    assert float(meta["saved_g"]) == pytest.approx(
        float(meta["baseline_g"]) - float(meta["emissions_g"]), rel=1e-4
    )
    assert float(meta["saved_g"]) > 0  # it waited for a cleaner grid
    assert_png(tmp_path / "carbon_plot.png")


def test_forecast_strategy_plans_ahead_with_the_provider_forecast(traces_dir, tmp_path):
    result = carbonctl(
        "run", *gb_replay(traces_dir), "--poll", "2h", "--strategy", "forecast",
        "--expected-duration", "2h",
        "--max-delay", "8h", "--log", "f.csv", "--plot", "f.png",
        "--", PY, "-c", "pass",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = next(line for line in result.stdout.splitlines() if " wait: " in line)
    assert "cleanest window starts 2022-07-23 11:00 UTC" in first and "provider forecast" in first
    started = datetime.fromisoformat(read_log(tmp_path / "f.csv").metadata["started_at"])
    assert started.hour == 11
    assert_png(tmp_path / "f.png")


def test_measured_energy_from_the_trainer_json_line_and_its_exit_code(tmp_path):
    line = (
        '{"energy_kwh": 0.004, "energy_method": "measured:nvml-energy-counter", "accuracy": 0.97}'
    )
    result = carbonctl(
        "run", "--provider", "static", "--value", "200", "--zone", "DE", "--pue", "1.5",
        "--", PY, "-c", f"print('epoch 1'); print({line!r}); raise SystemExit(3)",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    meta = read_log(tmp_path / "carbon_log.csv").metadata
    assert meta["energy_method"] == "measured:nvml-energy-counter"
    assert float(meta["energy_kwh"]) == pytest.approx(0.006)
    assert float(meta["emissions_g"]) == pytest.approx(0.006 * 200)
    assert meta["accuracy"] == "0.97" and meta["exit_code"] == "3"


def wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(
    ("sig", "child_code", "grace"),
    [
        (signal.SIGINT, "time.sleep(120)", "10s"),
        (signal.SIGTERM, "time.sleep(120)", "10s"),
        # a child that ignores SIGTERM is killed after the grace period
        (
            signal.SIGINT,
            "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
            "1s",
        ),
    ],
)
def test_interrupt_while_running_stops_the_child_and_writes_log_and_plot(
    tmp_path, sig, child_code, grace
):
    pidfile = tmp_path / "child.pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); {child_code}"
    process = subprocess.Popen(
        [CARBONCTL, "run", "--provider", "static", "--value", "100", "--zone", "DE",
         "--grace", grace, "--", PY, "-c", code],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(pidfile)
    time.sleep(0.3)
    child = int(pidfile.read_text())
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert gone(child)
    meta = read_log(tmp_path / "carbon_log.csv").metadata
    assert meta["status"] == "interrupted" and "emissions_g" in meta
    assert_png(tmp_path / "carbon_plot.png")
    assert "Traceback" not in err


def test_interrupt_while_waiting_writes_log_and_plot(tmp_path):
    process = subprocess.Popen(
        [CARBONCTL, "run", "--provider", "static", "--value", "500", "--zone", "DE",
         "--threshold", "100", "--poll", "1s", "--", PY, "-c", "pass"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:  # wait until it is visibly waiting
        if " wait: " in line:
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    log = read_log(tmp_path / "carbon_log.csv")
    assert log.metadata["status"] == "interrupted" and "started_at" not in log.metadata
    assert log.readings[0].intensity == 500
    assert "interrupted before the job started" in caption_text(log.metadata)
    assert_png(tmp_path / "carbon_plot.png")


def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path):
    # the shipped demo trace holds zone SYNTHETIC only: no shared data needed here
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text("what,ever\n1,2\n")
    cases = {
        "unknown provider": (["run", "--provider", "nope", "--zone", "GB"], "unknown provider"),
        "zone rejected": (["intensity", "--zone", "DE"], "zone 'DE'"),
        "zone unknown to ukci": (["intensity", "--provider", "ukci", "--zone", "DE"], "DE"),
        "missing token": (
            ["intensity", "--provider", "electricitymaps", "--zone", "DE"],
            "ELECTRICITYMAPS_TOKEN",
        ),
        "negative threshold": (["run", "--threshold", "-5"], "--threshold"),
        "unparsable duration": (["run", "--max-delay", "soon"], "invalid duration"),
        "missing trace": (["run", "--trace", str(tmp_path / "none.csv")], "none.csv"),
        "unreadable trace": (["intensity", "--trace", str(bad_trace)], "unknown format"),
        "bad strategy": (["run", "--strategy", "later"], "later"),
        "bad log for plot": (["plot", "--log", str(bad_trace)], "not valid"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELECTRICITYMAPS")}
    running = {
        name: subprocess.Popen(
            [CARBONCTL, *args],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, (args, _) in cases.items()
    }
    for name, process in running.items():
        _, err = process.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert process.returncode == 2, f"{name}: exit {process.returncode}, {err}"
        assert len(lines) == 1 and lines[0].startswith("carbonctl: error:"), f"{name}: {err}"
        assert cases[name][1] in lines[0], f"{name}: {lines[0]}"
    assert not (tmp_path / "carbon_log.csv").exists()


def test_intensity_prints_latest_reading_and_forecast_length(traces_dir, tmp_path):
    result = carbonctl("intensity", *gb_replay(traces_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "GB: 256.8 gCO2eq/kWh at 2022-07-23 03:00 UTC (direct factors, actual, provider replay)",
        "forecast: 48 readings, up to 2d ahead",
    ]


def test_default_workload_is_a_plainly_labelled_stand_in_without_data(tmp_path):
    result = carbonctl(
        "run", "--provider", "static", "--value", "80", "--zone", "DE",
        cwd=tmp_path, env={"MNIST_DIR": str(tmp_path / "no-mnist")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "workload: STAND-IN" in result.stdout and "stand-in workload" in result.stdout


def test_default_workload_never_reads_the_repositorys_test_data(tmp_path, mnist_dir):
    """``<cwd>/../shared/data/mnist`` is where this repository's tests keep MNIST: a user's
    carbonctl must not look there; it reads MNIST_DIR or the documented data folder."""
    work = tmp_path / "project"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "mnist").symlink_to(mnist_dir)
    work.mkdir()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("MNIST_DIR", "XDG_CACHE_HOME")}
    result = subprocess.run(
        [CARBONCTL, "run", "--provider", "static", "--value", "80", "--zone", "DE"],
        cwd=work, env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    default = home / ".cache" / "carbonaware" / "mnist"
    assert f"workload: STAND-IN (no MNIST data in {default}: set MNIST_DIR" in result.stdout


def test_plot_command_renders_a_log(tmp_path):
    log = IntensityLog({"zone": "DE", "threshold": 300, "submitted_at": "2024-03-04T00:00:00Z"})
    log.extend(Reading("DE", datetime(2024, 3, 4, h, tzinfo=UTC), 300 - 10 * h) for h in range(8))
    (tmp_path / "log.csv").write_text(log.to_csv())
    result = carbonctl("plot", "--log", "log.csv", "-o", "again.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_png(tmp_path / "again.png")
