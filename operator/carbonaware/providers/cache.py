"""A TTL cache shared by every job: one request per (provider, zone, kind) per interval.

1,000 jobs in one zone ask the cache, not the API: the first caller after the entry expires
fetches (the others that arrive meanwhile wait for that same fetch: single flight), and all of
them get the same readings until the TTL passes. Failures that are the provider's answer
(ProviderError) are cached too, for ``error_ttl_seconds``, so a rate-limited or down API is
not hammered by every job at once.

``on_new_reading(zone)`` is called (in the fetching thread) when a fetch of ``latest`` brings a
reading that differs from the one it replaces: the operator wakes that zone's jobs with it.

``follow_grid=True`` follows each zone's readings' grid (core/cadence.py): an entry never
outlives the instant the zone's next reading is due, and the cache fetches that one itself
then (refresh-ahead) while anyone still asks for the zone. A new reading is seen, and its
jobs woken, within about a second of its publication rather than up to a TTL later; the
routine fetches then follow it a TTL apart, in step with the grid. That costs no extra
request when a period is a whole number of TTLs and one a period otherwise (plus a few while
the cache learns how late a provider publishes).

Thread-safe; the ``a*`` methods run the lookup in a worker thread for asyncio callers. Note
for replays: the TTL is in ``clock`` seconds (wall time), so at ``speed=3600`` a 60 s TTL
spans an hour of trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from carbonaware.core.cadence import Cadence, next_poll, observe
from carbonaware.core.model import Reading
from carbonaware.providers.base import DEFAULT_HISTORY, Provider, ProviderError
from carbonaware.providers.history import SeedHistory, seed_history

_PRUNE_ABOVE = 4096
# Refresh-ahead (one fetch a period) goes on while somebody asked for the zone this recently
# (a waiting job polls at its pollInterval, often minutes apart).
_REFRESH_WHILE_ASKED_S = 900.0
_MAX_LAG_S = 60.0  # the most a publication lag learnt may grow to


@dataclass
class _Entry:
    expires: float
    value: Any = None
    error: ProviderError | None = None


def cache_key(provider: Provider) -> str:
    """Identifies a provider's configuration (not its secrets): name, base URL, basis ..."""
    return str(getattr(provider, "cache_key", provider.name))


class ProviderCache:
    """Caches ``latest``/``forecast``/``history`` per (provider, zone, kind) for a TTL."""

    def __init__(
        self,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        error_ttl_seconds: float | None = None,
        on_new_reading: Callable[[str], None] | None = None,
        follow_grid: bool = False,
        first_lag_seconds: float = 0.25,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds}")
        self.ttl = float(ttl_seconds)
        self.error_ttl = min(self.ttl, 30.0) if error_ttl_seconds is None else error_ttl_seconds
        self._clock = clock
        self._on_new_reading = on_new_reading
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._inflight: dict[tuple[str, str, str], Future] = {}
        self.hits = 0
        self.misses = 0  # requests actually made to a provider
        self.follow_grid = follow_grid
        self._first_lag = first_lag_seconds
        self._wall = wall
        self._cadences: dict[tuple[str, str, str], Cadence] = {}
        self._asked: dict[tuple[str, str, str], float] = {}  # key -> clock() last asked
        self._refresher: _Refresher | None = None

    def latest(self, provider: Provider, zone: str) -> Reading:
        return self._get(provider, zone, "latest", lambda: provider.latest(zone))

    def forecast(self, provider: Provider, zone: str) -> list[Reading]:
        return list(self._get(provider, zone, "forecast", lambda: provider.forecast(zone)))

    def history(
        self,
        provider: Provider,
        zone: str,
        span: timedelta = DEFAULT_HISTORY,
        ttl_seconds: float | None = None,
    ) -> list[Reading]:
        """``ttl_seconds`` (at least the cache's TTL) keeps a long history longer: two weeks
        of readings for a forecaster's profile need not be fetched again every poll."""
        # each span is its own entry: a week asked for is not served from a cached day
        kind = f"history:{span.total_seconds():g}s"
        ttl = self.ttl if ttl_seconds is None else max(self.ttl, ttl_seconds)
        return list(self._get(provider, zone, kind, lambda: provider.history(zone, span), ttl))

    def seed_history(
        self, provider: Provider, zone: str, span: timedelta, ttl_seconds: float
    ) -> SeedHistory:
        """The zone's past for a forecaster, degraded as the plan allows (span → last 24 h
        → nothing; see providers/history.py), one per zone for every job that asks.

        Kept ``ttl_seconds`` (at least the TTL) when the plan set the limit; when a passing
        failure made it degrade, only the cache's TTL, so the next asker tries again."""
        ttl = max(self.ttl, ttl_seconds)

        def fetch(asked: timedelta) -> list[Reading]:
            return self.history(provider, zone, asked, ttl)

        name = getattr(provider, "name", "provider")
        return self._get(
            provider,
            zone,
            f"seed:{span.total_seconds():g}s",
            lambda: seed_history(fetch, span, name),
            lambda seed: ttl if seed.settled else self.ttl,
        )

    async def alatest(self, provider: Provider, zone: str) -> Reading:
        return await asyncio.to_thread(self.latest, provider, zone)

    async def aforecast(self, provider: Provider, zone: str) -> list[Reading]:
        return await asyncio.to_thread(self.forecast, provider, zone)

    async def ahistory(
        self, provider: Provider, zone: str, span: timedelta = DEFAULT_HISTORY
    ) -> list[Reading]:
        return await asyncio.to_thread(self.history, provider, zone, span)

    def wrap(self, provider: Provider) -> CachedProvider:
        """``provider`` behind this cache, still a Provider."""
        return CachedProvider(provider, self)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Stop refreshing ahead (follow_grid); lookups still work, as without it."""
        with self._lock:
            refresher, self.follow_grid = self._refresher, False
        if refresher is not None:
            refresher.stop()

    def _get(
        self,
        provider: Provider,
        zone: str,
        kind: str,
        call: Callable[[], Any],
        ttl: float | Callable[[Any], float] | None = None,
    ) -> Any:
        return self._lookup((cache_key(provider), zone, kind), call, ttl, asked=True)

    def _lookup(
        self,
        key: tuple[str, str, str],
        call: Callable[[], Any],
        ttl: float | Callable[[Any], float] | None = None,
        asked: bool = False,
    ) -> Any:
        """``asked``: a caller wants it (not a refresh-ahead), which keeps refreshes going.
        ``ttl`` may depend on the value fetched (a callable given it)."""
        _, zone, kind = key
        with self._lock:
            now = self._clock()
            if asked and self.follow_grid:
                self._asked[key] = now
            entry = self._entries.get(key)
            if entry is not None and entry.expires > now:
                self.hits += 1
                return _unwrap(entry)
            previous = entry.value if entry is not None else None
            future = self._inflight.get(key)
            leader = future is None
            if leader:
                future = Future()
                self._inflight[key] = future
                self.misses += 1
            else:
                self.hits += 1
        if not leader:
            return future.result()  # re-raises the leader's error
        try:
            value = call()
        except ProviderError as exc:
            self._settle(key, _Entry(self._clock() + self.error_ttl, error=exc))
            future.set_exception(exc)
            raise
        except BaseException as exc:  # a bug, not an answer: do not cache it
            self._settle(key, None)
            future.set_exception(exc)
            raise
        lifetime = self.ttl if ttl is None else ttl(value) if callable(ttl) else ttl
        if kind == "latest" and self.follow_grid:
            lifetime, for_new_reading = self._phase(key, value)
            if for_new_reading:
                self._refresh_at(key, call, lifetime)
        self._settle(key, _Entry(self._clock() + lifetime, value=value))
        future.set_result(value)
        if kind == "latest" and self._on_new_reading is not None and _changed(previous, value):
            self._on_new_reading(zone)
        return value

    def _settle(self, key: tuple[str, str, str], entry: _Entry | None) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            if entry is None:
                return
            self._entries[key] = entry
            if len(self._entries) > _PRUNE_ABOVE:
                now = self._clock()
                for stale in [k for k, e in self._entries.items() if e.expires <= now]:
                    del self._entries[stale]
                    self._cadences.pop(stale, None)
                    self._asked.pop(stale, None)

    # -- following the readings' grid (follow_grid) ---------------------------------------------
    def _phase(self, key: tuple[str, str, str], reading: Reading) -> tuple[float, bool]:
        """Learn from ``reading``; how long its entry should live, and whether it then makes
        way for the zone's next reading (then the cache fetches that one itself)."""
        now = datetime.fromtimestamp(self._wall(), UTC)
        with self._lock:
            cadence = self._cadences.get(key) or Cadence(lag_s=self._first_lag)
            cadence = observe(cadence, reading.timestamp, now, min(_MAX_LAG_S, self.ttl / 2))
            self._cadences[key] = cadence
        return next_poll(cadence, now, self.ttl)

    def _refresh_at(self, key: tuple[str, str, str], call: Callable[[], Any], delay: float) -> None:
        with self._lock:
            if self._refresher is None:
                self._refresher = _Refresher(self._refresh)
            refresher = self._refresher
        refresher.schedule(delay, (key, call))

    def _refresh(self, job: tuple[tuple[str, str, str], Callable[[], Any]]) -> None:
        """The refresh-ahead fetch: only if the entry has expired, nobody is fetching it and
        somebody asked for the zone lately (else the zone's jobs are gone: let it lapse)."""
        key, call = job
        with self._lock:
            entry, now, asked = self._entries.get(key), self._clock(), self._asked.get(key)
            if (
                key in self._inflight
                or (entry is not None and entry.expires > now)
                or asked is None
                or now - asked >= _REFRESH_WHILE_ASKED_S
            ):
                return
        with contextlib.suppress(ProviderError):  # cached for error_ttl: the jobs back off
            self._lookup(key, call)


def _changed(previous: Reading | None, reading: Reading) -> bool:
    """A reading after a first one that says something new (its time or its value)."""
    if previous is None:
        return False  # the zone's first reading: its jobs are reading it already
    return (previous.timestamp, previous.intensity) != (reading.timestamp, reading.intensity)


def _unwrap(entry: _Entry) -> Any:
    if entry.error is not None:
        raise entry.error
    return entry.value


class _Refresher:
    """One daemon thread that runs ``fetch(job)`` at each job's time, on a few worker
    threads (one slow zone does not hold the others' refreshes back)."""

    def __init__(self, fetch: Callable[[Any], None], workers: int = 4) -> None:
        self._fetch = fetch
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh")
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        threading.Thread(target=self._run, name="refresh-ahead", daemon=True).start()

    def schedule(self, delay: float, job: Any) -> None:
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), job))
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._heap.clear()
            self._wake.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._heap)
            self._pool.submit(self._fetch, job)


class CachedProvider:
    """A Provider whose calls go through a shared ProviderCache; other attributes (such as
    a replay's ``now()`` or a chain's ``status()``) pass through to the wrapped provider."""

    def __init__(self, provider: Provider, cache: ProviderCache) -> None:
        self.inner = provider
        self.cache = cache
        self.name = provider.name

    @property
    def cache_key(self) -> str:
        return cache_key(self.inner)

    def __repr__(self) -> str:
        return f"CachedProvider({self.inner!r}, ttl={self.cache.ttl:g}s)"

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def latest(self, zone: str) -> Reading:
        return self.cache.latest(self.inner, zone)

    def forecast(self, zone: str) -> list[Reading]:
        return self.cache.forecast(self.inner, zone)

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        return self.cache.history(self.inner, zone, span)

    def seed_history(self, zone: str, span: timedelta, ttl_seconds: float) -> SeedHistory:
        return self.cache.seed_history(self.inner, zone, span, ttl_seconds)
