"""The operator's energy figure for a finished Job, from the best source it has (shell).

The ranking is core/pod_energy.choose_energy's: the workload's report, then Kepler/DCGM in
Prometheus, then the kubelet's CPU time × the power model, then ``spec.power`` × wall time
(core/accounting.job_energy). This module gathers the inputs: it samples the Job's pods on
every tick while they run (kube/pod_usage.py) and, at the end, asks Prometheus over each
pod's own lifetime (a pod lives inside one run segment, so segments and retries add up and
the suspended time between them does not count).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from carbonaware.core import accounting
from carbonaware.core.durations import format_duration
from carbonaware.core.pod_energy import (
    EnergyChoice,
    SourceFigure,
    choose_energy,
    kubelet_figure,
    model_for,
    prometheus_figure,
)
from carbonaware.core.workload_report import WorkloadReport
from carbonaware.kube.builders import parse_time
from carbonaware.kube.pod_usage import PodUsageSampler, UsageTracker
from carbonaware.kube.prom_energy import PrometheusEnergy, PrometheusError
from carbonaware.kube.settings import OperatorSettings

LOGGER = logging.getLogger(__name__)


def sample(kube, settings: OperatorSettings, tracker: UsageTracker, namespace: str, job: str):
    """Record the Job's pods and, where the kubelet path is on, their CPU time now (nothing
    when neither the kubelet path nor a Prometheus is configured)."""
    if not (settings.kubelet_cpu or settings.prometheus_url):
        return
    pods = kube.job_pods(namespace, job)
    if settings.kubelet_cpu:
        PodUsageSampler(kube.core).sample(tracker, pods, datetime.now(UTC))
    else:
        tracker.record(pods, [])


def _merge(figures: Iterable[SourceFigure]) -> list[SourceFigure]:
    per_source: dict[str, dict[str, float]] = {}
    for figure in figures:
        joined = per_source.setdefault(figure.label.split(":", 1)[1], {})
        for pod, joules in figure.per_pod_joules.items():
            joined[pod] = joined.get(pod, 0.0) + joules
    return [f for s, j in per_source.items() if (f := prometheus_figure(s, j)) is not None]


def prometheus_figures(
    settings: OperatorSettings, tracker: UsageTracker, namespace: str, now: datetime
) -> tuple[list[SourceFigure], str | None]:
    """Kepler's and DCGM's joules for every pod the tracker saw, over its own lifetime."""
    if not settings.prometheus_url or not tracker.pods:
        return [], None
    energy = PrometheusEnergy(
        settings.prometheus_url,
        settings.prometheus_token,
        {"kepler": settings.kepler_query, "dcgm": settings.dcgm_query},
    )
    last = {s.pod_uid: parse_time(s.time) for s in tracker.samples.values() if s.time}
    found: list[SourceFigure] = []
    try:
        for uid, pod in tracker.pods.items():
            start = parse_time(pod.get("start"))
            end = parse_time(pod.get("end")) or last.get(uid) or now
            if start is not None and end > start:
                found.extend(energy.figures(namespace, [pod["name"]], [(start, end)]))
    except PrometheusError as exc:
        LOGGER.warning("%s", exc)
        return [], str(exc)
    return _merge(found), None


def job_energy(
    settings: OperatorSettings,
    tracker: UsageTracker,
    namespace: str,
    report: WorkloadReport | None,
    resumed: bool,
    power_watts: float,
    pue: float,
    ran: timedelta,
) -> tuple[accounting.Energy, EnergyChoice | None]:
    """The Job's facility energy and, when pod data gave it, the choice with its split."""
    own = None if resumed else report
    if own is not None and own.energy_kwh is not None:
        return accounting.job_energy(report, power_watts, pue, ran, resumed), None
    measured, problem = prometheus_figures(settings, tracker, namespace, datetime.now(UTC))
    model = model_for(settings.cpu_model, dict(settings.core_watts), settings.memory_w_per_gb)
    choice = choose_energy(None, measured, kubelet_figure(tracker.usages(), model))
    if choice is None:
        energy = accounting.job_energy(report, power_watts, pue, ran, resumed)
        why = problem or tracker.error
        if why:
            energy = accounting.Energy(energy.kwh, energy.method, f"{energy.detail} ({why})")
        return energy, None
    parts = "; ".join(f"{label}: {kwh:.4g} kWh" for label, kwh in choice.split)
    detail = f"{parts}; IT energy × PUE {pue:g} over {format_duration(ran)}"
    return accounting.Energy(choice.kwh * pue, choice.label, detail), choice
