"""Reading the grid for one job: the provider (through the shared cache, or a replayed trace
directly), backoff on failure, and the reading's status and conditions. Part of the
reconcile pass (kube/reconcile.py)."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timedelta

from carbonaware.core.forecast import FORECASTER_HISTORY
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.model import Reading
from carbonaware.kube import metrics
from carbonaware.kube.builders import iso
from carbonaware.kube.models import (
    CarbonAwareJobSpec,
)
from carbonaware.kube.status import (
    is_true,
    set_condition_now,
)
from carbonaware.providers.base import (
    ProviderError,
    RateLimitedError,
    UnknownZoneError,
)
from carbonaware.providers.chain import FallbackChain
from carbonaware.source import Source

MAX_BACKOFF = timedelta(minutes=10)
# The own forecaster's two weeks of history change little within an hour; the job's own
# readings fill in the recent part.
HISTORY_TTL_SECONDS = 3600.0


class Polling:
    """Tick's polling steps (uses its rt, mem, desired, generation, event, _fail)."""

    # -- polling the provider ---------------------------------------------------------------------
    def _poll(
        self, spec: CarbonAwareJobSpec, source: Source, log: IntensityLog, now: datetime
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
        source: Source,
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
        set_condition_now(
            self.desired,
            "DataStale",
            stale,
            "OldReading" if stale else "Fresh",
            f"latest reading is from {iso(reading.timestamp)} "
            f"({age.total_seconds() / 3600:.1f} h old)",
            self.generation,
        )

    def _set_provider(self, ok: bool, reason: str, message: str) -> None:
        was_ok = is_true(self.desired, "ProviderAvailable")
        set_condition_now(self.desired, "ProviderAvailable", ok, reason, message, self.generation)
        if not ok and was_ok is not False:
            self.event("ProviderUnavailable", message, warning=True)

    def _provider_down(self, message: str) -> None:
        self._set_provider(False, "ProviderUnavailable", message)
        set_condition_now(
            self.desired,
            "DataStale",
            True,
            "ProviderUnavailable",
            f"no fresh reading: {message}; retrying with backoff, the deadline still holds",
            self.generation,
        )

    def _forecaster_history(
        self, spec: CarbonAwareJobSpec, source: Source, log: IntensityLog, now: datetime
    ) -> list[Reading]:
        """The zone's past two weeks, before this job's first reading, for the policy's own
        forecaster (used when the provider has no forecast).

        Shared by every job of the zone through the provider cache and kept for an hour, not
        copied into each job's log: at 1,000 jobs the copies cost hundreds of MB and 30-40 KiB
        per log ConfigMap. Nice to have: without it the forecaster works from the job's own
        readings (and says so in the decision's reason)."""
        first = log.readings[0].timestamp if log.readings else now
        # as much of it as the plan gives (two weeks, the last day, none), and status says which
        seed = self.rt.cache.seed_history(
            source.provider, spec.zone, FORECASTER_HISTORY, HISTORY_TTL_SECONDS
        )
        self.desired["forecasterHistory"] = seed.label
        return [r for r in seed.readings if r.timestamp < first]
