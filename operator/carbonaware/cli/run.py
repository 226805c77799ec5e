"""``carbonctl run``: wait for a cleaner grid under a policy, run a command, account for it.

The imperative shell around the pure core: it polls the provider (one progress line per
poll), asks :func:`carbonaware.core.policy.decide` whether to start, runs the command as a
child process while it keeps logging readings, then computes the carbon report and writes the
CSV log and ``carbon_plot.png`` — also on Ctrl+C / SIGTERM (exit 130; the child gets SIGTERM,
then SIGKILL after ``--grace``).

Time: every timestamp is on the provider's clock. With ``--provider replay --speed S`` that
clock runs S times faster than wall time, so sleeps between polls are the poll interval
divided by S. Energy is what the process really used (its wall-clock run time, or the
trainer's measurement), spread over the trace interval the run occupied.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import click

from carbonaware.cli.numbers import Bounded
from carbonaware.cli.plot import plot_from_log
from carbonaware.cli.provider_options import Source, build_source, provider_options
from carbonaware.core.accounting import CarbonReport, account, job_energy, report_metadata
from carbonaware.core.durations import format_duration, parse_duration
from carbonaware.core.forecast import FORECASTER_HISTORY
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.log_metadata import LogKey
from carbonaware.core.model import Reading
from carbonaware.core.policy import Decision, PolicySettings, Strategy, decide
from carbonaware.core.workload_report import last_report
from carbonaware.providers.base import NoForecastError, ProviderError
from carbonaware.providers.history import SeedHistory, seed_history

EXIT_INTERRUPTED = 130
STAND_IN_SECONDS = 3


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop the child, write the log and plot, exit 130.

    The handlers only note the signal; the waits act on it, so a signal never lands halfway
    through updating the log, and a second Ctrl+C cannot cut the cleanup short."""


@dataclass
class Workload:
    argv: list[str]
    description: str


@dataclass
class RunState:
    """What happened so far; everything the log, plot and summary are made of."""

    log: IntensityLog
    submitted_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    wall_seconds: float = 0.0
    child_output: list[str] = field(default_factory=list)
    returncode: int | None = None


@click.command(context_settings={"ignore_unknown_options": True})
@provider_options
@click.option(
    "--threshold",
    type=Bounded(0, 10_000),
    default=300.0,
    show_default=True,
    help="threshold strategy: start at the first reading at or below this gCO2eq/kWh.",
)
@click.option(
    "--max-delay",
    default="6h",
    show_default=True,
    help="Never delay the start longer than this (the deadline): 90s, 30m, 6h, 1h30m, 2d.",
)
@click.option(
    "--strategy",
    type=click.Choice([s.value for s in Strategy]),
    default=Strategy.THRESHOLD.value,
    show_default=True,
    help="threshold: first clean-enough reading; forecast: cleanest window before the deadline.",
)
@click.option(
    "--expected-duration",
    default="30m",
    show_default=True,
    help="How long the command runs: the forecast strategy picks the cleanest window this long.",
)
@click.option(
    "--poll", default="1m", show_default=True, help="Poll interval, in the provider's time."
)
@click.option(
    "--power-watts",
    type=Bounded(0, 1_000_000),
    default=150.0,
    show_default=True,
    help="Assumed average power (W), used when the command reports no energy (a last stdout "
    "line of JSON with energy_kwh, as the MNIST trainer prints).",
)
@click.option(
    "--pue",
    type=Bounded(1, 3),
    default=1.0,
    show_default=True,
    help="Power usage effectiveness; multiplies measured and estimated (IT) energy alike.",
)
@click.option("--log", "log_path", default="carbon_log.csv", show_default=True, help="CSV log.")
@click.option("--plot", "plot_path", default="carbon_plot.png", show_default=True, help="PNG.")
@click.option(
    "--grace",
    default="10s",
    show_default=True,
    help="On Ctrl+C the command gets SIGTERM, then SIGKILL after this long.",
)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def command(
    provider_args: dict,
    threshold: float,
    max_delay: str,
    strategy: str,
    expected_duration: str,
    poll: str,
    power_watts: float,
    pue: float,
    log_path: str,
    plot_path: str,
    grace: str,
    cmd: Sequence[str],
) -> None:
    """Wait for a cleaner grid, then run CMD (default: the MNIST trainer) and account for it."""
    settings = PolicySettings(
        Strategy(strategy), threshold, parse_duration(max_delay), parse_duration(expected_duration)
    )
    poll_every = parse_duration(poll)
    grace_period = parse_duration(grace)
    if poll_every <= timedelta(0):
        raise click.BadParameter("must be > 0", param_hint="--poll")
    if settings.expected_duration <= timedelta(0):
        raise click.BadParameter("must be > 0", param_hint="--expected-duration")
    source = build_source(provider_args)
    workload = _workload(list(cmd))

    first = source.provider.latest(source.zone)  # bad zone / token: exit 2 before anything
    state = RunState(_new_log(source, settings), submitted_at=source.now())
    state.log.update(
        {
            LogKey.SUBMITTED_AT: state.submitted_at,
            LogKey.DEADLINE: state.submitted_at + settings.max_delay,
        }
    )
    state.log.append(first)
    seed = _history(source)
    history = list(seed.readings)
    click.echo(
        f"carbonctl run: zone {source.zone} via {source.provider.name}; {settings.strategy} "
        f"strategy, threshold {threshold:g} g/kWh, "
        f"deadline in {format_duration(settings.max_delay)}"
        + (f"; replay at {source.speed:g}× real time" if source.speed != 1 else "")
    )
    if settings.strategy == Strategy.FORECAST:
        click.echo(f"forecaster history: {seed.label}")
    click.echo(f"workload: {workload.description}")

    interrupted = False
    child: subprocess.Popen | None = None
    previous = _install_signal_handlers()
    try:
        _wait_for_start(source, settings, state, history, poll_every, first)
        child = _start(workload, state, source)
        _watch(child, source, state, poll_every)
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
        click.echo("interrupted: stopping" + (" the command" if child else ""), err=True)
        if child is not None:
            _stop(child, grace_period.total_seconds())
            state.returncode = child.returncode
            state.completed_at = source.now()
    report = _finish(state, source, settings, power_watts, pue, interrupted, log_path, plot_path)
    _summary(state, report, log_path, plot_path, interrupted)
    _restore_signal_handlers(previous)
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    code = state.returncode or 0
    sys.exit(128 - code if code < 0 else code)


# -- phases ---------------------------------------------------------------------------------


def _wait_for_start(
    source: Source,
    settings: PolicySettings,
    state: RunState,
    history: list[Reading],
    poll_every: timedelta,
    first: Reading,
) -> Decision:
    reading: Reading | None = first
    while True:
        now = source.now()
        forecast = _forecast(source, settings)
        state.log.set_forecast(forecast)
        decision = decide(settings, state.submitted_at, now, history + state.log.readings, forecast)
        _progress(now, reading, decision.action, decision.reason)
        state.log.update({LogKey.STATUS: "waiting" if not decision.run else "running",
                          LogKey.DECISION: decision.reason, LogKey.UPDATED_AT: now,
                          LogKey.PLANNED_START: decision.planned_start})  # fmt: skip
        if decision.run:
            return decision
        until = min(now + poll_every, decision.deadline)
        if decision.planned_start is not None:
            until = min(until, decision.planned_start)
        _sleep(until - now, source)
        reading = _poll(source, state)


def _start(workload: Workload, state: RunState, source: Source) -> subprocess.Popen:
    state.started_at = source.now()
    state.log.set(LogKey.STARTED_AT, state.started_at)
    click.echo(f"starting at {state.started_at:%Y-%m-%d %H:%M} UTC: {' '.join(workload.argv)}")
    child = subprocess.Popen(
        workload.argv,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: we stop it (and its children) cleanly
    )
    state.wall_seconds = -time.monotonic()
    reader = threading.Thread(target=_relay_output, args=(child, state), daemon=True)
    reader.start()
    child._carbon_reader = reader  # type: ignore[attr-defined]
    return child


def _watch(child: subprocess.Popen, source: Source, state: RunState, poll_every: timedelta):
    wall_poll = poll_every.total_seconds() / source.speed
    while not _wait_wall(wall_poll, until_exited=child):
        reading = _poll(source, state)
        _progress(source.now(), reading, "running", "command running")
    state.completed_at = source.now()
    state.wall_seconds += time.monotonic()
    state.returncode = child.returncode
    child._carbon_reader.join(timeout=5)  # type: ignore[attr-defined]
    _poll(source, state)  # the reading in force at the end


def _finish(
    state: RunState,
    source: Source,
    settings: PolicySettings,
    power_watts: float,
    pue: float,
    interrupted: bool,
    log_path: str,
    plot_path: str,
) -> CarbonReport | None:
    log = state.log
    log.set(LogKey.UPDATED_AT, source.now())
    report = None
    if state.started_at is not None:
        if state.completed_at is None:
            state.completed_at = source.now()
        if state.wall_seconds < 0:  # interrupted while running
            state.wall_seconds += time.monotonic()
        log.set(LogKey.COMPLETED_AT, state.completed_at)
        log.set(LogKey.PLANNED_START, None)
        log.set_forecast([])  # it served the start decision; the plot shows what happened
        result = last_report(state.child_output)
        energy = job_energy(
            result, power_watts, pue, timedelta(seconds=max(state.wall_seconds, 0)),
            measured_by="the command",
        )  # fmt: skip
        report = account(
            energy, [(state.started_at, state.completed_at)], state.submitted_at, log.readings
        )
        log.update(report_metadata(report))
        if result is not None and result.accuracy is not None:
            log.set(LogKey.ACCURACY, result.accuracy)
        log.set(LogKey.EXIT_CODE, state.returncode)
    log.set(LogKey.STATUS, "interrupted" if interrupted else "completed")
    Path(log_path).write_text(log.to_csv(), encoding="utf-8")
    plot_from_log(log, plot_path)
    return report


def _summary(state, report, log_path, plot_path, interrupted) -> None:
    if report is None:
        click.echo("the command never started: no energy or emissions to report")
    else:
        saved = report.saved_grams
        percent = f" ({report.saved_percent:.0f} %)" if report.saved_percent is not None else ""
        click.echo(
            f"energy {report.energy.kwh * 1000:.3g} Wh ({report.energy.method}); "
            f"emissions {report.emissions.grams:.3g} gCO2eq ({report.emissions.method}, "
            f"{report.basis}); if started at submission {report.baseline.grams:.3g} g; "
            f"{'saved' if saved >= 0 else 'extra'} {abs(saved):.3g} g{percent} "
            f"[{report.savings_method}]"
        )
    click.echo(f"log: {Path(log_path).resolve()}")
    click.echo(f"plot: {Path(plot_path).resolve()}")
    if interrupted:
        click.echo("interrupted: log and plot written", err=True)


# -- helpers --------------------------------------------------------------------------------


def _new_log(source: Source, settings: PolicySettings) -> IntensityLog:
    return IntensityLog(
        {
            LogKey.ZONE: source.zone,
            LogKey.PROVIDER: source.provider.name,
            LogKey.STRATEGY: settings.strategy.value,
            LogKey.THRESHOLD: f"{settings.threshold_g_per_kwh:g}",
            LogKey.MAX_DELAY: format_duration(settings.max_delay),
            LogKey.EXPECTED_DURATION: format_duration(settings.expected_duration),
        }
    )


def _history(source: Source) -> SeedHistory:
    """The two weeks before submission to seed our own forecaster, or as much of them as
    the plan gives (the last 24 h, else none: providers/history.py)."""
    return seed_history(
        lambda span: source.provider.history(source.zone, span),
        FORECASTER_HISTORY,
        source.provider.name,
    )


def _forecast(source: Source, settings: PolicySettings) -> list[Reading]:
    if settings.strategy != Strategy.FORECAST:
        return []
    try:
        return source.provider.forecast(source.zone)
    except NoForecastError:
        return []
    except ProviderError as exc:
        click.echo(f"forecast unavailable: {exc}", err=True)
        return []


def _poll(source: Source, state: RunState) -> Reading | None:
    """Log the latest reading; a failing provider mid-run is reported, not fatal."""
    try:
        reading = source.provider.latest(source.zone)
    except ProviderError as exc:
        click.echo(f"reading unavailable: {exc}", err=True)
        return None
    state.log.append(reading)
    return reading


def _progress(now: datetime, reading: Reading | None, action: str, reason: str) -> None:
    value = f"{reading.intensity:6.1f} g/kWh" if reading else "   ? g/kWh"
    click.echo(f"[{now:%Y-%m-%d %H:%M} UTC] {value}  {action}: {reason}")


def _sleep(delta: timedelta, source: Source) -> None:
    _wait_wall(max(delta.total_seconds(), 0) / source.speed)


def _wait_wall(seconds: float, until_exited: subprocess.Popen | None = None) -> bool:
    """Sleep ``seconds`` of wall time in short slices, so a signal is acted on promptly (and
    only here, never halfway through updating the log). True when ``until_exited`` exited."""
    end = time.monotonic() + max(seconds, 0.01)
    while True:
        if _stop_requested:
            raise Interrupted(_stop_requested[-1])
        if until_exited is not None and until_exited.poll() is not None:
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, 0.05))


def _relay_output(child: subprocess.Popen, state: RunState) -> None:
    """Echo the child's stdout as it comes and keep its last lines (for the result JSON)."""
    if child.stdout is None:  # started without a pipe: nothing to relay
        return
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        state.child_output.append(line.rstrip("\n"))
        del state.child_output[:-20]


def _stop(child: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the child's process group, then SIGKILL after the grace period."""
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        click.echo(f"the command ignored SIGTERM for {grace_seconds:g}s: SIGKILL", err=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def mnist_dir() -> Path:
    """Where the default workload finds MNIST: ``MNIST_DIR``, else the user's data folder
    ``$XDG_CACHE_HOME/carbonaware/mnist`` (``~/.cache/carbonaware/mnist``)."""
    if os.environ.get("MNIST_DIR"):
        return Path(os.environ["MNIST_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "carbonaware" / "mnist"


def _workload(cmd: list[str]) -> Workload:
    """CMD when given; else the MNIST trainer when installed with data; else a stand-in."""
    if cmd:
        return Workload(cmd, " ".join(cmd))
    mnist = mnist_dir()
    trainer = shutil.which("carbon-trainer") or str(Path(sys.executable).parent / "carbon-trainer")
    has_trainer = importlib.util.find_spec("carbontrainer") is not None and Path(trainer).exists()
    if has_trainer and (mnist / "MNIST" / "raw").is_dir():
        out = Path(tempfile.mkdtemp(prefix="carbon-trainer-"))  # fresh: never resume old runs
        argv = [trainer, "--epochs", "1", "--max-samples", "10000", "--eval-samples", "2000",
                "--batch-size", "64", "--data-dir", str(mnist), "--output-dir", str(out / "out"),
                "--checkpoint-dir", str(out / "checkpoints")]  # fmt: skip
        return Workload(argv, f"MNIST trainer (1 epoch, 10,000 samples, data {mnist})")
    why = (
        "the trainer is not installed"
        if not has_trainer
        else f"no MNIST data in {mnist}: set MNIST_DIR, or fetch it there with "
        f"carbon-trainer --download --data-dir {mnist} --epochs 1 --max-samples 64"
    )
    argv = [
        sys.executable,
        "-c",
        f"import time; print('stand-in workload: sleeping {STAND_IN_SECONDS}s', flush=True); "
        f"time.sleep({STAND_IN_SECONDS})",
    ]
    return Workload(
        argv,
        f"STAND-IN ({why}; or pass a command after --): a {STAND_IN_SECONDS}s sleep",
    )


_stop_requested: list[str] = []  # signal names received; acted on at the next wait


def _note_signal(signum, frame) -> None:
    _stop_requested.append(signal.Signals(signum).name)


def _install_signal_handlers():
    _stop_requested.clear()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _note_signal)
    return previous


def _restore_signal_handlers(previous) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
