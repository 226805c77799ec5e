"""WattTime v3 client against a real loopback server, fed from the real CAISO_NORTH MOER trace
(converted back to the API's lbs CO2/MWh so the client's conversion is checked end to end)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from carbonaware.core.model import Basis
from carbonaware.providers.base import (
    AuthError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownZoneError,
)
from carbonaware.providers.http import make_session
from carbonaware.providers.watttime import LBS_PER_MWH_TO_G_PER_KWH, WattTimeProvider
from carbonaware.traces import load_trace
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


def test_latest_history_and_forecast_in_g_per_kwh(httpserver, wt, moer):
    login_ok(httpserver)
    now = pd.Timestamp(NOW)
    past_hour = moer[now - pd.Timedelta(hours=1) : now]
    past_day = moer[now - pd.Timedelta(hours=24) : now]
    ahead = moer[now : now + pd.Timedelta(hours=48)]
    bearer = {"Authorization": "Bearer tok-1"}
    httpserver.expect_request(
        "/v3/historical",
        headers=bearer,
        query_string=historical_query("CAISO_NORTH", "2023-06-20T11:02:00Z"),
    ).respond_with_json(body(past_hour))
    httpserver.expect_request(
        "/v3/historical",
        headers=bearer,
        query_string=historical_query("CAISO_NORTH", "2023-06-19T12:02:00Z"),
    ).respond_with_json(body(past_day))
    httpserver.expect_request(
        "/v3/forecast",
        headers=bearer,
        query_string={"region": "CAISO_NORTH", "signal_type": "co2_moer", "horizon_hours": "48"},
    ).respond_with_json(body(ahead, forecast=True))

    latest = wt.latest("CAISO_NORTH")
    assert latest.timestamp == past_hour.index[-1].to_pydatetime()
    assert latest.intensity == pytest.approx(past_hour.iloc[-1])  # back in g/kWh
    assert latest.basis == Basis.MARGINAL and latest.provider == "watttime"
    history = wt.history("CAISO_NORTH")
    assert len(history) == len(past_day) == 288  # 24 h of 5-min points
    forecast = wt.forecast("CAISO_NORTH")
    assert all(r.forecast for r in forecast) and len(forecast) == len(ahead)
    assert [r.intensity for r in forecast] == pytest.approx(list(ahead))
    # One login served all three calls.
    assert sum(1 for request, _ in httpserver.log if request.path == "/login") == 1


def test_expired_token_is_renewed_once(httpserver, wt, moer):
    logins = iter(["tok-old", "tok-new"])

    def login(request: Request) -> Response:
        assert request.headers["Authorization"] == BASIC
        return Response(f'{{"token": "{next(logins)}"}}', content_type="application/json")

    def historical(request: Request) -> Response:
        if request.headers["Authorization"] != "Bearer tok-new":
            return Response('{"error": "token expired"}', status=401)
        payload = body(moer[pd.Timestamp(NOW) - pd.Timedelta(hours=1) : pd.Timestamp(NOW)])
        return Response(pd.io.json.ujson_dumps(payload), content_type="application/json")

    httpserver.expect_request("/login").respond_with_handler(login)
    httpserver.expect_request("/v3/historical").respond_with_handler(historical)
    assert wt.latest("CAISO_NORTH").intensity > 0
    paths = [request.path for request, _ in httpserver.log]
    assert paths == ["/login", "/v3/historical", "/login", "/v3/historical"]


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
    nope = historical_query("NOPE", "2023-06-20T11:02:00Z")
    httpserver.expect_request("/v3/historical", query_string=nope).respond_with_json(
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
