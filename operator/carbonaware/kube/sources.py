"""Where each job's readings come from: its provider (fallbacks, credentials from Secrets),
metered and keyed for the shared cache, and the clock it runs on (a replayed trace's or the
wall's)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carbonaware.kube import metrics
from carbonaware.kube.api import KubeApi
from carbonaware.kube.models import (
    CarbonAwareJobSpec,
    ProviderSource,
    SpecError,
)
from carbonaware.kube.settings import OperatorSettings
from carbonaware.providers.base import ConfigError, Provider
from carbonaware.providers.chain import FallbackChain
from carbonaware.providers.registry import ProviderConfig, make_provider
from carbonaware.source import Source, replay_options

if TYPE_CHECKING:  # pandas-backed: imported only when a job replays a trace
    pass


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
        config |= replay_options(
            source.trace,
            source.speed,
            source.start,
            settings.default_trace,
            settings.default_replay_speed,
        )
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
    """One Source per distinct live-provider configuration, shared by the jobs that use it.

    A thousand jobs on a handful of zones then hold a handful of provider objects (each with
    its own requests.Session and connection pool) instead of a thousand. Replayed traces are
    never shared: each job's replay is anchored at that job's creation. Bounded (LRU) so
    rotating Secrets cannot grow it without end.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._sources: OrderedDict[str, Source] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: str, build: Callable[[], Source]) -> Source:
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
) -> Source:
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
        return Source(
            metrics.MeteredProvider(provider, f"@{int(anchor)}{suffix}"), spec.zone, first
        )

    def build() -> Source:
        return Source(metrics.MeteredProvider(_make_provider(provider_config), suffix), spec.zone)

    if shared is None:
        return build()
    # The whole configuration, secrets included, decides whether two jobs may share.
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return shared.get_or_build(key, build)
