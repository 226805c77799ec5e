"""WattTime API v3: marginal operating emissions rate (``co2_moer``) for a grid region.

``GET /login`` with HTTP basic auth returns a bearer token (valid about 30 minutes); it is
fetched lazily and fetched again once when a call answers 401. ``/v3/historical`` gives the
past (the latest reading is its last point), ``/v3/forecast`` the next 48 hours. Values come
in lbs CO2/MWh and are converted to g/kWh (1 lb/MWh = 0.453592 g/kWh). Zones are WattTime
region codes such as ``CAISO_NORTH``. The basis is always marginal.
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
    NoForecastError,
    ProviderError,
    ProviderUnavailableError,
    UnknownZoneError,
)
from carbonaware.providers.http import get_json, make_session

DEFAULT_BASE_URL = "https://api.watttime.org"
LBS_PER_MWH_TO_G_PER_KWH = 0.453592
_TO_G_PER_KWH = {
    "lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "kg_co2_per_mwh": 1.0,
    "g_co2_per_kwh": 1.0,
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
        readings = self._historical(zone, timedelta(hours=1))
        if not readings:
            raise ProviderUnavailableError(self.name, zone, "no data in the last hour")
        return readings[-1]

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        return self._historical(zone, span)

    def forecast(self, zone: str) -> list[Reading]:
        body = self._get(
            "/v3/forecast",
            zone,
            {"region": zone, "signal_type": self.signal_type, "horizon_hours": 48},
            forecast=True,
        )
        readings = self._readings(zone, body, forecast=True)
        if not readings:
            raise NoForecastError(self.name, zone, "the forecast came back empty")
        return readings

    # --- helpers ------------------------------------------------------------------------

    def _historical(self, zone: str, window: timedelta) -> list[Reading]:
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        params = {
            "region": zone,
            "signal_type": self.signal_type,
            "start": _iso(now - window),
            "end": _iso(now),
        }
        return self._readings(zone, self._get("/v3/historical", zone, params), forecast=False)

    def _get(self, path: str, zone: str, params: dict, *, forecast: bool = False) -> Any:
        def classify(status: int, message: str) -> type[ProviderError] | None:
            text = message.lower()
            if status == 404 or (status == 400 and "region" in text):
                return UnknownZoneError
            if forecast and status == 403 and "forecast" in text:
                return NoForecastError
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
                    classify=lambda status, _: AuthError if status in (400, 401, 403) else None,
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
