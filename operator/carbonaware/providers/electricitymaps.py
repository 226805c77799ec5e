"""Electricity Maps API v3: ``carbon-intensity/latest``, ``/history``, ``/past-range`` and
``/forecast``.

History: the last 24 h come from ``/history``; a longer span from ``/past-range``, which the
API caps at 10 days (240 hours) per call at hourly granularity, so longer spans are paged.

Authentication is the ``auth-token`` header. Every call sends
``shouldUseFallbackCallerLookup=false`` (the switch the v3 documentation names) so that a zone
the API does not know is an error rather than silently the caller's own country. Any zone key
works (``CN``, ``GB``, ``US-CAL-CISO``, ...). ``emissionFactorType`` asks for direct (default
here) or life-cycle factors.

HTTP 401 has two meanings, told apart by the body (docs/providers.md): ``{"error": "Invalid
auth-token"}`` is a rejected token (AuthError); ``{"error": "Request unauthorized for
zoneKey=DE,requestType=forecast,...", "message": "You do not have access to this specific
endpoint for this specific zone..."}`` is a plan without that endpoint or zone
(ForecastNotInPlanError, ZoneNotInPlanError, NotInPlanError by endpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from carbonaware.core.model import Basis, Reading, utc
from carbonaware.providers.base import (
    DEFAULT_HISTORY,
    AuthError,
    ForecastNotInPlanError,
    NoForecastError,
    NotInPlanError,
    ProviderError,
    ProviderUnavailableError,
    UnknownZoneError,
    ZoneNotInPlanError,
)
from carbonaware.providers.http import get_json, make_session, range_pages

DEFAULT_BASE_URL = "https://api.electricitymaps.com"
PAST_RANGE_LIMIT = timedelta(hours=240)  # the API's cap on one past-range call (hourly)
# What the plan lacks, per endpoint: the error to raise and what it means for the user.
_NOT_IN_PLAN: dict[str, tuple[type[ProviderError], str]] = {
    "latest": (
        ZoneNotInPlanError,
        "your Electricity Maps plan does not include this zone (the token itself was "
        "accepted; a free account covers only the zone(s) its plan lists in the portal)",
    ),
    "forecast": (
        ForecastNotInPlanError,
        "your Electricity Maps plan does not include the forecast for this zone (free "
        "accounts get latest and the last 24 h only)",
    ),
    "history": (
        NotInPlanError,
        "your Electricity Maps plan does not include the last 24 h for this zone",
    ),
    "past-range": (
        NotInPlanError,
        "your Electricity Maps plan does not include past-range (history beyond 24 h)",
    ),
}
_BAD_TOKEN = (
    "the token was rejected: check ELECTRICITYMAPS_TOKEN (or the file it names, or the "
    "Secret's token)"
)


class ElectricityMapsProvider:
    name = "electricitymaps"

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,
        basis: Basis = Basis.DIRECT,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if basis not in (Basis.DIRECT, Basis.LIFECYCLE):
            raise ValueError(f"Electricity Maps serves direct or lifecycle factors, not {basis}")
        self._token = token
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.basis = basis
        self.timeout = timeout
        self._session = session or make_session()
        self._clock = clock

    @property
    def cache_key(self) -> str:
        return f"electricitymaps:{self.base_url}:{self.basis.value}"

    def __repr__(self) -> str:  # never the token
        return f"ElectricityMapsProvider(base_url={self.base_url!r}, basis={self.basis.value})"

    def latest(self, zone: str) -> Reading:
        body = self._get("latest", zone)
        reading = self._reading(zone, _require_dict(body, zone), forecast=False)
        if reading is None:
            raise ProviderUnavailableError(self.name, zone, "no current value (null)")
        return reading

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        if span <= DEFAULT_HISTORY:
            points = _require_list(self._get("history", zone), "history", zone)
        else:
            now = datetime.fromtimestamp(self._clock(), tz=UTC)
            points = []
            for start, end in range_pages(now - span, now, PAST_RANGE_LIMIT):
                body = self._get("past-range", zone, start=_iso(start), end=_iso(end))
                points += _require_list(body, "data", zone)
        # pages may meet at a shared hour: one reading per timestamp
        readings = {r.timestamp: r for p in points if (r := self._reading(zone, p, forecast=False))}
        return sorted(readings.values(), key=lambda r: r.timestamp)

    def forecast(self, zone: str) -> list[Reading]:
        body = self._get("forecast", zone)
        points = _require_list(body, "forecast", zone)
        if not points:
            raise NoForecastError(self.name, zone, "the forecast came back empty")
        readings = [r for p in points if (r := self._reading(zone, p, forecast=True))]
        return sorted(readings, key=lambda r: r.timestamp)

    def _get(self, kind: str, zone: str, **extra: str) -> Any:
        def classify(status: int, message: str):
            text = message.lower()
            if status == 404 or (status == 400 and "zone" in text):
                return UnknownZoneError
            if status in (401, 403) and _not_in_plan(text):
                return _NOT_IN_PLAN[kind]
            if status in (401, 403):
                return AuthError, _BAD_TOKEN
            return None

        return get_json(
            self._session,
            f"{self.base_url}/v3/carbon-intensity/{kind}",
            provider=self.name,
            zone=zone,
            timeout=self.timeout,
            params={
                "zone": zone,
                "shouldUseFallbackCallerLookup": "false",
                "emissionFactorType": self.basis.value,
                **extra,
            },
            headers={"auth-token": self._token},
            secrets=[self._token],
            classify=classify,
        )

    def _reading(self, zone: str, point: Any, *, forecast: bool) -> Reading | None:
        """The reading in ``point``; None where the API has no value (``null``) for it."""
        try:
            intensity = point["carbonIntensity"]
            if intensity is None:
                return None
            basis = {"direct": Basis.DIRECT, "lifecycle": Basis.LIFECYCLE}.get(
                point.get("emissionFactorType") or "", self.basis
            )
            return Reading(
                zone=zone,
                timestamp=_parse_time(point["datetime"]),
                intensity=float(intensity),
                basis=basis,
                forecast=forecast,
                estimated=bool(point.get("isEstimated", False)),
                provider=self.name,
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ProviderUnavailableError(
                self.name, zone, f"unexpected response shape ({type(exc).__name__}: {exc})"
            ) from None


def _not_in_plan(text: str) -> bool:
    """The body of a 401 that is about the plan, not the token."""
    return "do not have access" in text or "request unauthorized for zonekey" in text


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    return utc(datetime.fromisoformat(str(text).replace("Z", "+00:00")))


def _require_dict(body: Any, zone: str) -> dict:
    if not isinstance(body, dict):
        raise ProviderUnavailableError(
            ElectricityMapsProvider.name, zone, "unexpected response shape (not an object)"
        )
    return body


def _require_list(body: Any, key: str, zone: str) -> list:
    points = _require_dict(body, zone).get(key)
    if not isinstance(points, list):
        raise ProviderUnavailableError(
            ElectricityMapsProvider.name, zone, f"unexpected response shape (no {key!r} list)"
        )
    return points
