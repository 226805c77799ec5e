"""WattTime API v3: marginal operating emissions rate (``co2_moer``) for a grid region.

``GET /login`` with HTTP basic auth returns a bearer token (valid about 30 minutes); it is
fetched lazily and fetched again once when a call answers 401. ``/v3/historical`` gives the
past (paged: the API caps one call at 32 days; pages of 30 days as WattTime's own client
cuts them), ``/v3/forecast`` the next 48 hours, and the latest reading is the forecast's
first point (``horizon_hours=0``), as WattTime's v3 transition guide advises for real-time
use: ``historical`` lags by up to a few hours in some regions. Values come in lbs CO2/MWh
and are converted to g/kWh (1 lb/MWh = 0.453592 g/kWh). Zones are WattTime region codes such
as ``CAISO_NORTH``. The basis is always marginal.

A 403 after a good login is the plan, not the password: free accounts get ``historical``
and ``forecast`` for CAISO_NORTH only. Such a region is refused (ZoneNotInPlanError) with a
message that says so; ``/v3/signal-index`` (a percentile, free everywhere) is not used,
because the product's thresholds and accounting are in g/kWh (docs/providers.md).
"""

from __future__ import annotations

import threading
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

DEFAULT_BASE_URL = "https://api.watttime.org"
LBS_PER_MWH_TO_G_PER_KWH = 0.453592
_TO_G_PER_KWH = {
    "lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "kg_co2_per_mwh": 1.0,
    "g_co2_per_kwh": 1.0,
}
_BAD_LOGIN = "the login was refused: check WATTTIME_USERNAME and WATTTIME_PASSWORD"
HISTORICAL_PAGE = timedelta(days=30)  # the API caps one historical call at 32 days
_PLAN = (
    "your WattTime plan does not include {what} for this region (the login worked; free "
    "accounts get historical and forecast data for CAISO_NORTH only, elsewhere only a "
    "percentile from /v3/signal-index, which is not g/kWh and is not used here)"
)
_NOT_IN_PLAN: dict[str, tuple[type[ProviderError], str]] = {
    "latest": (ZoneNotInPlanError, _PLAN.format(what="current data")),
    "forecast": (ForecastNotInPlanError, _PLAN.format(what="the forecast")),
    "historical": (NotInPlanError, _PLAN.format(what="historical data")),
}


class WattTimeProvider:
    name = "watttime"

    def __init__(
        self,
        username: str,
        password: str,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        signal_type: str = "co2_moer",
    ) -> None:
        self._username = username
        self._password = password
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.signal_type = signal_type
        self._session = session or make_session()
        self._clock = clock
        self._token: str | None = None
        self._token_lock = threading.Lock()

    @property
    def cache_key(self) -> str:
        return f"watttime:{self.base_url}:{self.signal_type}"

    def __repr__(self) -> str:  # never the credentials or the token
        return f"WattTimeProvider(base_url={self.base_url!r}, signal_type={self.signal_type!r})"

    # --- Provider -----------------------------------------------------------------------

    def latest(self, zone: str) -> Reading:
        """The forecast's first point: the current value, never behind like historical."""
        readings = self._forecast(zone, 0, kind="latest")
        if not readings:
            raise ProviderUnavailableError(self.name, zone, "the forecast had no first point")
        return readings[0]

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        readings: dict[datetime, Reading] = {}  # pages meet at a shared point: one each
        for start, end in range_pages(now - span, now, HISTORICAL_PAGE):
            params = {
                "region": zone,
                "signal_type": self.signal_type,
                "start": _iso(start),
                "end": _iso(end),
            }
            body = self._get("/v3/historical", zone, params, kind="historical")
            readings.update((r.timestamp, r) for r in self._readings(zone, body, forecast=False))
        return sorted(readings.values(), key=lambda r: r.timestamp)

    def forecast(self, zone: str) -> list[Reading]:
        readings = self._forecast(zone, 48, kind="forecast")
        if not readings:
            raise NoForecastError(self.name, zone, "the forecast came back empty")
        return readings

    # --- helpers ------------------------------------------------------------------------

    def _forecast(self, zone: str, hours: int, *, kind: str) -> list[Reading]:
        """``/v3/forecast`` over ``hours``; its points are the future unless ``kind`` is
        latest (then the first is the current value)."""
        params = {"region": zone, "signal_type": self.signal_type, "horizon_hours": hours}
        body = self._get("/v3/forecast", zone, params, kind=kind)
        return self._readings(zone, body, forecast=kind == "forecast")

    def _get(self, path: str, zone: str, params: dict, *, kind: str) -> Any:
        def classify(status: int, message: str):
            text = message.lower()
            if status == 404 or (status == 400 and "region" in text):
                return UnknownZoneError
            if status == 403:  # the login just worked: the plan, not the password
                return _NOT_IN_PLAN[kind]
            return None

        for attempt in (1, 2):
            token = self._bearer(zone, renew=attempt == 2)
            try:
                return get_json(
                    self._session,
                    self.base_url + path,
                    provider=self.name,
                    zone=zone,
                    timeout=self.timeout,
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    secrets=[token, self._password],
                    classify=classify,
                )
            except AuthError as exc:
                if exc.status != 401 or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _bearer(self, zone: str, *, renew: bool) -> str:
        """The cached login token; a fresh one when ``renew`` (after a 401) or none yet."""
        with self._token_lock:
            if self._token is None or renew:
                body = get_json(
                    self._session,
                    f"{self.base_url}/login",
                    provider=self.name,
                    zone=zone,
                    timeout=self.timeout,
                    auth=(self._username, self._password),
                    secrets=[self._password],
                    classify=lambda status, _: (
                        (AuthError, _BAD_LOGIN) if status in (400, 401, 403) else None
                    ),
                )
                token = body.get("token") if isinstance(body, dict) else None
                if not token:
                    raise ProviderUnavailableError(self.name, zone, "login returned no token")
                self._token = str(token)
            return self._token

    def _readings(self, zone: str, body: Any, *, forecast: bool) -> list[Reading]:
        try:
            units = str(body.get("meta", {}).get("units") or "lbs_co2_per_mwh")
            if units not in _TO_G_PER_KWH:
                raise ValueError(f"unknown units {units!r}")
            factor = _TO_G_PER_KWH[units]
            readings = [
                Reading(
                    zone=zone,
                    timestamp=utc(datetime.fromisoformat(p["point_time"].replace("Z", "+00:00"))),
                    intensity=float(p["value"]) * factor,
                    basis=Basis.MARGINAL,
                    forecast=forecast,
                    provider=self.name,
                )
                for p in body["data"]
            ]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ProviderUnavailableError(
                self.name, zone, f"unexpected response shape ({type(exc).__name__}: {exc})"
            ) from None
        return sorted(readings, key=lambda r: r.timestamp)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
