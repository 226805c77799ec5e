"""UK Carbon Intensity client against a real loopback server, fed from the real half-hourly
GB trace (lets-wait-awhile gb_ci.csv) in the API's documented shapes."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from carbonaware.core.model import Basis
from carbonaware.providers.base import ProviderUnavailableError, UnknownZoneError
from carbonaware.providers.http import make_session
from carbonaware.providers.ukci import UKCarbonIntensityProvider
from carbonaware.traces import load_trace
from provider_bodies import ukci_error
from werkzeug import Response

NOW = datetime(2020, 6, 1, 12, 10, tzinfo=UTC)
FROM = "2020-06-01T12:10Z"
HALF_HOUR = pd.Timedelta(minutes=30)
START = pd.Timestamp(NOW).floor("30min")  # the current half-hour


@pytest.fixture(scope="module")
def gb(traces_dir):
    return load_trace(traces_dir / "lets-wait-awhile" / "gb_ci.csv").series


@pytest.fixture
def ukci(httpserver):
    return UKCarbonIntensityProvider(
        base_url=httpserver.url_for("/"),
        timeout=2,
        session=make_session(backoff_factor=0.01),
        clock=NOW.timestamp,
    )


def period(start: pd.Timestamp, forecast: float, actual=None) -> dict:
    """One half-hour as the API writes it; ``actual=...`` leaves the field out (regional)."""
    intensity = {"forecast": round(forecast), "index": "moderate"}
    if actual is not ...:
        intensity["actual"] = None if actual is None else round(actual)
    return {
        "from": start.strftime("%Y-%m-%dT%H:%MZ"),
        "to": (start + HALF_HOUR).strftime("%Y-%m-%dT%H:%MZ"),
        "intensity": intensity,
    }


def region(regionid: int, periods: list[dict]) -> dict:
    return {
        "regionid": regionid,
        "dnoregion": "UKPN London",
        "shortname": "London",
        "data": periods,
    }


def test_national_latest_uses_forecast_while_actual_is_null(httpserver, ukci, gb):
    start = START
    httpserver.expect_request("/intensity").respond_with_json(
        {"data": [period(start, gb[start] + 7, None)]}
    )
    reading = ukci.latest("GB")
    assert reading.timestamp == start.to_pydatetime()
    assert reading.intensity == round(gb[start] + 7)
    assert reading.estimated and not reading.forecast
    assert reading.basis == Basis.DIRECT and reading.provider == "ukci"


def test_national_history_uses_actuals(httpserver, ukci, gb):
    start = START
    past = gb[start - 47 * HALF_HOUR : start]
    httpserver.expect_request(f"/intensity/{FROM}/pt24h").respond_with_json(
        {"data": [period(t, v + 10, v) for t, v in past.items()]}
    )
    history = ukci.history("GB")
    assert len(history) == 48
    assert [r.intensity for r in history] == [round(v) for v in past]
    assert not any(r.estimated or r.forecast for r in history)


def test_national_forecast_is_48_hours(httpserver, ukci, gb):
    start = START
    future = gb[start : start + 95 * HALF_HOUR]
    httpserver.expect_request(f"/intensity/{FROM}/fw48h").respond_with_json(
        {"data": [period(t, v, None) for t, v in future.items()]}
    )
    forecast = ukci.forecast("GB")
    assert len(forecast) == 96 and all(r.forecast for r in forecast)
    assert forecast[-1].timestamp == (start + 95 * HALF_HOUR).to_pydatetime()


def test_regional_latest_forecast_and_postcode(httpserver, ukci, gb):
    start = START
    httpserver.expect_request("/regional/regionid/13").respond_with_json(
        {"data": [region(13, [period(start, gb[start], ...)])]}
    )
    future = gb[start : start + 95 * HALF_HOUR]
    # The time-range answer for one region nests one region object under "data".
    httpserver.expect_request(f"/regional/intensity/{FROM}/fw48h/regionid/13").respond_with_json(
        {"data": region(13, [period(t, v, ...) for t, v in future.items()])}
    )
    httpserver.expect_request(f"/regional/intensity/{FROM}/pt24h/postcode/RG10").respond_with_json(
        {"data": [region(12, [period(start - HALF_HOUR, 150, ...), period(start, 140, ...)])]}
    )
    latest = ukci.latest("GB-13")
    assert latest.zone == "GB-13" and latest.estimated  # regional figures are forecasts only
    assert latest.intensity == round(gb[start])
    assert len(ukci.forecast("GB-13")) == 96
    history = ukci.history("gb-rg10")
    assert [r.intensity for r in history] == [150, 140] and all(r.estimated for r in history)


def test_unknown_zones(httpserver, ukci):
    with pytest.raises(UnknownZoneError, match="GB-<region id 1-17>"):
        ukci.latest("DE")
    with pytest.raises(UnknownZoneError):
        ukci.latest("GB-99")
    assert httpserver.log == []  # rejected without a request
    httpserver.expect_request("/regional/postcode/ZZ9").respond_with_json(
        ukci_error("400 Bad Request", "Please enter a valid postcode"),
        status=400,
    )
    with pytest.raises(UnknownZoneError) as info:
        ukci.latest("GB-ZZ9")
    assert "ukci zone 'GB-ZZ9'" in str(info.value) and "HTTP 400" in str(info.value)
    assert "valid postcode" in str(info.value)


def test_rate_limit_server_errors_and_bad_json(httpserver, ukci, gb):
    start = START
    httpserver.expect_ordered_request("/intensity").respond_with_response(
        Response("", status=429, headers={"Retry-After": "1"})
    )
    httpserver.expect_ordered_request("/intensity").respond_with_json(
        {"data": [period(start, 100, 90)]}
    )
    began = time.monotonic()
    assert ukci.latest("GB").intensity == 90
    assert time.monotonic() - began >= 1.0 and len(httpserver.log) == 2
    httpserver.clear()
    httpserver.expect_request("/intensity").respond_with_json(
        ukci_error("500 Internal Server Error", "x"), status=500
    )
    with pytest.raises(ProviderUnavailableError, match="HTTP 500"):
        ukci.latest("GB")
    assert len(httpserver.log) == 4
    httpserver.clear()
    httpserver.expect_request("/intensity").respond_with_data("<html>gateway</html>")
    with pytest.raises(ProviderUnavailableError, match="malformed JSON"):
        ukci.latest("GB")


def test_timeout(httpserver, gb):
    def slow(_request):
        time.sleep(0.6)
        return Response('{"data": []}', content_type="application/json")

    httpserver.expect_request("/intensity").respond_with_handler(slow)
    provider = UKCarbonIntensityProvider(base_url=httpserver.url_for("/"), timeout=0.2)
    with pytest.raises(ProviderUnavailableError, match=r"ukci zone 'GB': no answer within 0\.2s"):
        provider.latest("GB")
    time.sleep(0.5)


def range_from(gb: pd.Series, requests: list[str]):
    """A ``{from}/{to}`` handler, national or regional, serving the real trace for
    ``[from, to]`` (both ends, so consecutive pages share a half hour); records each path."""

    def handle(request):
        requests.append(request.path)
        start, end = bounds(request.path)
        if request.path.startswith(
            "/regional"
        ):  # regional figures are forecasts; one region object
            body = {"data": region(13, [period(t, v, ...) for t, v in gb[start:end].items()])}
        else:
            body = {"data": [period(t, v + 10, v) for t, v in gb[start:end].items()]}
        return Response(json.dumps(body), 200, content_type="application/json")

    return handle


def bounds(path: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The ``{from}`` and ``{to}`` of a range path, national or regional."""
    parts = path.split("/")
    at = parts.index("intensity")
    return pd.Timestamp(parts[at + 1]), pd.Timestamp(parts[at + 2])


@pytest.mark.parametrize("zone, days, pages", [("GB", 8, 1), ("GB", 20, 2), ("GB-13", 30, 3)])
def test_a_longer_history_pages_the_range_within_its_14_day_cap(
    httpserver, ukci, gb, zone, days, pages
):
    requests: list[str] = []
    prefix = "/intensity/" if zone == "GB" else "/regional/intensity/"
    handler = range_from(gb, requests)
    httpserver.expect_request(re.compile("^" + prefix)).respond_with_handler(handler)
    history = ukci.history(zone, timedelta(days=days))
    assert len(requests) == pages
    spans = [bounds(path) for path in requests]
    assert all(end - start <= pd.Timedelta(days=14) for start, end in spans)
    now = pd.Timestamp(NOW)
    assert spans[0][0] == now - pd.Timedelta(days=days) and spans[-1][1] == now
    if zone == "GB-13":
        assert requests[0].endswith("/regionid/13")
    expected = gb[now - pd.Timedelta(days=days) : now]
    assert [r.timestamp for r in history] == [t.to_pydatetime() for t in expected.index]
    if zone == "GB":  # the measured actuals; no half hour twice
        assert [r.intensity for r in history] == [round(v) for v in expected]
    else:
        assert all(r.estimated for r in history)


def test_an_error_object_in_a_200_is_still_an_error(httpserver, ukci):
    """The API documents its error object with 400/500; a 200 that carries one (not
    documented, seen from caches and gateways) is not read as data."""
    httpserver.expect_request("/intensity").respond_with_json(
        ukci_error("500 Internal Server Error", "upstream timeout")
    )
    with pytest.raises(ProviderUnavailableError, match="upstream timeout"):
        ukci.latest("GB")
    httpserver.expect_request("/regional/postcode/ZZ9").respond_with_json(
        ukci_error("400 Bad Request", "Please enter a valid postcode")
    )
    with pytest.raises(UnknownZoneError, match="valid postcode"):
        ukci.latest("GB-ZZ9")
