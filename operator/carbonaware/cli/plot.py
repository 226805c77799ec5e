"""``carbonctl plot``: render carbon_plot.png from an intensity log.

The log comes from a CSV file (``--log``). Reading a job's ConfigMap instead (``--job NAME
-n NS``) belongs to the operator side: it loads the log there and calls :func:`plot_from_log`.
"""

from __future__ import annotations

from pathlib import Path

import click

from carbonaware.core.intensity_log import IntensityLog
from carbonaware.plotting import render_plot
from carbonaware.providers.base import ConfigError


def read_log(path: str | Path) -> IntensityLog:
    """An intensity log from a CSV file; ConfigError (exit 2) when it is unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read intensity log {path}: {exc}") from None
    try:
        return IntensityLog.from_csv(text)
    except ValueError as exc:
        raise ConfigError(f"intensity log {path} is not valid: {exc}") from None


def plot_from_log(log: IntensityLog, out: str | Path) -> Path:
    """Render ``log`` to ``out``; the one place the CLI turns a log into a PNG."""
    render_plot(log, out)
    return Path(out)


@click.command()
@click.option("--log", "log_path", help="Intensity log CSV (carbonctl run --log).")
@click.option("--job", help="A CarbonAwareJob: read its log ConfigMap from the cluster.")
@click.option("-n", "--namespace", help="The job's namespace (default: the kubeconfig's).")
@click.option("-o", "--output", default="carbon_plot.png", show_default=True, help="PNG to write.")
def command(log_path: str | None, job: str | None, namespace: str | None, output: str) -> None:
    """Render carbon_plot.png from an intensity log."""
    if (log_path is None) == (job is None):
        raise click.UsageError("give exactly one of --log FILE or --job NAME")
    if job is not None:
        from carbonaware.kube.lookup import read_job_log_from_cluster  # kubernetes: only here

        log = read_job_log_from_cluster(job, namespace)
    else:
        log = read_log(log_path)
    out = plot_from_log(log, output)
    click.echo(f"wrote {out}")
