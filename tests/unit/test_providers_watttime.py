"""WattTime v3 client against a real loopback server, fed from the real CAISO_NORTH MOER trace
(converted back to the API's lbs CO2/MWh so the client's conversion is checked end to end)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from carbonaware.core.model import Basis
from carbonaware.providers.base import (
    AuthError,
    ForecastNotInPlanError,
    NotInPlanError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownZoneError,
    ZoneNotInPlanError,
)
from carbonaware.providers.http import make_session
from carbonaware.providers.watttime import LBS_PER_MWH_TO_G_PER_KWH, WattTimeProvider
from carbonaware.traces import load_trace
from provider_bodies import WT_NOT_IN_PLAN, wt_validation_error
from werkzeug import Request, Response

USER, PASSWORD = "alice", "pw-Xy7$secret"
NOW = datetime(2023, 6, 20, 12, 2, tzinfo=UTC)
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def moer(traces_dir):
    return load_trace(traces_dir / "watttime" / "watttime2023_caiso-north_actual.csv").series


@pytest.fixture
def wt(httpserver):
    return WattTimeProvider(
        USER,
        PASSWORD,
        base_url=httpserver.url_for("/"),
        timeout=2,
        session=make_session(backoff_factor=0.01),
        clock=NOW.timestamp,
    )


def body(series: pd.Series, *, forecast: bool = False) -> dict:
    meta = {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh"}
    meta["data_point_period_seconds"] = 300
    if forecast:
        meta["generated_at"] = "2023-06-20T12:00:00+00:00"
    data = [
        {"point_time": t.isoformat(), "value": v / LBS_PER_MWH_TO_G_PER_KWH}
        for t, v in series.items()
    ]
    return {"data": data, "meta": meta}


def historical_query(region: str, start: str, end: str = "2023-06-20T12:02:00Z") -> dict:
    return {"region": region, "signal_type": "co2_moer", "start": start, "end": end}


def login_ok(httpserver, token: str = "tok-1") -> None:
    httpserver.expect_request("/login", headers={"Authorization": BASIC}).respond_with_json(
        {"token": token}
    )


def forecast_query(region: str, horizon: int) -> dict:
    return {"region": region, "signal_type": "co2_moer", "horizon_hours": str(horizon)}


def test_latest_history_and_forecast_in_g_per_kwh(httpserver, wt, moer):
    login_ok(httpserver)
    now = pd.Timestamp(NOW)
    current = moer[now - pd.Timedelta(minutes=2) : now + pd.Timedelta(minutes=3)]
    past_day = moer[now - pd.Timedelta(hours=24) : now]
    ahead = moer[now : now + pd.Timedelta(hours=48)]
    bearer = {"Authorization": "Bearer tok-1"}
    httpserver.expect_request(
        "/v3/forecast", headers=bearer, query_string=forecast_query("CAISO_NORTH", 0)
    ).respond_with_json(body(current, forecast=True))
    httpserver.expect_request(
        "/v3/historical",
        headers=bearer,
        query_string=historical_query("CAISO_NORTH", "2023-06-19T12:02:00Z"),
    ).respond_with_json(body(past_day))
    httpserver.expect_request(
        "/v3/forecast", headers=bearer, query_string=forecast_query("CAISO_NORTH", 48)
    ).respond_with_json(body(ahead, forecast=True))

    latest = wt.latest("CAISO_NORTH")
    assert latest.timestamp == current.index[0].to_pydatetime()
    assert latest.intensity == pytest.approx(current.iloc[0])  # back in g/kWh
    assert latest.basis == Basis.MARGINAL and latest.provider == "watttime"
    assert not latest.forecast  # the current value, read the way WattTime advises
    history = wt.history("CAISO_NORTH")
    assert len(history) == len(past_day) == 288  # 24 h of 5-min points
    forecast = wt.forecast("CAISO_NORTH")
    assert all(r.forecast for r in forecast) and len(forecast) == len(ahead)
    assert [r.intensity for r in forecast] == pytest.approx(list(ahead))
    # One login served all three calls.
    assert sum(1 for request, _ in httpserver.log if request.path == "/login") == 1


def test_latest_in_a_lagging_region_is_not_a_provider_down(httpserver, wt, moer):
    """Issue #28 item 4: historical lags by hours in some regions (its last hour is empty);
    latest comes from the forecast's first point, so the region still has a reading."""
    login_ok(httpserver)
    now = pd.Timestamp(NOW)
    httpserver.expect_request("/v3/historical").respond_with_json(body(moer[0:0]))  # lagging
    httpserver.expect_request(
        "/v3/forecast", query_string=forecast_query("CAISO_NORTH", 0)
    ).respond_with_json(body(moer[now : now + pd.Timedelta(minutes=4)], forecast=True))
    reading = wt.latest("CAISO_NORTH")
    assert reading.timestamp == now.ceil("5min").to_pydatetime()
    assert [r.path for r, _ in httpserver.log] == ["/login", "/v3/forecast"]


def test_a_region_outside_a_free_plan_is_refused_naming_the_plan(httpserver, wt):
    """Issue #28 item 5: free accounts reach historical and forecast for CAISO_NORTH only;
    elsewhere 403 after a good login. That is the plan, not the password."""
    login_ok(httpserver)
    body_403, status = WT_NOT_IN_PLAN
    httpserver.expect_request("/v3/forecast").respond_with_json(body_403, status=status)
    httpserver.expect_request("/v3/historical").respond_with_json(body_403, status=status)
    with pytest.raises(ZoneNotInPlanError) as latest:
        wt.latest("PJM_DC")
    assert isinstance(latest.value, UnknownZoneError) and not isinstance(latest.value, AuthError)
    text = str(latest.value)
    assert "plan does not include current data" in text and "CAISO_NORTH only" in text
    assert "signal-index" in text and PASSWORD not in text
    with pytest.raises(ForecastNotInPlanError):
        wt.forecast("PJM_DC")
    with pytest.raises(NotInPlanError, match="historical data"):
        wt.history("PJM_DC")
    # the token was not renewed for a 403: the login was fine
    assert sum(1 for r, _ in httpserver.log if r.path == "/login") == 1


def test_history_longer_than_the_32_day_cap_is_paged(httpserver, wt, moer):
    login_ok(httpserver)
    asked: list[tuple[str, str]] = []

    def historical(request: Request) -> Response:
        start, end = (pd.Timestamp(request.args[k]) for k in ("start", "end"))
        asked.append((request.args["start"], request.args["end"]))
        if end - start > pd.Timedelta(days=32):
            detail, status = wt_validation_error("end", "range longer than 32 days")
            return Response(json.dumps(detail), status=status, content_type="application/json")
        return Response(json.dumps(body(moer[start:end])), content_type="application/json")

    httpserver.expect_request("/v3/historical").respond_with_handler(historical)
    history = wt.history("CAISO_NORTH", timedelta(days=45))
    assert len(asked) == 2 and asked[-1][1] == "2023-06-20T12:02:00Z"
    stamps = [r.timestamp for r in history]
    assert stamps == sorted(set(stamps))  # no point twice where the pages meet
    assert len(history) == len(moer[pd.Timestamp(NOW) - pd.Timedelta(days=45) : NOW])


def test_a_422_says_which_parameter_and_why(httpserver, wt):
    login_ok(httpserver)
    detail, status = wt_validation_error("signal_type", "value is not a valid enumeration")
    httpserver.expect_request("/v3/forecast").respond_with_json(detail, status=status)
    with pytest.raises(ProviderError, match="signal_type: value is not a valid enumeration"):
        wt.forecast("CAISO_NORTH")


def test_expired_token_is_renewed_once(httpserver, wt, moer):
    logins = iter(["tok-old", "tok-new"])

    def login(request: Request) -> Response:
        assert request.headers["Authorization"] == BASIC
        return Response(f'{{"token": "{next(logins)}"}}', content_type="application/json")

    def forecast(request: Request) -> Response:
        if request.headers["Authorization"] != "Bearer tok-new":
            return Response('{"error": "token expired"}', status=401)
        now = pd.Timestamp(NOW)
        payload = body(moer[now : now + pd.Timedelta(minutes=4)], forecast=True)
        return Response(json.dumps(payload), content_type="application/json")

    httpserver.expect_request("/login").respond_with_handler(login)
    httpserver.expect_request("/v3/forecast").respond_with_handler(forecast)
    assert wt.latest("CAISO_NORTH").intensity > 0
    paths = [request.path for request, _ in httpserver.log]
    assert paths == ["/login", "/v3/forecast", "/login", "/v3/forecast"]


def test_bad_credentials_are_an_auth_error_without_secrets(httpserver, wt):
    httpserver.expect_request("/login").respond_with_json(
        {"error": f"invalid password {PASSWORD}"}, status=401
    )
    with pytest.raises(AuthError) as info:
        wt.latest("CAISO_NORTH")
    text = str(info.value)
    assert "watttime zone 'CAISO_NORTH'" in text and "HTTP 401" in text
    assert PASSWORD not in text and PASSWORD not in repr(wt)


def test_unknown_region_rate_limit_server_error_and_bad_json(httpserver, wt):
    login_ok(httpserver)
    nope = forecast_query("NOPE", 0)
    httpserver.expect_request("/v3/forecast", query_string=nope).respond_with_json(
        {"error": "Invalid region", "message": "region NOPE not found"}, status=400
    )
    with pytest.raises(UnknownZoneError, match=r"watttime zone 'NOPE'.*HTTP 400"):
        wt.latest("NOPE")
    httpserver.expect_request("/v3/forecast").respond_with_response(
        Response("", status=429, headers={"Retry-After": "0"})
    )
    with pytest.raises(RateLimitedError, match="HTTP 429"):
        wt.forecast("CAISO_NORTH")
    httpserver.expect_request("/v3/historical").respond_with_data("oops", status=502)
    with pytest.raises(ProviderUnavailableError, match="HTTP 502"):
        wt.history("CAISO_NORTH")
    httpserver.clear()
    login_ok(httpserver)
    httpserver.expect_request("/v3/historical").respond_with_json({"data": [{"value": 3}]})
    with pytest.raises(ProviderUnavailableError, match="unexpected response shape"):
        wt.history("CAISO_NORTH")


def test_timeout(httpserver):
    def slow(_request):
        time.sleep(0.6)
        return Response('{"token": "t"}', content_type="application/json")

    httpserver.expect_request("/login").respond_with_handler(slow)
    provider = WattTimeProvider(USER, PASSWORD, base_url=httpserver.url_for("/"), timeout=0.2)
    with pytest.raises(ProviderUnavailableError, match=r"no answer within 0\.2s"):
        provider.latest("CAISO_NORTH")
    time.sleep(0.5)


def test_a_week_of_history_asks_historical_for_that_span(httpserver, wt, moer):
    login_ok(httpserver)
    now = pd.Timestamp(NOW)
    past_week = moer[now - pd.Timedelta(days=8) : now]
    httpserver.expect_request(
        "/v3/historical",
        headers={"Authorization": "Bearer tok-1"},
        query_string=historical_query("CAISO_NORTH", "2023-06-12T12:02:00Z"),
    ).respond_with_json(body(past_week))
    history = wt.history("CAISO_NORTH", timedelta(days=8))
    assert len(history) == len(past_week) == 8 * 288  # 8 days of 5-min points
    assert history[0].timestamp == past_week.index[0].to_pydatetime()
    assert [r.intensity for r in history] == pytest.approx(list(past_week))
