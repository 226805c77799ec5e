"""``kubectl carbon``: a kubectl plugin (the ``kubectl-carbon`` executable) for CarbonAwareJobs.

    kubectl carbon status NAME [-n NS]        what the job is doing and what it cost
    kubectl carbon plot NAME [-o FILE]        carbon_plot.png from the job's log ConfigMap
    kubectl carbon plot cacj/NAME [-o FILE]   a CarbonAwareCronJob's series, one bar per run
    kubectl carbon intensity --zone Z [-A]    the latest reading the operator has for a zone

``-n/--namespace``, ``--kubeconfig`` and ``--context`` work as in kubectl. Errors (no CRD, no
such job, no kubeconfig) are one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from carbonaware.kube import lookup

PROG = "kubectl carbon"


class Target:
    def __init__(self, namespace: str | None, kubeconfig: str | None, context: str | None):
        self.kubeconfig = kubeconfig
        self.context = context
        self.namespace = namespace or lookup.current_namespace(kubeconfig, context)
        self._api = None

    @property
    def api(self):
        if self._api is None:
            self._api = lookup.connect(self.kubeconfig, self.context)
        return self._api


def _cluster_options(fn):
    fn = click.option("--context", help="The kubeconfig context to use.")(fn)
    fn = click.option("--kubeconfig", help="Path to the kubeconfig file.")(fn)
    fn = click.option("-n", "--namespace", help="Namespace (default: the context's).")(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """CarbonAwareJobs: status, plot, and the grid's intensity."""


def _number(value: Any, unit: str, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g} {unit}".rstrip()


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((datetime.now(UTC) - then).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def describe(job: dict[str, Any]) -> list[str]:
    """The lines ``kubectl carbon status`` prints (pure: tests call it)."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    meta = job["metadata"]
    provider = (spec.get("provider") or {}).get("name") or "operator default"
    clock = " (replayed trace time)" if status.get("clock") == "replay" else ""
    decision = status.get("decision") or {}
    lines = [
        f"Name:        {meta['namespace']}/{meta['name']} "
        f"(age {_age(meta.get('creationTimestamp'))})",
        f"Phase:       {status.get('phase') or 'Pending (not yet seen by the operator)'}",
        f"Zone:        {spec.get('zone')} via {provider}; strategy {spec.get('strategy')}, "
        f"threshold {spec.get('thresholdGramsPerKWh')} g/kWh",
        f"Intensity:   {_number(status.get('currentIntensity'), 'gCO2eq/kWh')} "
        f"at {status.get('lastReadingTime') or '-'} ({status.get('readingProvider') or '-'}, "
        f"{status.get('readingBasis') or '-'} factors){clock}",
        f"Submitted:   {status.get('submittedAt') or '-'}; "
        f"deadline {status.get('deadline') or '-'}",
    ]
    if decision:
        lines.append(f"Decision:    {decision.get('action')}: {decision.get('reason')}")
    if status.get("jobName"):
        lines.append(
            f"Job:         {status['jobName']}; started {status.get('startedAt') or '-'}, "
            f"finished {status.get('completedAt') or '-'}, "
            f"waited {_number(status.get('waitedSeconds'), 's', 6)}"
        )
    if status.get("energyKWh") is not None:
        lines.append(
            f"Energy:      {_number(status['energyKWh'], 'kWh')} ({status.get('energyMethod')})"
        )
    if status.get("emissionsGrams") is not None:
        lines += [
            f"Emissions:   {_number(status['emissionsGrams'], 'gCO2eq')}; had it started at "
            f"once: {_number(status.get('baselineEmissionsGrams'), 'gCO2eq')}",
            f"Saved:       {_number(status.get('savedGrams'), 'gCO2eq')} "
            f"({_number(status.get('savedPercent'), '%', 3)})",
            f"Basis:       {status.get('emissionsBasis')}",
        ]
    trainer = status.get("trainer") or {}
    if trainer:
        accuracy = trainer.get("accuracy")
        lines.append(
            f"Trainer:     accuracy {'-' if accuracy is None else f'{accuracy:.2%}'}, "
            f"{trainer.get('epochs', '-')} epoch(s), "
            f"{_number(trainer.get('durationSeconds'), 's')}"
        )
    if status.get("message"):
        lines.append(f"Message:     {status['message']}")
    for condition in status.get("conditions") or []:
        lines.append(
            f"Condition:   {condition['type']}={condition['status']} "
            f"({condition.get('reason', '')}): {condition.get('message', '')}"
        )
    if status.get("logConfigMap"):
        lines.append(f"Log:         ConfigMap {status['logConfigMap']}")
    return lines


@cli.command()
@click.argument("name")
@_cluster_options
def status(name: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """What a CarbonAwareJob is doing, and what it cost."""
    target = Target(namespace, kubeconfig, context)
    click.echo("\n".join(describe(lookup.get_job(target.api, target.namespace, name))))


@cli.command()
@click.argument("name")
@click.option("-o", "--output", default="carbon_plot.png", show_default=True, help="PNG to write.")
@_cluster_options
def plot(
    name: str, output: str, namespace: str | None, kubeconfig: str | None, context: str | None
) -> None:
    """Render carbon_plot.png from a CarbonAwareJob's log ConfigMap, or a
    CarbonAwareCronJob's series (NAME or cacj/NAME): each run emitted vs at its scheduled
    time, and the intensity it ran at."""
    from carbonaware.cli.plot import plot_from_log  # matplotlib: only when plotting

    target = Target(namespace, kubeconfig, context)
    kind, _, bare = name.rpartition("/")
    if kind in CRON_KINDS or not kind:
        cron = lookup.get_cronjob(target.api, target.namespace, bare)
        if cron is not None:
            click.echo(f"wrote {plot_cron_series(cron, output)}")
            return
        if kind:
            raise lookup.LookupFailed(
                f'CarbonAwareCronJob "{bare}" not found in namespace "{target.namespace}"'
            )
    out = plot_from_log(lookup.read_job_log(target.api, target.namespace, bare), output)
    click.echo(f"wrote {out}")


CRON_KINDS = ("cacj", "carbonawarecronjob", "carbonawarecronjobs")


def plot_cron_series(cron: dict[str, Any], output: str) -> str:
    """The cron job's series figure from its status (pure apart from the file written)."""
    from carbonaware.series_plot import bars_from_status, render_series

    meta, spec = cron["metadata"], cron.get("spec") or {}
    bars = bars_from_status((cron.get("status") or {}).get("series") or [])
    if not bars:
        raise lookup.LookupFailed(
            f'CarbonAwareCronJob "{meta["name"]}" has no finished run with an accounting yet'
        )
    zone = (spec.get("jobTemplate") or {}).get("zone")
    title = f"{meta['name']}: {spec.get('schedule')} in {zone}, window {spec.get('window')}"
    render_series(bars, title, path=output)
    return output


@cli.command()
@click.option("--zone", required=True, help="Grid zone, e.g. DE, GB.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Look in every namespace.")
@_cluster_options
def intensity(
    zone: str,
    all_namespaces: bool,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """The latest intensity the operator has read for a zone (from its jobs' status)."""
    target = Target(namespace, kubeconfig, context)
    where = None if all_namespaces else target.namespace
    jobs = [
        j
        for j in lookup.list_jobs(target.api, where)
        if (j.get("spec") or {}).get("zone", "").upper() == zone.upper()
    ]
    readings = [
        j["status"] for j in jobs if (j.get("status") or {}).get("currentIntensity") is not None
    ]
    scope = "any namespace" if where is None else f'namespace "{where}"'
    if not readings:
        problem = (
            f"the CarbonAwareJobs for zone {zone} in {scope} have no reading yet"
            if jobs
            else f"no CarbonAwareJob in {scope} watches zone {zone}"
        )
        raise lookup.LookupFailed(
            f"{problem} (carbonctl intensity --zone {zone} asks a provider directly)"
        )
    latest = max(readings, key=lambda s: s.get("lastReadingTime") or "")
    clock = " (replayed trace time)" if latest.get("clock") == "replay" else ""
    click.echo(
        f"{zone}: {latest['currentIntensity']:.1f} gCO2eq/kWh at {latest.get('lastReadingTime')}"
        f"{clock} ({latest.get('readingBasis', '?')} factors, provider "
        f"{latest.get('readingProvider', '?')}; seen by {len(jobs)} job(s) in {scope})"
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``kubectl-carbon``)."""
    try:
        cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{PROG}: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"{PROG}: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except lookup.LookupFailed as exc:
        click.echo(f"{PROG}: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
