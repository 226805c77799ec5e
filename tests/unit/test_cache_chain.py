"""The shared cache and the fallback chain, against a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from carbonaware.providers.base import (
    NoForecastError,
    ProviderUnavailableError,
    UnknownZoneError,
)
from carbonaware.providers.cache import ProviderCache
from carbonaware.providers.chain import FallbackChain
from carbonaware.providers.electricitymaps import ElectricityMapsProvider
from carbonaware.providers.http import make_session
from carbonaware.providers.replay import ReplayProvider
from carbonaware.providers.static import StaticProvider
from provider_bodies import em_not_in_plan
from werkzeug import Response

TOKEN = "tok-cache-test"
LATEST = "/v3/carbon-intensity/latest"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(value: float, delay: float = 0.0):
    """A handler that answers slowly enough for concurrent callers to overlap."""

    def handle(request):
        time.sleep(delay)
        zone = request.args["zone"]
        return Response(
            f'{{"zone": "{zone}", "carbonIntensity": {value}, '
            f'"datetime": "2024-01-01T10:00:00.000Z", "isEstimated": false}}',
            content_type="application/json",
        )

    return handle


@pytest.fixture
def em(httpserver):
    return ElectricityMapsProvider(
        TOKEN, base_url=httpserver.url_for("/"), timeout=5, session=make_session(retries=0)
    )


def requests_to(httpserver, path: str = LATEST) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path)


def test_a_thousand_jobs_in_one_zone_make_one_request_per_interval(httpserver, em):
    httpserver.expect_request(LATEST).respond_with_handler(answer(123.0, delay=0.3))
    clock = FakeClock()
    cache = ProviderCache(ttl_seconds=300, clock=clock)
    with ThreadPoolExecutor(max_workers=64) as pool:
        readings = list(pool.map(lambda _: cache.latest(em, "GB"), range(1000)))
    assert requests_to(httpserver) == 1
    assert {r.intensity for r in readings} == {123.0}
    assert cache.misses == 1 and cache.hits == 999

    clock.now += 299  # still fresh
    cache.latest(em, "GB")
    assert requests_to(httpserver) == 1
    clock.now += 2  # expired: the next interval makes one more request
    with ThreadPoolExecutor(max_workers=64) as pool:
        list(pool.map(lambda _: cache.latest(em, "GB"), range(1000)))
    assert requests_to(httpserver) == 2

    cache.latest(em, "FR")  # another zone is another key
    assert requests_to(httpserver) == 3


def test_asyncio_callers_share_one_request(httpserver, em):
    httpserver.expect_request(LATEST).respond_with_handler(answer(80.0, delay=0.3))
    cache = ProviderCache(ttl_seconds=60)

    async def many():
        return await asyncio.gather(*(cache.alatest(em, "DE") for _ in range(200)))

    readings = asyncio.run(many())
    assert len(readings) == 200 and requests_to(httpserver) == 1


def test_failures_are_shared_and_cached_briefly(httpserver, em):
    httpserver.expect_request(LATEST).respond_with_handler(
        lambda _: (time.sleep(0.2), Response("down", status=503))[1]
    )
    clock = FakeClock()
    cache = ProviderCache(ttl_seconds=300, clock=clock, error_ttl_seconds=20)
    errors = []

    def call(_):
        try:
            cache.latest(em, "GB")
        except ProviderUnavailableError as exc:
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(call, range(300)))
    assert len(errors) == 300 and requests_to(httpserver) == 1
    assert "HTTP 503" in str(errors[0])
    clock.now += 21  # a failure is remembered for the error TTL only
    with pytest.raises(ProviderUnavailableError):
        cache.latest(em, "GB")
    assert requests_to(httpserver) == 2


def test_kinds_and_providers_are_cached_separately(traces_dir):
    replay = ReplayProvider(
        traces_dir / "electricitymaps" / "GB_2022_hourly.csv", speed=3600, clock=lambda: 0.0
    )
    calls = {"n": 0}
    lock = threading.Lock()

    class Counting(StaticProvider):
        def latest(self, zone):
            with lock:
                calls["n"] += 1
            return super().latest(zone)

    cache = ProviderCache(ttl_seconds=60)
    cached = cache.wrap(replay)
    assert len(cached.history("GB")) == 1 and len(cached.forecast("GB")) == 48
    assert cached.now() == replay.now()  # replay's trace clock passes through the wrapper
    first, second = Counting(100.0), Counting(200.0)
    assert cache.latest(first, "GB").intensity == 100.0
    assert cache.latest(second, "GB").intensity == 200.0  # different config, different key
    assert cache.latest(first, "GB").intensity == 100.0
    assert calls["n"] == 2


def test_chain_falls_back_and_says_why(httpserver, em, traces_dir):
    httpserver.expect_request(LATEST).respond_with_data("maintenance", status=503)
    replay = ReplayProvider(
        traces_dir / "electricitymaps" / "GB_2022_hourly.csv", speed=3600, clock=lambda: 0.0
    )
    chain = FallbackChain([em, replay])
    reading = chain.latest("GB")
    assert reading.provider == "replay" and reading.intensity == pytest.approx(52.2)
    status = chain.status("GB")
    assert status.fell_back and status.answered_by == "replay"
    assert isinstance(status.failures[0], ProviderUnavailableError)
    assert "electricitymaps zone 'GB'" in str(status.failures[0])
    assert "HTTP 503" in str(status.failures[0])

    httpserver.clear()
    httpserver.expect_request(LATEST).respond_with_handler(answer(99.0))
    assert chain.latest("GB").provider == "electricitymaps"
    assert not chain.status("GB").fell_back


def test_chain_when_every_provider_fails(httpserver, em, traces_dir):
    httpserver.expect_request(LATEST).respond_with_json(
        {"status": "error", "message": "Zone 'ZZ' does not exist."}, status=404
    )
    replay = ReplayProvider(
        traces_dir / "electricitymaps" / "GB_2022_hourly.csv", clock=lambda: 0.0
    )
    chain = FallbackChain([em, replay])
    with pytest.raises(UnknownZoneError) as info:
        chain.latest("ZZ")  # unknown to both: still an unknown-zone error
    assert "electricitymaps" in str(info.value) and "replay" in str(info.value)
    assert chain.status("ZZ").answered_by is None
    httpserver.clear()
    httpserver.expect_request(LATEST).respond_with_data("x", status=500)
    with pytest.raises(ProviderUnavailableError, match="every provider failed"):
        chain.latest("DE")


def test_cached_chain_still_makes_one_request(httpserver, em):
    httpserver.expect_request(LATEST).respond_with_handler(answer(55.0, delay=0.2))
    cache = ProviderCache(ttl_seconds=60)
    chained = cache.wrap(FallbackChain([em, StaticProvider(500.0)]))
    with ThreadPoolExecutor(max_workers=32) as pool:
        readings = list(pool.map(lambda _: chained.latest("PL"), range(500)))
    assert {r.provider for r in readings} == {"electricitymaps"}
    assert requests_to(httpserver) == 1
    assert chained.status("PL").answered_by == "electricitymaps"


def test_chain_forecast_falls_through_a_provider_without_one(httpserver, em, traces_dir):
    body, status = em_not_in_plan("GB", "forecast")  # a free plan: no forecast
    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_json(
        body, status=status
    )
    replay = ReplayProvider(
        traces_dir / "electricitymaps" / "GB_2022_hourly.csv", clock=lambda: 0.0
    )
    chain = FallbackChain([em, replay])
    forecast = chain.forecast("GB")
    assert len(forecast) == 48 and {r.provider for r in forecast} == {"replay"}
    status = chain.status("GB", "forecast")
    assert status.answered_by == "replay" and isinstance(status.failures[0], NoForecastError)
    with pytest.raises(NoForecastError):  # every provider lacks one: still "no forecast"
        FallbackChain([em]).forecast("GB")


def test_a_week_of_history_is_one_request_for_all_jobs_and_apart_from_a_day(httpserver, em):
    def points(key: str):
        def handle(request):
            time.sleep(0.2)  # slow enough for the callers to overlap
            body = {"zone": request.args["zone"], key: [json.loads(answer(90.0)(request).data)]}
            return Response(json.dumps(body), content_type="application/json")

        return handle

    httpserver.expect_request("/v3/carbon-intensity/past-range").respond_with_handler(
        points("data")
    )
    httpserver.expect_request("/v3/carbon-intensity/history").respond_with_handler(
        points("history")
    )
    cache = ProviderCache(ttl_seconds=300)
    week = timedelta(days=8)
    with ThreadPoolExecutor(max_workers=32) as pool:
        weeks = list(pool.map(lambda _: cache.history(em, "GB", week), range(200)))
    assert requests_to(httpserver, "/v3/carbon-intensity/past-range") == 1  # single flight
    assert all(len(w) == 1 and w[0].intensity == 90.0 for w in weeks)
    cache.history(em, "GB")  # a day is another entry: not served from the week's
    assert requests_to(httpserver, "/v3/carbon-intensity/history") == 1
    cache.history(em, "GB", week)
    assert requests_to(httpserver, "/v3/carbon-intensity/past-range") == 1


def test_a_long_history_can_outlive_the_polling_ttl(httpserver, em):
    """The operator keeps the forecaster's two weeks for an hour while latest readings
    expire every poll: 1,000 waiting jobs do not refetch two weeks each poll."""
    httpserver.expect_request("/v3/carbon-intensity/past-range").respond_with_handler(
        lambda request: Response(
            json.dumps({"zone": "GB", "data": [json.loads(answer(90.0)(request).data)]}),
            content_type="application/json",
        )
    )
    httpserver.expect_request(LATEST).respond_with_handler(answer(120.0))
    clock = FakeClock()
    cache = ProviderCache(ttl_seconds=30, clock=clock)
    two_weeks = timedelta(days=15)
    cache.history(em, "GB", two_weeks, ttl_seconds=3600)
    pages = requests_to(httpserver, "/v3/carbon-intensity/past-range")  # 10-day pages: 2
    assert pages >= 1
    for _ in range(3):
        cache.history(em, "GB", two_weeks, ttl_seconds=3600)
        cache.latest(em, "GB")
        clock.now += 31  # past the polling TTL
    assert requests_to(httpserver) == 3  # latest: once per poll
    assert requests_to(httpserver, "/v3/carbon-intensity/past-range") == pages  # history: once
    clock.now += 3600
    cache.history(em, "GB", two_weeks, ttl_seconds=3600)
    assert requests_to(httpserver, "/v3/carbon-intensity/past-range") == 2 * pages  # an hour on
    # A TTL shorter than the cache's is not honoured: the cache's TTL is the floor.
    cache.history(em, "GB", timedelta(days=2), ttl_seconds=0)
    cache.history(em, "GB", timedelta(days=2), ttl_seconds=0)
    assert requests_to(httpserver, "/v3/carbon-intensity/past-range") == 2 * pages + 1


def test_the_chain_passes_the_span_on(httpserver, em):
    httpserver.expect_request("/v3/carbon-intensity/past-range").respond_with_data("down", 503)
    chain = FallbackChain([em, StaticProvider(55.0)])
    week = chain.history("GB", timedelta(days=8))
    assert len(week) == 192 and {r.provider for r in week} == {"static"}
    assert chain.status("GB", "history").fell_back


def test_a_changed_reading_is_announced_once_per_fetch_that_brings_it(httpserver, em):
    """The operator wakes a zone's jobs on this: once per new reading, not per job."""
    value = {"now": 300.0}
    httpserver.expect_request(LATEST).respond_with_handler(
        lambda request: answer(value["now"])(request)
    )
    clock, announced = FakeClock(), []
    cache = ProviderCache(ttl_seconds=5, clock=clock, on_new_reading=announced.append)
    cache.latest(em, "GB")
    assert announced == []  # the first reading: nothing to compare it with
    clock.now += 6
    cache.latest(em, "GB")
    assert announced == []  # the same reading again
    value["now"] = 50.0
    clock.now += 6
    with ThreadPoolExecutor(max_workers=32) as pool:
        readings = list(pool.map(lambda _: cache.latest(em, "GB"), range(200)))
    assert {r.intensity for r in readings} == {50.0}
    assert announced == ["GB"]  # one fetch brought it: one announcement for 200 callers


def test_following_the_grid_sees_each_new_reading_just_after_it_is_due(httpserver, em):
    """A provider publishing a reading every 2 s, a 2 s TTL, and a caller asking every
    0.3 s (as waiting jobs do): once the cache has seen two readings on the grid, it fetches
    each new one itself just after its period starts and announces it within a fraction of
    a second, where fetches at an arbitrary phase would see it 0-2 s late; still one
    request per TTL."""
    period = 2

    def on_the_grid(request):
        stamp = int(time.time()) // period * period
        when = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stamp))
        return Response(
            f'{{"zone": "GB", "carbonIntensity": {100 + stamp % 100}, "datetime": "{when}"}}',
            content_type="application/json",
        )

    httpserver.expect_request(LATEST).respond_with_handler(on_the_grid)
    announced: list[float] = []
    cache = ProviderCache(
        ttl_seconds=period,
        follow_grid=True,
        on_new_reading=lambda zone: announced.append(time.time()),
    )
    started = time.time()
    try:
        while time.time() < started + 7 * period:
            cache.latest(em, "GB")
            time.sleep(0.3)
    finally:
        cache.close()
    elapsed = time.time() - started
    requests = len(httpserver.log)
    assert requests <= elapsed / period + 2, requests  # the first, one per TTL, one learning
    # the grid is learnt from the second reading on (within two periods); after that, each
    # new reading is announced well within a second of its period's start
    late = [t - (t // period * period) for t in announced if t > started + 2 * period + 0.5]
    assert len(late) >= 4, announced
    assert max(late) < 0.7, late
