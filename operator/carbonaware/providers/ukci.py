"""The UK Carbon Intensity API (api.carbonintensity.org.uk, NESO): no key, half-hourly.

Zones:

- ``GB``: national (``/intensity``, ``/intensity/{from}/fw48h``, ``/intensity/{from}/pt24h``);
- ``GB-<regionid>``, e.g. ``GB-13`` (London), region ids 1-17 as the API numbers them
  (``/regional/regionid/{id}``, ``/regional/intensity/{from}/fw48h/regionid/{id}``, ...);
- ``GB-<outward postcode>``, e.g. ``GB-RG10`` (``/regional/postcode/{postcode}``, ...).

National periods carry an ``actual`` once measured; while it is null the ``forecast`` is used
and the reading is marked estimated. Regional figures are forecasts only, so regional past and
current readings are always marked estimated. The API's factors are direct (generation only).

History: the last 24 h come from the ``pt24h`` window; a longer span from the
``{from}/{to}`` range, which the API caps at 14 days per call, so longer spans are paged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from carbonaware.core.model import Basis, Reading, utc
from carbonaware.providers.base import (
    DEFAULT_HISTORY,
    NoForecastError,
    ProviderError,
    ProviderUnavailableError,
    UnknownZoneError,
)
from carbonaware.providers.http import get_json, make_session, range_pages

DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"
REGION_IDS = range(1, 18)
RANGE_LIMIT = timedelta(days=14)  # the API's cap on one {from}/{to} call
_OUTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]?$")


class UKCarbonIntensityProvider:
    name = "ukci"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self._session = session or make_session()
        self._clock = clock

    @property
    def cache_key(self) -> str:
        return f"ukci:{self.base_url}"

    def __repr__(self) -> str:
        return f"UKCarbonIntensityProvider(base_url={self.base_url!r})"

    # --- Provider -----------------------------------------------------------------------

    def latest(self, zone: str) -> Reading:
        scope = _scope(zone)
        path = "/intensity" if scope == "" else f"/regional/{scope}"
        readings = self._readings(zone, self._get(path, zone), forecast=False)
        if not readings:
            raise ProviderUnavailableError(self.name, zone, "no current half-hour in the answer")
        return readings[-1]

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        if span <= DEFAULT_HISTORY:
            return self._readings(zone, self._get(self._window_path(zone, "pt24h"), zone), False)
        now = self._now()
        readings: dict[datetime, Reading] = {}  # pages meet at a shared half hour: one each
        for start, end in range_pages(now - span, now, RANGE_LIMIT):
            page = self._readings(zone, self._get(self._range_path(zone, start, end), zone), False)
            readings.update((r.timestamp, r) for r in page)
        return sorted(readings.values(), key=lambda r: r.timestamp)

    def forecast(self, zone: str) -> list[Reading]:
        body = self._get(self._window_path(zone, "fw48h"), zone)
        readings = self._readings(zone, body, forecast=True)
        if not readings:
            raise NoForecastError(self.name, zone, "the 48 h forecast came back empty")
        return readings

    # --- helpers ------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    def _window_path(self, zone: str, window: str) -> str:
        scope = _scope(zone)
        start = self._now().strftime("%Y-%m-%dT%H:%MZ")
        if scope == "":
            return f"/intensity/{start}/{window}"
        return f"/regional/intensity/{start}/{window}/{scope}"

    def _range_path(self, zone: str, start: datetime, end: datetime) -> str:
        scope = _scope(zone)
        span = f"{start:%Y-%m-%dT%H:%MZ}/{end:%Y-%m-%dT%H:%MZ}"
        return f"/intensity/{span}" if scope == "" else f"/regional/intensity/{span}/{scope}"

    def _get(self, path: str, zone: str) -> Any:
        regional = path.startswith("/regional")

        def classify(status: int, message: str) -> type[ProviderError] | None:
            if regional and status in (400, 404):
                return UnknownZoneError  # the API answers 400 for an unknown region/postcode
            return None

        body = get_json(
            self._session,
            self.base_url + path,
            provider=self.name,
            zone=zone,
            timeout=self.timeout,
            classify=classify,
        )
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            raise (UnknownZoneError if regional else ProviderUnavailableError)(
                self.name, zone, f"{error.get('code', 'error')}: {error.get('message', '')}"
            )
        return body

    def _readings(self, zone: str, body: Any, forecast: bool) -> list[Reading]:
        now = self._now()
        try:
            readings = [
                r
                for point in _periods(body)
                if (r := self._reading(zone, point, forecast=forecast, now=now)) is not None
            ]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ProviderUnavailableError(
                self.name, zone, f"unexpected response shape ({type(exc).__name__}: {exc})"
            ) from None
        return sorted(readings, key=lambda r: r.timestamp)

    def _reading(self, zone: str, point: dict, *, forecast: bool, now: datetime) -> Reading | None:
        intensity = point["intensity"]
        start = utc(datetime.fromisoformat(point["from"].replace("Z", "+00:00")))
        actual, predicted = intensity.get("actual"), intensity.get("forecast")
        if forecast:
            value, estimated = predicted, False
        elif actual is not None:
            value, estimated = actual, False
        else:
            value, estimated = predicted, True
        if value is None:
            return None
        return Reading(
            zone=zone,
            timestamp=start,
            intensity=float(value),
            basis=Basis.DIRECT,
            forecast=forecast or start > now,
            estimated=estimated,
            provider=self.name,
        )


def _scope(zone: str) -> str:
    """'' for national, else the regional path tail (``regionid/13``, ``postcode/RG10``)."""
    text = (zone or "").strip().upper()
    if text in ("GB", "UK"):
        return ""
    if text.startswith(("GB-", "UK-")):
        rest = text[3:]
        if rest.isdigit() and int(rest) in REGION_IDS:
            return f"regionid/{int(rest)}"
        if _OUTCODE.match(rest):
            return f"postcode/{rest}"
    raise UnknownZoneError(
        UKCarbonIntensityProvider.name,
        zone,
        "UK Carbon Intensity zones are GB (national), GB-<region id 1-17> (e.g. GB-13 for "
        "London) or GB-<outward postcode> (e.g. GB-RG10)",
    )


def _periods(body: Any) -> list[dict]:
    """The half-hour periods in any of the API's shapes (national list, regional nesting)."""
    data = body["data"]
    if isinstance(data, dict):  # regional time range for one region: {"data": {..., "data": []}}
        data = [data]
    periods: list[dict] = []
    for item in data:
        if "intensity" in item:  # national: a list of periods
            periods.append(item)
        elif "data" in item:  # regional: region objects holding periods
            periods.extend(item["data"])
        elif "regions" in item:  # all regions at once: not used for one zone
            raise ValueError("answer covers all regions, not one")
        else:
            raise KeyError("intensity")
    return periods
