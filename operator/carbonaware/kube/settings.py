"""Operator-wide settings, read once at start from the environment.

In the cluster the environment comes from the ``carbonaware-operator-config`` ConfigMap
(manifests/config.yaml, via ``envFrom``) and provider tokens from a Secret (``secretKeyRef``),
so no token is ever part of a CarbonAwareJob, its status or its Events.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from carbonaware.core.durations import DurationError, parse_duration
from carbonaware.core.intensity_log import DEFAULT_BUDGET_BYTES
from carbonaware.core.pod_energy import CCF_MEMORY_W_PER_GB, CoreWatts
from carbonaware.kube.prom_energy import DCGM_QUERY, KEPLER_QUERY

PREFIX = "CARBONAWARE_"


class SettingsError(ValueError):
    """A bad operator setting; the message names the variable."""


@dataclass(frozen=True)
class OperatorSettings:
    default_provider: str = "replay"
    default_trace: str = ""  # replay trace when a job names none ("" = the bundled demo trace)
    default_replay_speed: float = 1.0
    trainer_image: str = "carbonaware/trainer:dev"
    poll_floor: timedelta = timedelta(seconds=10)  # no job polls more often than this
    cache_ttl: timedelta = timedelta(seconds=30)  # shared provider cache: one call per TTL
    # Phase each zone's polls to its readings' grid, so a new reading is seen within about a
    # second of its publication instead of up to a TTL later (providers/cache.py).
    follow_grid: bool = True
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    log_budget_bytes: int = DEFAULT_BUDGET_BYTES
    stale_after: timedelta = timedelta(hours=2)  # readings older than this are stale
    # spec.placements: how long a placement's pods may stay unschedulable before the job
    # falls back to the next-best placement (kube/placement.py).
    placement_grace: timedelta = timedelta(minutes=5)
    metrics_port: int = 8000  # 0 disables the metrics server
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    peering_name: str = "carbonaware"
    priority: int | None = None  # None: a random priority, so two replicas never both act
    standalone: bool = False  # True: no peering at all (tests, a single local run)
    # Threads running the (synchronous) per-job handlers. Each blocks on API and provider
    # calls; fewer threads save a little memory but slow a burst of Job creations (bench/scale.py).
    workers: int = 32
    # Seconds between retries of a failing Kubernetes API request (kopf's watches, patches,
    # Events); the last one repeats until the apiserver answers again.
    api_backoffs: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60)

    # Energy of any workload (core/pod_energy.py, docs/accounting.md). The kubelet's CPU time
    # of the Job's pods × the power model for ``cpu_model`` (CCF's figures; overrides by
    # family "skylake=0.65:4.26,default=1:5", W per core idle:busy).
    kubelet_cpu: bool = False  # needs manifests/rbac-kubelet-stats.yaml: read its warning
    cpu_model: str = ""
    core_watts: tuple[tuple[str, CoreWatts], ...] = ()
    memory_w_per_gb: float = CCF_MEMORY_W_PER_GB
    # A Prometheus that scrapes Kepler and/or DCGM ("" = none); its bearer token comes from a
    # Secret through secretKeyRef (CARBONAWARE_PROMETHEUS_TOKEN), never from a job.
    prometheus_url: str = ""
    prometheus_token: str = field(default="", repr=False)
    kepler_query: str = KEPLER_QUERY  # PromQL templates, see kube/prom_energy.py
    dcgm_query: str = DCGM_QUERY


def _duration(env: Mapping[str, str], key: str, default: timedelta) -> timedelta:
    text = env.get(PREFIX + key)
    if not text:
        return default
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise SettingsError(f"{PREFIX}{key}: {exc}") from None


def _number(env: Mapping[str, str], key: str, default, kind=float):
    text = env.get(PREFIX + key)
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise SettingsError(f"{PREFIX}{key}: not a number: {text!r}") from None


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    text = env.get(PREFIX + key, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{PREFIX}{key}: expected true or false, got {text!r}")


def _backoffs(env: Mapping[str, str], key: str, default: tuple[float, ...]) -> tuple[float, ...]:
    text = env.get(PREFIX + key)
    if not text:
        return default
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 3600 for v in values):
        raise SettingsError(
            f"{PREFIX}{key}: expected comma-separated seconds between 0 and 3600, got {text!r}"
        )
    return values


def _core_watts(env: Mapping[str, str], key: str) -> tuple[tuple[str, CoreWatts], ...]:
    text = env.get(PREFIX + key, "").strip()
    if not text:
        return ()
    pairs = []
    for part in text.split(","):
        family, _, watts = part.partition("=")
        idle, _, busy = watts.partition(":")
        try:
            pairs.append((family.strip().lower(), CoreWatts(float(idle), float(busy))))
        except ValueError:
            raise SettingsError(
                f"{PREFIX}{key}: expected family=idle:busy W per core (0 <= idle <= busy), "
                f"comma-separated, got {part.strip()!r}"
            ) from None
    return tuple(pairs)


def load_settings(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    namespaces = tuple(
        ns.strip() for ns in env.get(PREFIX + "NAMESPACES", "").split(",") if ns.strip()
    )
    defaults = OperatorSettings()
    settings = OperatorSettings(
        default_provider=env.get(PREFIX + "DEFAULT_PROVIDER") or defaults.default_provider,
        default_trace=env.get(PREFIX + "DEFAULT_TRACE", ""),
        default_replay_speed=_number(env, "DEFAULT_REPLAY_SPEED", defaults.default_replay_speed),
        trainer_image=env.get(PREFIX + "TRAINER_IMAGE") or defaults.trainer_image,
        poll_floor=_duration(env, "POLL_FLOOR", defaults.poll_floor),
        cache_ttl=_duration(env, "CACHE_TTL", defaults.cache_ttl),
        follow_grid=_flag(env, "FOLLOW_GRID", defaults.follow_grid),
        namespaces=namespaces,
        log_budget_bytes=_number(env, "LOG_BUDGET_BYTES", defaults.log_budget_bytes, int),
        stale_after=_duration(env, "STALE_AFTER", defaults.stale_after),
        placement_grace=_duration(env, "PLACEMENT_GRACE", defaults.placement_grace),
        metrics_port=_number(env, "METRICS_PORT", defaults.metrics_port, int),
        liveness_endpoint=env.get(PREFIX + "LIVENESS_ENDPOINT", defaults.liveness_endpoint),
        peering_name=env.get(PREFIX + "PEERING_NAME") or defaults.peering_name,
        priority=_number(env, "PRIORITY", None, int),
        standalone=env.get(PREFIX + "STANDALONE", "").lower() in ("1", "true", "yes"),
        workers=_number(env, "WORKERS", defaults.workers, int),
        api_backoffs=_backoffs(env, "API_BACKOFFS", defaults.api_backoffs),
        kubelet_cpu=_flag(env, "KUBELET_CPU", defaults.kubelet_cpu),
        cpu_model=env.get(PREFIX + "CPU_MODEL", ""),
        core_watts=_core_watts(env, "CORE_WATTS"),
        memory_w_per_gb=_number(env, "MEMORY_W_PER_GB", defaults.memory_w_per_gb),
        prometheus_url=env.get(PREFIX + "PROMETHEUS_URL", "").rstrip("/"),
        prometheus_token=env.get(PREFIX + "PROMETHEUS_TOKEN", ""),
        kepler_query=env.get(PREFIX + "KEPLER_QUERY") or defaults.kepler_query,
        dcgm_query=env.get(PREFIX + "DCGM_QUERY") or defaults.dcgm_query,
    )
    if not (0 <= settings.memory_w_per_gb < 1000):
        raise SettingsError(f"{PREFIX}MEMORY_W_PER_GB must be between 0 and 1000")
    if settings.prometheus_url and not settings.prometheus_url.startswith(("http://", "https://")):
        raise SettingsError(f"{PREFIX}PROMETHEUS_URL must be an http(s) URL")
    if not 1 <= settings.workers <= 256:
        raise SettingsError(f"{PREFIX}WORKERS must be between 1 and 256")
    if settings.poll_floor < timedelta(milliseconds=100):
        raise SettingsError(f"{PREFIX}POLL_FLOOR must be at least 100ms")
    if settings.default_provider not in ("electricitymaps", "ukci", "watttime", "replay", "static"):
        raise SettingsError(
            f"{PREFIX}DEFAULT_PROVIDER: unknown provider {settings.default_provider!r}"
        )
    return settings
