"""Electricity Maps v3 client against a real loopback HTTP server (pytest-httpserver).

The server answers with the API's documented JSON shapes, filled from the real GB 2022 export.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import pandas as pd
import pytest
from carbonaware.core.model import Basis
from carbonaware.providers.base import (
    AuthError,
    ForecastNotInPlanError,
    NoForecastError,
    NotInPlanError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownZoneError,
    ZoneNotInPlanError,
)
from carbonaware.providers.electricitymaps import ElectricityMapsProvider
from carbonaware.providers.http import make_session
from carbonaware.traces import load_trace
from provider_bodies import EM_BAD_TOKEN, em_not_in_plan, em_unknown_zone
from werkzeug import Response

TOKEN = "em-tok-9f8e7d6c5b4a"
NOW = pd.Timestamp("2022-03-15 12:00", tz="UTC")
LATEST = "/v3/carbon-intensity/latest"


@pytest.fixture(scope="module")
def gb(traces_dir):
    return load_trace(traces_dir / "electricitymaps" / "GB_2022_hourly.csv").series


@pytest.fixture
def httpserver_url(httpserver):
    return httpserver.url_for("/")


@pytest.fixture
def em(httpserver):
    return ElectricityMapsProvider(
        TOKEN,
        base_url=httpserver.url_for("/"),
        timeout=2,
        session=make_session(backoff_factor=0.01),
    )


def point(zone: str, when: pd.Timestamp, value: float, basis: str = "direct") -> dict:
    return {
        "zone": zone,
        "carbonIntensity": value,
        "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "updatedAt": "2022-03-15T12:04:11.123Z",
        "createdAt": "2022-03-12T12:49:30.219Z",
        "emissionFactorType": basis,
        "isEstimated": False,
        "estimationMethod": None,
    }


def query(zone: str, basis: str = "direct") -> dict:
    return {"zone": zone, "shouldUseFallbackCallerLookup": "false", "emissionFactorType": basis}


def assert_clean_error(error: Exception, zone: str, status: int) -> None:
    text = str(error)
    assert "electricitymaps" in text and repr(zone) in text and f"HTTP {status}" in text
    assert TOKEN not in text and TOKEN not in repr(error)


def test_latest_sends_token_header_and_no_caller_lookup(httpserver, em, gb):
    httpserver.expect_request(
        LATEST, query_string=query("GB"), headers={"auth-token": TOKEN}
    ).respond_with_json(point("GB", NOW, gb[NOW]))
    reading = em.latest("GB")
    assert reading.intensity == pytest.approx(gb[NOW])
    assert reading.timestamp == NOW.to_pydatetime()
    assert reading.basis == Basis.DIRECT and reading.provider == "electricitymaps"
    assert not reading.forecast and not reading.estimated


def test_any_zone_and_lifecycle_basis(httpserver, httpserver_url, gb):
    httpserver.expect_request(
        LATEST, query_string=query("US-CAL-CISO", "lifecycle")
    ).respond_with_json({**point("US-CAL-CISO", NOW, 245.0, "lifecycle"), "isEstimated": True})
    provider = ElectricityMapsProvider(TOKEN, base_url=httpserver_url, basis=Basis.LIFECYCLE)
    reading = provider.latest("US-CAL-CISO")
    assert reading.zone == "US-CAL-CISO" and reading.basis == Basis.LIFECYCLE
    assert reading.estimated


def test_history_and_forecast_from_the_real_trace(httpserver, em, gb):
    past = gb[NOW - pd.Timedelta(hours=23) : NOW]
    future = gb[NOW + pd.Timedelta(hours=1) : NOW + pd.Timedelta(hours=24)]
    httpserver.expect_request(
        "/v3/carbon-intensity/history", query_string=query("GB")
    ).respond_with_json({"zone": "GB", "history": [point("GB", t, v) for t, v in past.items()]})
    httpserver.expect_request(
        "/v3/carbon-intensity/forecast", query_string=query("GB")
    ).respond_with_json(
        {
            "zone": "GB",
            "forecast": [
                {"carbonIntensity": v, "datetime": t.isoformat()} for t, v in future.items()
            ],
            "updatedAt": "2022-03-15T12:00:00Z",
        }
    )
    history = em.history("GB")
    assert [r.intensity for r in history] == pytest.approx(list(past))
    assert history[0].timestamp == past.index[0].to_pydatetime()
    assert history[-1].timestamp == NOW.to_pydatetime()
    forecast = em.forecast("GB")
    assert len(forecast) == 24 and all(r.forecast for r in forecast)
    assert [r.intensity for r in forecast] == pytest.approx(list(future))


def test_rejected_token_is_an_auth_error_without_the_token(httpserver, em):
    # The server echoes the token back; the client must not repeat it.
    httpserver.expect_request(LATEST).respond_with_json(
        {"status": "error", "message": f"Invalid auth-token {TOKEN}"}, status=401
    )
    with pytest.raises(AuthError) as info:
        em.latest("GB")
    assert_clean_error(info.value, "GB", 401)


def test_unknown_zone_is_an_error_not_another_country(httpserver, em):
    body, status = em_unknown_zone("XX")
    # the switch the v3 documentation names (issue #28 item 3): no caller-IP fallback
    assert query("XX")["shouldUseFallbackCallerLookup"] == "false"
    httpserver.expect_request(LATEST, query_string=query("XX")).respond_with_json(
        body, status=status
    )
    with pytest.raises(UnknownZoneError) as info:
        em.latest("XX")
    assert not isinstance(info.value, ZoneNotInPlanError)
    assert_clean_error(info.value, "XX", 404)
    assert "does not exist" in str(info.value)


def respond(httpserver, path: str, answer: tuple[dict, int]) -> None:
    body, status = answer
    httpserver.expect_request(path).respond_with_json(body, status=status)


def test_a_401_is_told_apart_by_its_body(httpserver, em):
    """Issue #28 item 1: bad token, plan without the endpoint, plan without the zone."""
    respond(httpserver, LATEST, EM_BAD_TOKEN)
    with pytest.raises(AuthError, match="token was rejected: check ELECTRICITYMAPS_TOKEN"):
        em.latest("GB")
    httpserver.clear()
    respond(httpserver, "/v3/carbon-intensity/forecast", em_not_in_plan("DE", "forecast"))
    with pytest.raises(ForecastNotInPlanError) as forecast:
        em.forecast("DE")
    assert isinstance(forecast.value, NoForecastError)  # consumers fall back as without one
    assert not isinstance(forecast.value, AuthError)
    assert "plan does not include the forecast" in str(forecast.value)
    assert "requestType=forecast" in str(forecast.value)  # the API's own words kept
    respond(httpserver, LATEST, em_not_in_plan("DE", "latest"))
    with pytest.raises(ZoneNotInPlanError) as zone:
        em.latest("DE")
    assert isinstance(zone.value, UnknownZoneError) and not isinstance(zone.value, AuthError)
    assert "plan does not include this zone" in str(zone.value)
    assert "token itself was accepted" in str(zone.value)
    assert_clean_error(zone.value, "DE", 401)


def test_429_retry_after_is_honoured(httpserver, em, gb):
    httpserver.expect_ordered_request(LATEST).respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "1"})
    )
    httpserver.expect_ordered_request(LATEST).respond_with_json(point("GB", NOW, gb[NOW]))
    started = time.monotonic()
    reading = em.latest("GB")
    waited = time.monotonic() - started
    assert reading.intensity == pytest.approx(gb[NOW])
    assert len(httpserver.log) == 2
    assert waited >= 1.0  # it waited as told, not the 0.01 s backoff


def test_429_that_persists_is_rate_limited_with_retry_after(httpserver, em):
    httpserver.expect_request(LATEST).respond_with_response(
        Response(json.dumps({"message": "quota"}), status=429, headers={"Retry-After": "0"})
    )
    with pytest.raises(RateLimitedError) as info:
        em.latest("GB")
    assert info.value.retry_after == 0
    assert len(httpserver.log) == 4  # the first try and three retries
    assert_clean_error(info.value, "GB", 429)


def test_500_is_retried_then_unavailable(httpserver, em):
    httpserver.expect_request(LATEST).respond_with_data("boom", status=500)
    with pytest.raises(ProviderUnavailableError) as info:
        em.latest("GB")
    assert len(httpserver.log) == 4
    assert_clean_error(info.value, "GB", 500)


def test_timeout_is_unavailable_and_quick(httpserver, httpserver_url):
    def slow(_request):
        time.sleep(0.8)
        return Response("{}", content_type="application/json")

    httpserver.expect_request(LATEST).respond_with_handler(slow)
    provider = ElectricityMapsProvider(TOKEN, base_url=httpserver_url, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match=r"no answer within 0\.2s") as info:
        provider.latest("GB")
    assert time.monotonic() - started < 0.7  # not retried
    assert "zone 'GB'" in str(info.value) and TOKEN not in str(info.value)
    time.sleep(0.7)  # let the one-threaded server finish before the next test


def test_hours_without_a_value_are_left_out(httpserver, em, gb):
    hours = gb[NOW - pd.Timedelta(hours=2) : NOW]
    points = [point("GB", t, v) for t, v in hours.items()]
    points[1]["carbonIntensity"] = None  # the API leaves gaps as null
    httpserver.expect_request("/v3/carbon-intensity/history").respond_with_json(
        {"zone": "GB", "history": points}
    )
    history = em.history("GB")
    assert [r.timestamp for r in history] == [hours.index[0], hours.index[2]]


def test_unreachable_server_is_unavailable():
    # Port 9 (discard) on loopback: nothing listens there, so the connection is refused.
    provider = ElectricityMapsProvider(
        TOKEN, base_url="http://127.0.0.1:9", session=make_session(backoff_factor=0.01)
    )
    with pytest.raises(ProviderUnavailableError, match="cannot reach") as info:
        provider.latest("GB")
    assert "electricitymaps zone 'GB'" in str(info.value) and TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"zone": "GB", "carbonIntensity": 1', "malformed JSON"),
        ('{"zone": "GB", "datetime": "2022-03-15T12:00:00Z"}', "unexpected response shape"),
        ('{"zone": "GB", "history": "none"}', "unexpected response shape"),
        ('["not", "an", "object"]', "unexpected response shape"),
    ],
)
def test_malformed_answers_are_unavailable(httpserver, em, body, message):
    for kind in ("latest", "history"):
        httpserver.expect_request(f"/v3/carbon-intensity/{kind}").respond_with_data(
            body, content_type="application/json"
        )
    call = em.history if "history" in body else em.latest
    with pytest.raises(ProviderUnavailableError, match=message) as info:
        call("GB")
    assert "electricitymaps zone 'GB'" in str(info.value)


def test_token_never_reaches_the_logs(httpserver, em, gb, caplog):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(LATEST).respond_with_json(point("GB", NOW, gb[NOW]))
    em.latest("GB")
    httpserver.clear()
    httpserver.expect_request(LATEST).respond_with_data("no", status=401)
    with pytest.raises(AuthError):
        em.latest("GB")
    assert "-> HTTP 401" in caplog.text  # the failure is logged ...
    assert TOKEN not in caplog.text  # ... the token is not
    assert TOKEN not in repr(em)


def past_range_from(gb: pd.Series, requests: list[dict]):
    """A past-range handler serving the real trace for ``[start, end]`` (both ends included,
    so consecutive pages share an hour), recording each request's query."""

    def handle(request):
        args = dict(request.args)
        requests.append(args)
        start, end = pd.Timestamp(args["start"]), pd.Timestamp(args["end"])
        points = [point("GB", t, v) for t, v in gb[start:end].items()]
        return Response(
            json.dumps({"zone": "GB", "data": points}), 200, {"Content-Type": "application/json"}
        )

    return handle


@pytest.mark.parametrize("days, pages", [(8, 1), (12, 2), (25, 3)])
def test_a_longer_history_pages_past_range_within_its_10_day_cap(httpserver, gb, days, pages):
    requests: list[dict] = []
    httpserver.expect_request(
        "/v3/carbon-intensity/past-range", headers={"auth-token": TOKEN}
    ).respond_with_handler(past_range_from(gb, requests))
    em = ElectricityMapsProvider(
        TOKEN, base_url=httpserver.url_for("/"), timeout=2, clock=NOW.timestamp
    )
    history = em.history("GB", timedelta(days=days))
    assert len(requests) == pages
    spans = [pd.Timestamp(q["end"]) - pd.Timestamp(q["start"]) for q in requests]
    assert all(span <= pd.Timedelta(hours=240) for span in spans)
    assert pd.Timestamp(requests[0]["start"]) == NOW - pd.Timedelta(days=days)
    assert pd.Timestamp(requests[-1]["end"]) == NOW
    assert all(q["zone"] == "GB" and q["emissionFactorType"] == "direct" for q in requests)
    expected = gb[NOW - pd.Timedelta(days=days) : NOW]
    assert [r.timestamp for r in history] == [t.to_pydatetime() for t in expected.index]
    assert [r.intensity for r in history] == pytest.approx(list(expected))  # no hour twice


def test_a_plan_without_past_range_is_not_in_plan(httpserver, em):
    respond(httpserver, "/v3/carbon-intensity/past-range", em_not_in_plan("GB", "past-range"))
    with pytest.raises(NotInPlanError, match="does not include past-range") as info:
        em.history("GB", timedelta(days=15))
    assert not isinstance(info.value, AuthError | NoForecastError | UnknownZoneError)
