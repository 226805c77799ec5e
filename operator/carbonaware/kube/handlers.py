"""kopf handlers: the thin shell between Kubernetes and the core.

One timer per CarbonAwareJob reconciles it once per poll floor, or as soon as its zone's
reading changes (kube/wakeups.py: the provider cache rings the zone's bell). The data flows
one way: provider → reading → log → policy → decision → Job → trainer result → accounting →
status. Every object and status patch comes from a pure builder; this module only reads,
calls the core, and writes. The blocking work runs on the operator's handler threads.

Crash safety: the Job name is a function of the CarbonAwareJob's name and uid and Jobs are
created with create → 409 → adopt, so a restart at any point never makes a second Job; the
intensity log lives in a ConfigMap, so readings survive restarts.

Conflicts and outages: the log ConfigMap is the one write guarded by a resourceVersion; on
409 the stored copy is merged into ours (no reading of either writer is lost) and written
again. Status goes through kopf's merge patches, which carry no resourceVersion and cannot
conflict. While the apiserver is unreachable a tick fails as a kopf TemporaryError (one log
line, no traceback) and the timer retries it; kopf's watch streams reconnect on their own.

Time base: a replayed trace runs on its own clock (trace time, anchored at the job's
creation so a restart resumes where it was); every time in status then is trace time and
``status.clock`` says ``replay``. Otherwise it is wall time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import kopf
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from carbonaware.core import accounting
from carbonaware.core.forecast import FORECASTER_HISTORY, profile_forecast
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.interruptible import (
    change_now,
    forecast_from_now,
    remaining_steps,
    should_run,
)
from carbonaware.core.model import Reading, utc
from carbonaware.core.policy import Decision, PolicySettings, Strategy, decide, step_of
from carbonaware.core.workload_report import WorkloadReport
from carbonaware.kube import builders, metrics
from carbonaware.kube.builders import GROUP, PLURAL, VERSION, iso, parse_time
from carbonaware.kube.models import (
    TERMINAL_PHASES,
    CarbonAwareJobSpec,
    ProviderSource,
    SpecError,
    parse_spec,
)
from carbonaware.kube.settings import OperatorSettings
from carbonaware.kube.wakeups import StartWave, UrgentFirstExecutor, ZoneBells
from carbonaware.providers.base import (
    ConfigError,
    Provider,
    ProviderError,
    RateLimitedError,
    UnknownZoneError,
)
from carbonaware.providers.cache import ProviderCache
from carbonaware.providers.chain import FallbackChain
from carbonaware.providers.registry import ProviderConfig, make_provider

if TYPE_CHECKING:  # pandas-backed: imported only when a job replays a trace
    from carbonaware.providers.replay import ReplayProvider

MAX_BACKOFF = timedelta(minutes=10)
# Writes of the log ConfigMap per tick when another writer keeps changing it; then the tick
# fails (kopf retries it next interval) rather than end without the log written.
LOG_WRITE_ATTEMPTS = 5
# The own forecaster's two weeks of history change little within an hour; the job's own
# readings fill in the recent part.
HISTORY_TTL_SECONDS = 3600.0
# A waiting job's "deadline in ..." is rewritten this often when nothing else changed.
COUNTDOWN_REFRESH_SECONDS = 600.0
# An apiserver that is down, restarting or overloaded answers these (or not at all).
API_UNAVAILABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# kopf's pause between two runs of the reconcile handler, which does its own waiting.
TIMER_SPIN_SECONDS = 0.05
READ_OWN_WRITES_POLL_SECONDS = 0.05
LOGGER = logging.getLogger(__name__)


# --- the Kubernetes API, synchronous (kopf runs sync handlers in worker threads) ----------


class ForeignJobError(RuntimeError):
    """A Job with our deterministic name exists but belongs to something else."""


class KubeApi:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return self.api_client.sanitize_for_serialization(obj)

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, or None if the key is absent; SpecError if it is missing."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                raise SpecError(
                    f"cannot read Secret {namespace}/{name} for the provider credentials "
                    f"(HTTP {exc.status})"
                ) from None
            raise
        raw = (secret.data or {}).get(key)
        return base64.b64decode(raw).decode().strip() if raw else None

    def read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(self.core.read_namespaced_config_map(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def write_configmap(self, body: dict[str, Any], resource_version: str | None) -> str:
        """Create (no version) or replace at that version; its new resourceVersion.

        HTTP 409 (ApiException) when someone else wrote first: it exists already, or it
        changed since that version. The caller merges and tries again.
        """
        meta = body["metadata"]
        if resource_version is None:
            created = self.core.create_namespaced_config_map(meta["namespace"], body)
            return created.metadata.resource_version
        body = {**body, "metadata": {**meta, "resourceVersion": resource_version}}
        replaced = self.core.replace_namespaced_config_map(meta["name"], meta["namespace"], body)
        return replaced.metadata.resource_version

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the Job; its JSON as a dict. Not through the client's V1Job model, which
        nothing here reads: at a drop hundreds of Jobs are created at once."""
        namespace = body["metadata"]["namespace"]
        response = self.batch.create_namespaced_job(namespace, body, _preload_content=False)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    def ensure_job(self, body: dict[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        """Create the Job; if it exists (a retry, a restart) adopt it. (job, created)."""
        meta = body["metadata"]
        try:
            return self.create_job(body), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.read_job(meta["namespace"], meta["name"])
        if existing is None:  # deleted between the two calls: try once more
            return self.create_job(body), True
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            raise ForeignJobError(
                f"a Job named {meta['name']} already exists and is not owned by this CarbonAwareJob"
            )
        return existing, False

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(self.batch.read_namespaced_job(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        self.batch.patch_namespaced_job(name, namespace, builders.build_suspend_patch(suspend))

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
        )
        return [self._plain(p) for p in pods.items]


# --- providers: one instance per job configuration, answers shared through the cache -----


class _StartsAt:
    """A clock whose first reading is ``first`` and every later one the wall clock.

    ReplayProvider takes ``t0 = clock()`` when built; this anchors a job's replay at the
    job's creation, so the trace position survives an operator restart.
    """

    def __init__(self, first: float) -> None:
        self._first: float | None = first

    def __call__(self) -> float:
        first, self._first = self._first, None
        return time.time() if first is None else first


@dataclass
class JobSource:
    """Where one job's readings come from and which clock it runs on."""

    provider: Provider  # metered, behind the shared cache
    replay: ReplayProvider | None

    def now(self) -> datetime:
        return self.replay.now() if self.replay else datetime.now(UTC)

    def to_job_time(self, wall: datetime) -> datetime:
        """A wall-clock instant on this job's clock."""
        if self.replay is None:
            return utc(wall)
        elapsed = (datetime.now(UTC) - utc(wall)).total_seconds()
        return self.now() - timedelta(seconds=elapsed * self.replay.speed)

    def to_wall(self, job_time: timedelta) -> timedelta:
        """A span of this job's clock in wall time."""
        return job_time / self.replay.speed if self.replay else job_time

    @property
    def clock(self) -> str:
        return "replay" if self.replay else "wall"


def _source_config(
    source: ProviderSource | Any,
    name: str,
    settings: OperatorSettings,
    credentials: dict[str, str],
) -> dict[str, Any]:
    config: dict[str, Any] = {"name": name, "base_url": source.base_url}
    if source.basis:
        config["basis"] = source.basis
    if name == "replay":
        # No zone override: a trace answers for the zone it holds, and a job asking for
        # another fails with UnknownZone rather than silently relabelling the data.
        config["trace"] = source.trace or settings.trace
        config["speed"] = source.speed or settings.default_replay_speed
        config["start"] = source.start
    if name == "static":
        config["value"] = source.value
    return config | credentials


def _credentials(
    kube: KubeApi, namespace: str, name: str, source: ProviderSource | Any
) -> dict[str, str]:
    ref = source.secret_ref
    if ref is None:
        return {}
    if name == "watttime":
        found = {k: kube.secret_value(namespace, ref.name, k) for k in ("username", "password")}
        missing = [k for k, v in found.items() if not v]
        if missing:
            raise SpecError(f"Secret {namespace}/{ref.name} has no key(s) {', '.join(missing)}")
        return found  # type: ignore[return-value]
    token = kube.secret_value(namespace, ref.name, ref.key)
    if not token:
        raise SpecError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return {"token": token}


class SharedSources:
    """One JobSource per distinct live-provider configuration, shared by the jobs that use it.

    A thousand jobs on a handful of zones then hold a handful of provider objects (each with
    its own requests.Session and connection pool) instead of a thousand. Replayed traces are
    never shared: each job's replay is anchored at that job's creation. Bounded (LRU) so
    rotating Secrets cannot grow it without end.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._sources: OrderedDict[str, JobSource] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: str, build: Callable[[], JobSource]) -> JobSource:
        with self._lock:
            if key in self._sources:
                self._sources.move_to_end(key)
                return self._sources[key]
        source = build()  # outside the lock: building may read a token file
        with self._lock:
            source = self._sources.setdefault(key, source)
            while len(self._sources) > self.max_entries:
                self._sources.popitem(last=False)
            return source

    def __len__(self) -> int:
        return len(self._sources)


def _make_provider(config: ProviderConfig, **kwargs: Any) -> Provider:
    """make_provider, its configuration errors as the job's SpecError."""
    try:
        return make_provider(config, **kwargs)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


def build_source(
    spec: CarbonAwareJobSpec,
    namespace: str,
    created: datetime,
    settings: OperatorSettings,
    kube: KubeApi,
    shared: SharedSources | None = None,
) -> JobSource:
    """The job's provider (with fallbacks), metered and keyed for the shared cache."""
    primary_name = spec.provider.name or settings.default_provider
    config = _source_config(
        spec.provider,
        primary_name,
        settings,
        _credentials(kube, namespace, primary_name, spec.provider),
    )
    config["fallback"] = [
        _source_config(f, f.name, settings, _credentials(kube, namespace, f.name, f))
        for f in spec.provider.fallback
    ]
    try:
        provider_config = ProviderConfig.from_mapping(config)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    # Credentials differ → different answers: fold a digest (never the secret) into the key.
    secret_digest = hashlib.sha256(
        repr(sorted((k, v) for k, v in config.items() if k in ("token", "username"))).encode()
    ).hexdigest()[:12]
    suffix = f"#{secret_digest}" if config.get("token") or config.get("username") else ""
    if config["name"] == "replay":
        from carbonaware.providers.replay import ReplayProvider

        anchor = created.timestamp()
        provider = _make_provider(provider_config, clock=_StartsAt(anchor))
        first = provider.providers[0] if isinstance(provider, FallbackChain) else provider
        if not isinstance(first, ReplayProvider):  # make_provider answered with something else
            raise SpecError(f"spec.provider: replay gave a {type(first).__name__}, not a replay")
        return JobSource(metrics.MeteredProvider(provider, f"@{int(anchor)}{suffix}"), first)

    def build() -> JobSource:
        return JobSource(metrics.MeteredProvider(_make_provider(provider_config), suffix), None)

    if shared is None:
        return build()
    # The whole configuration, secrets included, decides whether two jobs may share.
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return shared.get_or_build(key, build)


# --- the operator's shared state ------------------------------------------------------------


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: KubeApi
    cache: ProviderCache
    sources: SharedSources = field(default_factory=SharedSources)
    bells: ZoneBells = field(default_factory=ZoneBells)  # the cache rings them
    wave: StartWave = field(default_factory=StartWave)
    _executor: UrgentFirstExecutor | None = None

    async def in_thread(self, call: Callable[[], Any], urgent: bool = False) -> Any:
        """``call()`` on one of the operator's ``workers`` handler threads (the kubernetes
        client blocks), with the caller's context (kopf's logging needs it); ``urgent``
        work goes before other work already queued."""
        if self._executor is None:
            self._executor = UrgentFirstExecutor(self.settings.workers)
        context = contextvars.copy_context()
        return await asyncio.wrap_future(self._executor.submit(lambda: context.run(call), urgent))


@dataclass
class JobMemory:
    """What the operator remembers about one job between ticks (lost on restart: that is
    fine, everything here can be re-read)."""

    generation: int | None = None
    spec: CarbonAwareJobSpec | None = None
    source: JobSource | None = None
    log: IntensityLog | None = None
    log_version: str | None = None
    log_written: str = ""
    log_stored_metadata: dict[str, Any] = field(default_factory=dict)  # others' labels, notes
    next_poll: float = 0.0
    failures: int = 0
    adoption_checked: bool = False
    # Interruptible jobs: the reading the last run/pause change was decided on. One change per
    # reading, as the backtest decides once per step: within an hour the rounding of work and
    # time left to whole steps would otherwise pause a job for minutes (a SIGTERM, a
    # checkpoint and a new pod each time).
    changed_at_reading: datetime | None = None
    # When the decision's text was last written (monotonic; 0: never, as after a restart).
    decision_written_at: float = 0.0
    # When the last reconcile ended (event-loop clock) and the resourceVersion it saw: the
    # next one waits for the rest of the interval, or for the zone's bell.
    last_tick: float | None = None
    rings_seen: int = 0
    seen_version: str | None = None
    patched: bool = False
    finished_counted: bool = False  # the finished-job metrics were recorded


# --- status helpers ---------------------------------------------------------------------------


def _condition(
    desired: dict[str, Any],
    type: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> None:
    """Set a condition; its lastTransitionTime is wall time whatever the job's clock."""
    desired["conditions"] = builders.set_condition(
        desired.get("conditions") or [],
        type=type,
        status=status,
        reason=reason,
        message=message,
        generation=generation,
        now=datetime.now(UTC),
    )


def _is_true(status: dict[str, Any], type: str) -> bool | None:
    condition = builders.get_condition(status.get("conditions"), type)
    return None if condition is None else condition.get("status") == "True"


# --- the reconcile step -------------------------------------------------------------------------


class Tick:
    """One reconcile of one CarbonAwareJob. Reads, decides, writes; returns nothing."""

    def __init__(self, runtime: Runtime, memory: JobMemory, body: Any, logger: Any) -> None:
        self.rt = runtime
        self.mem = memory
        self.body = body
        self.logger = logger
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.created = parse_time(meta.get("creationTimestamp")) or datetime.now(UTC)
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.plan_source: str | None = None  # whose forecast the interruptible plan used
        self.desired: dict[str, Any] = dict(self.current)
        self.started = False  # a Job was created, adopted or resumed: the urgent write
        self.log: IntensityLog | None = None  # saved by finish()
        self.render_plot = False  # the job finished: finish() saves the log with its plot
        # energy kWh, emissions g, saved g of a finished job: counted by finish()
        self.finished_figures: tuple[float, float, float] | None = None
        self.events: list[tuple[str, str, bool]] = []

    # -- events: the transitions a person watches for ----------------------------------
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((reason, message, warning))

    def post_events(self) -> None:
        """Post the Events this reconcile collected (kopf queues them; call in the loop)."""
        for reason, message, warning in self.events:
            (kopf.warn if warning else kopf.info)(self.body, reason=reason, message=message)
        self.events.clear()

    def finish(self) -> None:
        """The bookkeeping after run(), off the urgent lane: write the log ConfigMap if it
        changed (with the plot once the job finished), then count a finished job's figures,
        once per job: a failed write retries the whole tick, which must not count them again."""
        if self.log is None:
            return
        self._save_log(self.log, plot=_render(self.log, self.logger) if self.render_plot else None)
        if self.finished_figures is not None and not self.mem.finished_counted:
            metrics.record_finished(*self.finished_figures)
            self.mem.finished_counted = True

    def run(self) -> dict[str, Any] | None:
        phase = self.current.get("phase")
        if phase in TERMINAL_PHASES:
            return None
        try:
            spec, source = self._spec_and_source()
        except SpecError as exc:
            return self._fail("InvalidSpec", str(exc))
        now = source.now()
        self.desired["observedGeneration"] = self.generation
        if not self.desired.get("submittedAt"):
            submitted = source.to_job_time(self.created)
            self.desired.update(
                phase="Pending",
                clock=source.clock,
                submittedAt=iso(submitted),
                deadline=iso(submitted + spec.max_delay),
                logConfigMap=builders.log_configmap_name(self.name),
            )
        log = self._load_log(spec)
        deadline = parse_time(self.desired.get("deadline"))
        if not self.desired.get("jobName") and deadline is not None and now >= deadline:
            polled = False  # due now: a slow or rate-limited provider must not delay the start
        else:
            polled = self._poll(spec, source, log, now)
            now = source.now()  # a poll can block (timeouts, Retry-After): decide on time
        self.log = log
        if self.desired.get("phase") == "Failed":
            return self._finish_patch()
        if self.desired.get("jobName"):
            self._follow_job(spec, source, log, now)
        else:
            self._adopt_existing_job(source, now)
            if not self.desired.get("jobName"):
                self._decide(spec, source, log, now, polled)
        return self._finish_patch()

    def _finish_patch(self) -> dict[str, Any] | None:
        return builders.build_status_patch(self.current, self.desired)

    # -- spec and provider ----------------------------------------------------------------
    def _spec_and_source(self) -> tuple[CarbonAwareJobSpec, JobSource]:
        spec, source = self.mem.spec, self.mem.source
        if spec is None or source is None or self.mem.generation != self.generation:
            spec = parse_spec(dict(self.body.get("spec") or {}))
            source = build_source(
                spec, self.namespace, self.created, self.rt.settings, self.rt.kube, self.rt.sources
            )
            self.mem.spec, self.mem.source, self.mem.generation = spec, source, self.generation
        return spec, source

    def _submitted(self) -> datetime:
        """When the job was submitted, on its clock (status says; else its creation)."""
        submitted = parse_time(self.desired.get("submittedAt"))
        if submitted is None and self.mem.source is not None:
            return self.mem.source.to_job_time(self.created)
        return submitted or self.created

    # -- the log ConfigMap ----------------------------------------------------------------------
    def _load_log(self, spec: CarbonAwareJobSpec) -> IntensityLog:
        if self.mem.log is not None:
            return self.mem.log
        budget = self.rt.settings.log_budget_bytes
        self.mem.log = self._read_stored_log(budget) or IntensityLog(budget_bytes=budget)
        return self.mem.log

    def _read_stored_log(self, budget_bytes: int) -> IntensityLog | None:
        """The log ConfigMap's copy (None if absent, empty or damaged); records its version
        and text as what this tick last saw stored."""
        stored = self.rt.kube.read_configmap(self.namespace, builders.log_configmap_name(self.name))
        text = ((stored or {}).get("data") or {}).get(builders.LOG_CSV_KEY) or ""
        metadata = (stored or {}).get("metadata") or {}
        self.mem.log_version = metadata.get("resourceVersion")
        self.mem.log_stored_metadata = {
            key: metadata[key] for key in ("labels", "annotations") if metadata.get(key)
        }
        self.mem.log_written = text
        if not text:
            return None
        try:
            return IntensityLog.from_csv(text, budget_bytes=budget_bytes)
        except ValueError as exc:  # damaged by hand: ours replaces it, say so
            self.logger.warning(f"log ConfigMap unreadable, replacing it: {exc}")
            return None

    def _save_log(self, log: IntensityLog, plot: bytes | None = None) -> None:
        """Write the log ConfigMap if it changed, at the version last read or written."""
        spec = self.mem.spec
        if spec is not None:
            log.update(builders.build_log_metadata(spec, self.desired))
        for _ in range(LOG_WRITE_ATTEMPTS):
            text = log.to_csv()
            if text == self.mem.log_written and plot is None:
                return
            body = builders.build_log_configmap(
                name=self.name,
                namespace=self.namespace,
                uid=self.uid,
                csv_text=text,
                plot_png=plot,
                stored_metadata=self.mem.log_stored_metadata,
            )
            try:
                self.mem.log_version = self.rt.kube.write_configmap(body, self.mem.log_version)
                self.mem.log_written = text
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            # Someone else wrote it since (a person, a second replica): merge, write again.
            self._merge_stored_log(log)
        raise kopf.TemporaryError(
            f"the log ConfigMap changed under each of {LOG_WRITE_ATTEMPTS} writes; retrying",
            delay=self.rt.settings.poll_floor.total_seconds(),
        )

    def _merge_stored_log(self, log: IntensityLog) -> None:
        """Take the stored copy's version, and into ``log`` its readings that ours lacks."""
        before = len(log.readings)
        stored = self._read_stored_log(log.budget_bytes)  # None when deleted: created again
        if stored is not None:
            log.absorb(stored)
        name = builders.log_configmap_name(self.name)
        LOGGER.info(
            f"log ConfigMap {self.namespace}/{name} changed since we read it (HTTP 409): "
            f"merged {len(log.readings) - before} reading(s) from the stored copy, writing again"
        )

    # -- polling the provider ---------------------------------------------------------------------
    def _poll(
        self, spec: CarbonAwareJobSpec, source: JobSource, log: IntensityLog, now: datetime
    ) -> bool:
        """Read the grid if a poll is due; True when a poll was made (successful or not)."""
        if time.monotonic() < self.mem.next_poll:
            return False
        # A replayed trace costs no API call: it is read directly, at the job's own
        # pollInterval, not through the shared cache's TTL (which would skip trace hours).
        replayed = source.replay is not None
        floor = timedelta(0) if replayed else self.rt.settings.poll_floor
        poll = max(spec.poll_interval, floor)
        provider, zone = source.provider, spec.zone
        try:
            reading = provider.latest(zone) if replayed else self.rt.cache.latest(provider, zone)
            if spec.strategy == "forecast" or spec.interruptible:
                # Without one, the policy forecasts from the history itself, and says so.
                with contextlib.suppress(ProviderError):
                    forecast = (
                        provider.forecast(zone)
                        if replayed
                        else self.rt.cache.forecast(provider, zone)
                    )
                    log.set_forecast(forecast)
        except ProviderError as exc:
            if isinstance(exc, UnknownZoneError) and not self.desired.get("jobName"):
                # Only the provider can say so, and it will not change its mind: fail now.
                # (Once the Job runs, a vanished zone only costs readings; it keeps running.)
                self._fail("UnknownZone", str(exc))
                return True
            self.mem.failures += 1
            backoff = min(poll * 2**self.mem.failures, max(MAX_BACKOFF, poll))
            if isinstance(exc, RateLimitedError) and exc.retry_after:
                backoff = max(backoff, timedelta(seconds=exc.retry_after))
            self.mem.next_poll = time.monotonic() + backoff.total_seconds()
            self._provider_down(str(exc))
            return True
        self.mem.failures = 0
        self.mem.next_poll = time.monotonic() + poll.total_seconds()
        log.append(reading)
        metrics.observe_reading(reading)
        self._reading_status(reading, log, source, spec, now)
        return True

    def _reading_status(
        self,
        reading: Reading,
        log: IntensityLog,
        source: JobSource,
        spec: CarbonAwareJobSpec,
        now: datetime,
    ) -> None:
        self.desired.update(
            currentIntensity=round(reading.intensity, 3),
            lastReadingTime=iso(reading.timestamp),
            readingProvider=reading.provider,
            readingBasis=str(reading.basis),
            readingCount=len(log.readings),
        )
        inner = source.provider.inner  # type: ignore[attr-defined]
        chain = inner.status(spec.zone) if isinstance(inner, FallbackChain) else None
        if chain is not None and chain.fell_back:
            failed = "; ".join(str(f) for f in chain.failures)
            message = f"fell back to {chain.answered_by}: {failed}"
            self._set_provider(False, "FellBack", message)
        else:
            self._set_provider(True, "ReadingReceived", f"{reading.provider} answered")
        age = now - reading.timestamp
        stale = age > self.rt.settings.stale_after
        _condition(
            self.desired,
            "DataStale",
            stale,
            "OldReading" if stale else "Fresh",
            f"latest reading is from {iso(reading.timestamp)} "
            f"({age.total_seconds() / 3600:.1f} h old)",
            self.generation,
        )

    def _set_provider(self, ok: bool, reason: str, message: str) -> None:
        was_ok = _is_true(self.desired, "ProviderAvailable")
        _condition(self.desired, "ProviderAvailable", ok, reason, message, self.generation)
        if not ok and was_ok is not False:
            self.event("ProviderUnavailable", message, warning=True)

    def _provider_down(self, message: str) -> None:
        self._set_provider(False, "ProviderUnavailable", message)
        _condition(
            self.desired,
            "DataStale",
            True,
            "ProviderUnavailable",
            f"no fresh reading: {message}; retrying with backoff, the deadline still holds",
            self.generation,
        )

    # -- deciding and starting ------------------------------------------------------------------
    def _adopt_existing_job(self, source: JobSource, now: datetime) -> None:
        """After a restart, a Job may exist that status does not know about yet: adopt it."""
        if self.mem.adoption_checked:
            return
        self.mem.adoption_checked = True
        name = builders.job_name(self.name, self.uid)
        job = self.rt.kube.read_job(self.namespace, name)
        if job is None:
            return
        created = parse_time(job["metadata"].get("creationTimestamp")) or now
        # The decision that created it was lost with the restart; status still says why it runs.
        reason = "adopted the Job created before an operator restart"
        self.desired["decision"] = {"action": "run", "reason": reason}
        self._mark_running(name, source.to_job_time(created), reason)

    def _decide(
        self,
        spec: CarbonAwareJobSpec,
        source: JobSource,
        log: IntensityLog,
        now: datetime,
        polled: bool,
    ) -> None:
        submitted = self._submitted()
        settings = PolicySettings(
            strategy=Strategy(spec.strategy),
            threshold_g_per_kwh=spec.threshold_grams_per_kwh,
            max_delay=spec.max_delay,
            expected_duration=spec.expected_duration,
        )
        if spec.interruptible:
            run, reason = self._should_run(spec, log, now, running=False)
            decision = Decision(
                action="run" if run else "wait",
                reason=reason,
                planned_start=now if run else None,
                forecast_source=self.plan_source,
                deadline=submitted + spec.max_delay,
            )
        else:
            readings = log.readings
            if settings.strategy == Strategy.FORECAST and not log.forecast:
                readings = self._forecaster_history(spec, source, log, now) + readings
            decision = decide(settings, submitted, now, readings, log.forecast)
        if decision.run:
            self._start(spec, source, decision, now)
            return
        if not polled and self.desired.get("phase") == "Waiting":
            return  # nothing new learnt: leave status alone (its text would only churn)
        clock = time.monotonic()
        since_written = clock - self.mem.decision_written_at
        if only_the_countdown_moved(self.current, self.desired, decision, since_written):
            return
        self.mem.decision_written_at = clock
        self.desired["decision"] = _decision_status(decision)
        _condition(self.desired, "Scheduled", False, "Waiting", decision.reason, self.generation)
        if self.desired.get("phase") != "Waiting":
            self.desired["phase"] = "Waiting"
            self.event("Waiting", decision.reason)
        self.desired["message"] = decision.reason

    def _forecaster_history(
        self, spec: CarbonAwareJobSpec, source: JobSource, log: IntensityLog, now: datetime
    ) -> list[Reading]:
        """The zone's past two weeks, before this job's first reading, for the policy's own
        forecaster (used when the provider has no forecast).

        Shared by every job of the zone through the provider cache and kept for an hour, not
        copied into each job's log: at 1,000 jobs the copies cost hundreds of MB and 30-40 KiB
        per log ConfigMap. Nice to have: without it the forecaster works from the job's own
        readings (and says so in the decision's reason)."""
        first = log.readings[0].timestamp if log.readings else now
        try:
            history = self.rt.cache.history(
                source.provider, spec.zone, FORECASTER_HISTORY, ttl_seconds=HISTORY_TTL_SECONDS
            )
        except ProviderError:
            return []
        return [r for r in history if r.timestamp < first]

    def _start(
        self, spec: CarbonAwareJobSpec, source: JobSource, decision: Decision, now: datetime
    ) -> None:
        body = builders.build_job_spec(
            name=self.name,
            namespace=self.namespace,
            uid=self.uid,
            spec=spec,
            default_trainer_image=self.rt.settings.trainer_image,
            suspend=False if spec.interruptible else None,
        )
        try:
            _, created = self.rt.kube.ensure_job(body, self.uid)
        except ForeignJobError as exc:
            self._fail("JobNameTaken", str(exc))
            return
        except ApiException as exc:
            if exc.status in (400, 403, 422):  # the template is invalid or not allowed
                self._fail("JobRejected", f"the Job was rejected: {_api_reason(exc)}")
                return
            raise
        self.started = True
        self.desired["decision"] = _decision_status(decision)
        if "deadline reached" in decision.reason:
            self.event("DeadlineReached", decision.reason, warning=True)
        name = body["metadata"]["name"]
        self._mark_running(name, now, decision.reason)
        if spec.interruptible:
            self.desired["segments"] = builders.open_segment(self.desired.get("segments"), now)
        if created:
            self.event("JobCreated", f"created Job {name}: {decision.reason}")

    def _mark_running(self, job_name: str, started: datetime, reason: str) -> None:
        submitted = parse_time(self.desired.get("submittedAt")) or started
        self.desired.update(
            phase="Running",
            jobName=job_name,
            startedAt=iso(started),
            waitedSeconds=round(max((started - submitted).total_seconds(), 0.0), 3),
            message=f"running Job {job_name}",
        )
        _condition(
            self.desired,
            "Scheduled",
            True,
            "JobCreated",
            f"Job {job_name}: {reason}",
            self.generation,
        )

    # -- following the Job and accounting -------------------------------------------------------
    def _follow_job(
        self, spec: CarbonAwareJobSpec, source: JobSource, log: IntensityLog, now: datetime
    ) -> None:
        name = self.desired["jobName"]
        job = self.rt.kube.read_job(self.namespace, name)
        if job is None:
            self._fail("JobDeleted", f"the Job {name} was deleted before it finished")
            return
        outcome, why = builders.job_outcome(job)
        if outcome == "running":
            if spec.interruptible:
                self._pause_or_resume(spec, log, now, job)
            return
        if time.monotonic() < self.mem.next_poll:  # a reading at the very end, for accounting
            self.mem.next_poll = 0.0
            self._poll(spec, source, log, now)
        result = builders.parse_trainer_result(
            builders.termination_message(self.rt.kube.job_pods(self.namespace, name))
        )
        started_wall, completed_wall = builders.job_times(job)
        completed_wall = completed_wall or datetime.now(UTC)
        completed = source.to_job_time(completed_wall)
        self.desired["completedAt"] = iso(completed)
        if spec.interruptible:
            self.desired["segments"] = builders.close_segment(
                self.desired.get("segments"), completed
            )
        if result is not None:
            self.desired["trainer"] = builders.build_trainer_status(result)
        self._account(spec, source, log, result, started_wall, completed_wall, completed)
        if outcome == "succeeded":
            self.desired.update(phase="Succeeded", message=self._summary("succeeded"))
            _condition(self.desired, "Succeeded", True, "JobSucceeded", why, self.generation)
            self.event("Succeeded", self.desired["message"])
        else:
            self._fail("JobFailed", f"the Job failed: {why}")
        log.update(builders.build_log_metadata(spec, self.desired))
        self.render_plot = True  # in finish(): bookkeeping never delays another job's start

    def _account(
        self,
        spec: CarbonAwareJobSpec,
        source: JobSource,
        log: IntensityLog,
        result: WorkloadReport | None,
        started_wall: datetime | None,
        completed_wall: datetime,
        completed: datetime,
    ) -> None:
        started = parse_time(self.desired.get("startedAt")) or completed
        submitted = parse_time(self.desired.get("submittedAt")) or started
        # An interruptible job emits only while it runs: over its segments, not start..end.
        spans = builders.segment_spans(self.desired.get("segments"), completed) or [
            (started, completed)
        ]
        # A resumed job's trainer reports its last run only (the earlier pods' reports went
        # with them): its figures do not count, the time of every segment does.
        if spec.interruptible:
            ran = source.to_wall(sum((b - a for a, b in spans), timedelta(0)))
        else:
            ran = completed_wall - (started_wall or completed_wall)
        energy = accounting.job_energy(
            result,
            spec.power.watts,
            spec.power.pue,
            ran,
            resumed=spec.interruptible and len(spans) > 1,
        )
        try:
            report = accounting.account(energy, spans, submitted, log.readings)
        except ValueError as exc:
            self.desired.update(energyKWh=round(energy.kwh, 9), energyMethod=energy.method)
            self.desired["emissionsBasis"] = f"not accounted: {exc}"
            return
        log.update(accounting.report_metadata(report))
        self.desired.update(
            energyKWh=round(energy.kwh, 9),
            energyMethod=energy.method,
            emissionsGrams=round(report.emissions.grams, 6),
            baselineEmissionsGrams=round(report.baseline.grams, 6),
            savedGrams=round(report.saved_grams, 6),
            emissionsBasis=f"{report.basis} factors, actual readings; {report.savings_method}",
        )
        if report.saved_percent is not None:
            self.desired["savedPercent"] = round(report.saved_percent, 2)
        self.finished_figures = (energy.kwh, report.emissions.grams, report.saved_grams)

    # -- interruptible jobs: pause while dirty, resume when clean -----------------------------
    def _should_run(
        self, spec: CarbonAwareJobSpec, log: IntensityLog, now: datetime, running: bool
    ) -> tuple[bool, str]:
        """core.interruptible.should_run (the rule the backtest uses) on this job's readings.

        Between readings the answer stays what it was (see JobMemory.changed_at_reading),
        unless the job has no slack left: then it runs."""
        run, reason, forced, reading_time = self._plan_step(spec, log, now, running)
        if not change_now(run, running, forced, reading_time, self.mem.changed_at_reading):
            return running, reason
        self.mem.changed_at_reading = reading_time
        return run, reason

    def _plan_step(
        self, spec: CarbonAwareJobSpec, log: IntensityLog, now: datetime, running: bool
    ) -> tuple[bool, str, bool, datetime | None]:
        """(run, why, whether it must run to finish in time, the reading it rests on)."""
        submitted = self._submitted()
        latest_finish = submitted + spec.max_delay + spec.expected_duration
        spans = builders.segment_spans(self.desired.get("segments"), now)
        ran = sum((b - a for a, b in spans), timedelta(0))
        actual = [r for r in log.readings if not r.forecast and r.timestamp <= now]
        forecast = [r for r in log.forecast if r.timestamp > now]
        self.plan_source = "provider" if forecast else None
        if not forecast and actual and self.mem.source is not None:
            # The provider has none: the own forecaster's, from the zone's past two weeks and
            # this job's readings (the backtest's interruptible-own).
            past = self._forecaster_history(spec, self.mem.source, log, now) + actual
            forecast = profile_forecast(past, now, latest_finish - now, step_of(actual))
            self.plan_source = "own-forecaster" if forecast else None
        gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(forecast)]
        step = min([g for g in gaps if g > timedelta(0)], default=timedelta(hours=1))
        work = remaining_steps(spec.expected_duration, ran, step)
        steps_left = max(1, -(-(latest_finish - now) // step))
        if not actual:
            run = work >= steps_left  # nothing to compare: run only when there is no slack
            why = f"no reading yet; {work} step(s) of work, {steps_left} step(s) left"
            return run, why, run, None
        values = forecast_from_now(actual[-1].intensity, forecast, now, latest_finish, step)
        run = should_run(values, work, running)
        forced = work >= len(values)
        where = (
            f"{actual[-1].intensity:.0f} g/kWh now; {work} step(s) of {step} of work left in "
            f"{len(values)} step(s) before {iso(latest_finish)}"
        )
        if self.plan_source == "own-forecaster":
            where += " (forecast from own forecaster: the provider has none)"
        why = (
            f"run: {where}, and this step is in the cleanest plan"
            if run
            else f"pause: {where}, and cleaner steps ahead hold all of it"
        )
        return run, why, forced, actual[-1].timestamp

    def _pause_or_resume(
        self, spec: CarbonAwareJobSpec, log: IntensityLog, now: datetime, job: dict[str, Any]
    ) -> None:
        running = not (job.get("spec") or {}).get("suspend")
        # Status follows the Job first: a patch sent just before a restart is not lost.
        segments = self.desired.get("segments")
        self.desired["segments"] = (
            builders.open_segment(segments, now)
            if running
            else builders.close_segment(segments, now)
        )
        run, reason = self._should_run(spec, log, now, running)
        if run == running:
            return
        name = self.desired["jobName"]
        self.rt.kube.suspend_job(self.namespace, name, suspend=not run)
        self.started = run
        segments = self.desired["segments"]
        if run:
            self.desired["segments"] = builders.open_segment(segments, now)
            message = f"resumed Job {name}: {reason}"
        else:
            self.desired["segments"] = builders.close_segment(segments, now)
            message = f"suspended Job {name}: {reason}"
        self.desired["decision"] = {"action": "run" if run else "pause", "reason": reason}
        self.desired["message"] = message
        _condition(
            self.desired,
            "Suspended",
            not run,
            "Resumed" if run else "Suspended",
            message,
            self.generation,
        )
        self.event("Resumed" if run else "Suspended", message)

    def _summary(self, outcome: str) -> str:
        parts = [f"Job {self.desired.get('jobName')} {outcome}"]
        if "emissionsGrams" in self.desired:
            parts.append(
                f"{self.desired['energyKWh']:.4g} kWh ({self.desired['energyMethod']}), "
                f"{self.desired['emissionsGrams']:.4g} g emitted, "
                f"{self.desired['savedGrams']:.4g} g saved vs starting at once"
            )
        return "; ".join(parts)

    def _fail(self, reason: str, message: str) -> dict[str, Any] | None:
        first = self.desired.get("phase") != "Failed"
        self.desired.update(phase="Failed", message=message, observedGeneration=self.generation)
        _condition(self.desired, "Succeeded", False, reason, message, self.generation)
        if first:
            self.event("Failed", message, warning=True)
        return self._finish_patch()


def only_the_countdown_moved(
    current: dict[str, Any], desired: dict[str, Any], decision: Decision, since_written_s: float
) -> bool:
    """Still waiting on the same reading and plan, and only the "deadline in ..." of the
    decision's text differs: rewrite it at most every COUNTDOWN_REFRESH_SECONDS. Otherwise
    every waiting job's status would be patched each minute (1,000 jobs created together:
    1,000 patches in one burst a minute) while nothing changed."""
    previous = current.get("decision") or {}
    same = (
        current.get("phase") == "Waiting"
        and decision.action == "wait"
        and desired.get("lastReadingTime") == current.get("lastReadingTime")
        and desired.get("currentIntensity") == current.get("currentIntensity")
        and _decision_status(decision) | {"reason": ""} == previous | {"reason": ""}
    )
    return same and since_written_s < COUNTDOWN_REFRESH_SECONDS


def _decision_status(decision: Decision) -> dict[str, Any]:
    status: dict[str, Any] = {"action": decision.action, "reason": decision.reason}
    if decision.planned_start is not None:
        status["plannedStart"] = iso(decision.planned_start)
    if decision.forecast_source:
        status["forecastSource"] = decision.forecast_source
    return status


def _api_unavailable(exc: Exception) -> str | None:
    """Why the apiserver could not answer (down, restarting, overloaded), else None."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return f"{exc.url}: {exc.reason}"
    if isinstance(exc, urllib3.exceptions.HTTPError):  # refused, reset, timed out
        return str(exc)
    if isinstance(exc, ApiException) and exc.status in API_UNAVAILABLE_STATUSES:
        return f"HTTP {exc.status} {exc.reason}"
    return None


def _api_reason(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or str(exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def _render(log: IntensityLog, logger: Any) -> bytes | None:
    from carbonaware.plotting import render_plot  # matplotlib: import only when needed

    try:
        return render_plot(log, None)
    except Exception as exc:  # the plot is a nicety: never lose the accounting over it
        logger.warning(f"could not render the plot: {exc}")
        return None


# --- registration ---------------------------------------------------------------------------------


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register the handlers on ``registry`` (main.py calls this; tests may too)."""
    interval = runtime.settings.poll_floor.total_seconds()

    def unfinished(status: Any, **_: Any) -> bool:
        return (status or {}).get("phase") not in TERMINAL_PHASES

    # The timer only keeps the handler going: the handler waits itself, for the rest of the
    # interval or for its zone's bell (kube/wakeups.py), which kopf's timers cannot do.
    # backoff: after an unexpected error (e.g. the apiserver is down) retry at the same pace.
    # when: a finished job has nothing left to do, so its timer stops (1,000 done jobs cost
    # nothing).
    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=TIMER_SPIN_SECONDS,
        backoff=interval,
        when=unfinished,
        registry=registry,
        id="reconcile",
    )
    async def reconcile(
        body: Any, memo: Any, patch: Any, logger: Any, stopped: Any, **_: Any
    ) -> None:
        memory = memo.get("job")
        if memory is None:
            memory = memo["job"] = JobMemory()
        woken = await _wait_turn(runtime, memory, body, interval, stopped)
        if stopped:
            return
        if woken:
            memory.next_poll = 0.0  # read the zone's new reading now (from the cache)
        tick = Tick(runtime, memory, body, logger)
        memory.seen_version = body["metadata"].get("resourceVersion")
        memory.rings_seen = runtime.bells.rung(_zone_of(body))
        try:
            with runtime.wave.member(woken):
                # Deciding is urgent, bookkeeping is not: a zone whose reading changes while
                # another zone's wave writes its logs is seen (and started) at once.
                status_patch = await runtime.in_thread(tick.run, urgent=True)
            if tick.started:
                await runtime.wave.settled()  # the wave's Jobs first, then the bookkeeping
            await runtime.in_thread(tick.finish)
        except Exception as exc:
            # The tick may have created the Job before it failed: look again next time.
            memory.adoption_checked = False
            why = _api_unavailable(exc)
            if why is None:
                raise
            raise kopf.TemporaryError(
                f"the Kubernetes API is unavailable ({why}); retrying", delay=interval
            ) from None
        finally:
            memory.last_tick = asyncio.get_running_loop().time()
            tick.post_events()
        memory.patched = bool(status_patch)
        for key, value in (status_patch or {}).items():
            patch.status[key] = value

    # A watch-event handler (not on.delete): it needs no finalizer and writes nothing. Async:
    # it does no I/O, and kopf would otherwise start a thread pool of its own for it.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="track")
    async def track(type: str, uid: str, status: Any, **_: Any) -> None:
        """Jobs by phase for the metrics, from what the watch sees (restarts included)."""
        if type == "DELETED":
            metrics.set_phase(uid, None)  # its Job and log go with it (ownerReferences)
        else:
            metrics.set_phase(uid, (status or {}).get("phase") or "Pending")


def _zone_of(body: Any) -> str:
    return str((body.get("spec") or {}).get("zone") or "")


async def _wait_turn(
    runtime: Runtime, memory: JobMemory, body: Any, interval: float, stopped: Any
) -> bool:
    """Wait for this job's next reconcile: the rest of its interval, or less if its zone's
    bell rings (then True). The first reconcile does not wait."""
    if memory.last_tick is None:
        return False
    loop = asyncio.get_running_loop()
    woken = await runtime.bells.wait(
        _zone_of(body), memory.last_tick + interval - loop.time(), stopped, memory.rings_seen
    )
    # Read our own writes: status patched by the last reconcile must be in the body (the
    # watch brings it) before the next one decides on it; a bell can ring within ms.
    while (
        memory.patched
        and not stopped
        and body["metadata"].get("resourceVersion") == memory.seen_version
        and loop.time() < memory.last_tick + interval
    ):
        await asyncio.sleep(READ_OWN_WRITES_POLL_SECONDS)
    return woken
