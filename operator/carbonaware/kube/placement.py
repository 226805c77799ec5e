"""Where and when, in the operator: ``spec.placements`` wired to :mod:`core.placement`.

Kept out of the reconcile pass (kube/reconcile.py, kube/finishing.py), which calls it from
a few marked places (``# placement:``):

- :func:`decide` (from ``Tick._decide``): every candidate zone's readings, through the
  operator's shared provider cache (one provider request per zone per cache interval, however
  many jobs share the zone; the default zone's are the job's own log, as for a single zone),
  then :func:`core.placement.decide_placement`. While the job waits, the decision's reason
  says where it plans to run; when it starts, status ``placement`` says where, why, and the
  saving the forecast promised against starting at once in the first (default) placement and
  against the best start there (what waiting alone would have given).
- :func:`chosen` (from ``Tick._start``): which placement the Job is built for, and its name
  (a fallback Job gets its own name).
- :func:`follow` (from ``Tick._spec_and_source``): once the Job runs in a placement, the
  job's polls (and so its accounting) read that placement's zone.
- :func:`check_capacity` (from ``Finishing._follow_job``): a placement whose pods stay
  unschedulable (``PodScheduled=False``, reason ``Unschedulable``) for the grace period
  (``CARBONAWARE_PLACEMENT_GRACE``, default 5m) is given up: its Job is suspended (its pods
  deleted; the suspended Job stays, owned by the CarbonAwareJob, and goes with it), and the
  job decides again among the placements left; status says so.

Interruptible jobs with placements are refused (kube/models.py ``parse_spec`` and the CRD):
a paused job must resume where its checkpoints are (:func:`core.placement.decide_placement`
``committed`` decides so), and the operator's pause/resume rule reads one zone only.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from carbonaware.core.forecast import FORECASTER_HISTORY
from carbonaware.core.placement import Placement, PlacementDecision, ZoneReadings, decide_placement
from carbonaware.core.policy import Decision, PolicySettings, Strategy
from carbonaware.kube.builders import job_name, parse_time
from carbonaware.kube.models import CarbonAwareJobSpec
from carbonaware.kube.polling import HISTORY_TTL_SECONDS
from carbonaware.kube.sources import build_source
from carbonaware.providers.base import ProviderError
from carbonaware.source import Source

if TYPE_CHECKING:
    from carbonaware.core.intensity_log import IntensityLog
    from carbonaware.kube.reconcile import Tick


def sources(tick: Tick, spec: CarbonAwareJobSpec, default: Source) -> list[Source]:
    """One Source per placement: the job's own, or one for the placement's provider
    (shared between jobs through the operator's SharedSources, as the job's own is; a
    SpecError, e.g. a missing Secret, fails the job)."""
    built = []
    for placement in spec.candidates():
        if placement.provider is None:
            built.append(default)
            continue
        own = spec.model_copy(update={"provider": placement.provider})
        rt = tick.rt
        built.append(
            build_source(own, tick.namespace, tick.created, rt.settings, rt.kube, rt.sources)
        )
    return built


def _readings(tick: Tick, source: Source, zone: str, forecast: bool) -> ZoneReadings:
    """A zone's readings from the shared cache: its history and latest reading (and its
    forecast for the forecast strategy). None of it: the zone is left out, and says so."""
    cache = tick.rt.cache
    try:
        latest = cache.latest(source.provider, zone)
    except ProviderError:
        return ZoneReadings([])
    # as much history as the plan gives (two weeks, the last day, none), shared per zone
    history = cache.seed_history(
        source.provider, zone, FORECASTER_HISTORY, HISTORY_TTL_SECONDS
    ).readings
    ahead: list = []
    if forecast:
        with contextlib.suppress(ProviderError):
            ahead = cache.forecast(source.provider, zone)
    return ZoneReadings([r for r in history if r.timestamp < latest.timestamp] + [latest], ahead)


def decide(
    tick: Tick,
    spec: CarbonAwareJobSpec,
    log: IntensityLog,
    default_readings: list,
    now: datetime,
    settings: PolicySettings,
    submitted: datetime,
) -> Decision:
    """The best (placement, start) now; writes status ``placement`` (the choice and why)."""
    memory = tick.mem
    if memory.placement_sources is None:  # follow() builds them before any decision
        raise RuntimeError("placement.decide called before placement.follow")
    candidates = spec.candidates()
    # after a fallback the log holds the given-up zone's readings too: the default's only
    default_readings = [r for r in default_readings if r.zone == candidates[0].zone]
    given_up = set(_status(tick).get("unschedulable") or [])
    left = [i for i, p in enumerate(candidates) if p.zone not in given_up] or [0]
    forecast = settings.strategy == Strategy.FORECAST
    readings = [
        ZoneReadings(default_readings, log.forecast)
        if i == 0
        else _readings(tick, memory.placement_sources[i], candidates[i].zone, forecast)
        for i in left
    ]
    places = [Placement(candidates[i].zone, candidates[i].power_scale) for i in left]
    chosen = decide_placement(settings, places, submitted, now, readings)
    if chosen.run:  # while it waits, the decision's reason says where (no status churn)
        tick.desired["placement"] = _placement_status(tick, chosen, left)
    return chosen.decision


def _placement_status(tick: Tick, chosen: PlacementDecision, left: list[int]) -> dict[str, Any]:
    status: dict[str, Any] = {
        k: v for k, v in _status(tick).items() if k in ("unschedulable", "fellBack")
    }
    if chosen.placement is None:
        return status
    index = left[chosen.placement]
    status.update(index=index, zone=chosen.zone, reason=chosen.reason)
    options = chosen.options
    best = options[chosen.placement]
    default = next((o for o in options if left[o.placement] == 0), None)
    if default is not None and default.now_mean and best.best_mean is not None:
        at_once = default.power_scale * default.now_mean
        status["forecastSavingVsDefaultNowPercent"] = round(100 * (1 - best.score / at_once), 2)
        if default.best_mean:
            waited = default.score
            status["forecastSavingVsDefaultBestStartPercent"] = round(
                100 * (1 - best.score / waited), 2
            )
    return status


def _status(tick: Tick) -> dict[str, Any]:
    return dict(tick.desired.get("placement") or {})


def chosen(tick: Tick, spec: CarbonAwareJobSpec) -> tuple[int, str]:
    """The placement the Job is built for, and the Job's name (the first Job the stable
    name; each fallback Job that name with the placement's index)."""
    if not spec.placements:
        return 0, job_name(tick.name, tick.uid)
    status = _status(tick)
    index = int(status.get("index") or 0)
    base = job_name(tick.name, tick.uid)
    return index, base if not status.get("unschedulable") else f"{base[:60]}-p{index}"


def follow(tick: Tick, spec: CarbonAwareJobSpec) -> CarbonAwareJobSpec:
    """The spec (and source) the job polls and accounts with: while it waits, the default
    placement's (``spec``: its zone is the first placement's); once its Job runs, the zone
    and provider of the placement it runs in. Builds the placements' sources (a SpecError
    here fails the job, as any spec error)."""
    if not spec.placements:
        return spec
    memory = tick.mem
    if memory.placement_sources is None:
        if memory.source is None:
            raise RuntimeError("placement.follow needs the job's own source first")
        memory.placement_sources = sources(tick, spec, memory.source)
    index = int(_status(tick).get("index") or 0) if tick.desired.get("jobName") else 0
    memory.source = memory.placement_sources[index]
    placement = spec.placements[index]
    return spec.model_copy(
        update={"zone": placement.zone, "provider": spec.provider_for(placement)}
    )


def unschedulable_since(pods: list[dict[str, Any]]) -> datetime | None:
    """When the Job's pods became unschedulable (None: any pod scheduled, or none yet)."""
    since = None
    for pod in pods:
        conditions = (pod.get("status") or {}).get("conditions") or []
        scheduled = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if scheduled is None or scheduled.get("status") != "False":
            return None
        if scheduled.get("reason") != "Unschedulable":
            return None
        at = parse_time(scheduled.get("lastTransitionTime"))
        if at is not None:
            since = at if since is None else min(since, at)
    return since


def check_capacity(tick: Tick, spec: CarbonAwareJobSpec, job: dict[str, Any]) -> bool:
    """Give up a placement whose pods could not schedule for the grace period: suspend its
    Job and decide again among the others. True when it did (the caller stops there)."""
    if not spec.placements or spec.interruptible:
        return False
    status = _status(tick)
    tried = list(status.get("unschedulable") or [])
    zone = status.get("zone") or spec.placements[0].zone
    if len(tried) + 1 >= len(spec.placements):
        return False  # nowhere else to go: it waits for capacity where it is
    name = tick.desired["jobName"]
    since = unschedulable_since(tick.rt.kube.job_pods(tick.namespace, name))
    grace: timedelta = tick.rt.settings.placement_grace
    wall_now = datetime.now(since.tzinfo) if since is not None else None
    if since is None or wall_now is None or wall_now - since < grace:
        return False
    tick.rt.kube.suspend_job(tick.namespace, name, suspend=True)
    message = (
        f"the pods of Job {name} in {zone} could not be scheduled for {grace} "
        "(no node or quota): suspended it, choosing again among the other placements"
    )
    # None: removed from the stored status by the merge patch
    tick.desired["placement"] = {**dict.fromkeys(status), "unschedulable": [*tried, zone]}
    tick.desired["placement"]["fellBack"] = message
    tick.desired.update(jobName=None, startedAt=None, waitedSeconds=None)
    tick.desired.update(phase="Waiting", message=message)
    tick.event("PlacementUnschedulable", message, warning=True)
    return True
