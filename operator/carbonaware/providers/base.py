"""The one small interface every carbon-intensity source implements, and its typed errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, runtime_checkable

# The project-wide user error lives in core; providers raise it, callers import it here too.
from carbonaware.core.errors import ConfigError as ConfigError
from carbonaware.core.model import Reading

# What ``history`` returns unless asked for more: the last day, every API's basic window.
DEFAULT_HISTORY = timedelta(hours=24)


class ProviderError(Exception):
    """A provider call failed. Says which provider, zone and (when HTTP) status failed.

    Messages never include credentials. ``meaning`` is what the failure means for the user,
    in the project's words, when the client could tell (the message starts with it).
    """

    meaning: str = ""

    def __init__(
        self, provider: str, zone: str | None, message: str, status: int | None = None
    ) -> None:
        self.provider = provider
        self.zone = zone
        self.status = status
        self.detail = message
        where = f"{provider}" + (f" zone {zone!r}" if zone else "")
        code = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{where}: {message}{code}")


class AuthError(ProviderError):
    """Missing or rejected credentials (HTTP 401/403)."""


class UnknownZoneError(ProviderError):
    """The provider does not know the zone (e.g. HTTP 404, or a zone it does not cover)."""


class RateLimitedError(ProviderError):
    """HTTP 429 that outlasted the retries; ``retry_after`` is seconds, when the server said."""

    def __init__(self, *args, retry_after: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """Timeouts, connection errors, 5xx, malformed responses: worth retrying later."""


class NoForecastError(ProviderError):
    """This provider (or plan) offers no forecast for the zone."""


class NotInPlanError(ProviderError):
    """The credentials were accepted, but the account's plan does not include this endpoint
    for this zone (Electricity Maps: 401 "You do not have access to this specific endpoint
    for this specific zone"; WattTime: 403 on a data endpoint after a good login). Upgrading
    the plan, not changing the token or password, is the fix; the message says so."""


class ForecastNotInPlanError(NotInPlanError, NoForecastError):
    """The plan has no forecast for the zone: every consumer of NoForecastError falls back
    (the own forecaster, "forecast: none") as it would for a provider without forecasts."""


class ZoneNotInPlanError(NotInPlanError, UnknownZoneError):
    """The plan does not cover the zone's current readings at all: the zone is unusable
    with this account, so consumers refuse it as they refuse an unknown zone (the operator
    fails the job at once, the CLI exits 2), with the plan named as the limit."""


@runtime_checkable
class Provider(Protocol):
    """A source of carbon-intensity readings for zones."""

    name: str

    def latest(self, zone: str) -> Reading:
        """The most recent reading for ``zone``."""
        ...

    def forecast(self, zone: str) -> list[Reading]:
        """Readings predicted for the future (``forecast=True``); raises NoForecastError."""
        ...

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        """Past readings from ``span`` before now up to now, oldest first (as far back as the
        source reaches: a trace that starts later gives less)."""
        ...
