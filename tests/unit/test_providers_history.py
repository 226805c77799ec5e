"""The own forecaster's seed, degraded step by step (issue #28 item 2), against faultkit's
loopback Electricity Maps server answering as a free plan does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from carbonaware.core.forecast import FORECASTER_HISTORY
from carbonaware.providers.cache import ProviderCache
from carbonaware.providers.electricitymaps import ElectricityMapsProvider
from carbonaware.providers.history import LAST_DAY, REQUESTED, SINCE_SUBMISSION
from carbonaware.providers.http import make_session
from faultkit import FaultServer

HOUR = 3600.0


@pytest.fixture
def server():
    fault = FaultServer().start()
    yield fault
    fault.stop()


def provider(server: FaultServer) -> ElectricityMapsProvider:
    return ElectricityMapsProvider(
        "em-token-5c2e9a", base_url=server.base_url, timeout=5, session=make_session(retries=0)
    )


def test_a_full_plan_seeds_two_weeks_from_past_range(server):
    seed = ProviderCache(60).seed_history(provider(server), "FULL", FORECASTER_HISTORY, HOUR)
    assert seed.depth == REQUESTED and seed.settled
    assert len(seed.readings) >= 14 * 24
    assert seed.label == "15d of electricitymaps history"
    assert server.count("FULL", "history") == 0


def test_a_free_plan_falls_back_to_the_last_day_once_for_a_thousand_jobs(server):
    server.not_in_plan = {"forecast", "past-range"}  # a free account: latest and history
    cache, em = ProviderCache(60), provider(server)
    with ThreadPoolExecutor(max_workers=32) as pool:
        seeds = list(
            pool.map(
                lambda _: cache.seed_history(em, "FREE", FORECASTER_HISTORY, HOUR), range(1000)
            )
        )
    seed = seeds[0]
    assert all(s is seed for s in seeds)  # one shared answer
    assert seed.depth == LAST_DAY and seed.settled
    assert 20 <= len(seed.readings) <= 25
    assert "last 24h of electricitymaps history only" in seed.label
    assert "does not include past-range" in seed.label
    # one past-range refusal and one history call on the wire for all 1,000 jobs
    assert server.count("FREE", "past-range") == 1
    assert server.count("FREE", "history") == 1


def test_a_zone_outside_the_plan_leaves_only_the_readings_since_submission(server):
    server.not_in_plan = {"forecast", "past-range", "history"}
    seed = ProviderCache(60).seed_history(provider(server), "OUT", FORECASTER_HISTORY, HOUR)
    assert seed.depth == SINCE_SUBMISSION and seed.readings == () and seed.settled
    assert seed.label.startswith("readings since submission only (")
    assert "does not include the last 24 h" in seed.label


def test_a_passing_failure_is_kept_only_for_the_ttl(server):
    now = [0.0]
    cache, em = ProviderCache(60, clock=lambda: now[0], error_ttl_seconds=0), provider(server)
    server.set("FLAKY", mode="error500")
    seed = cache.seed_history(em, "FLAKY", timedelta(days=15), HOUR)
    assert seed.depth == SINCE_SUBMISSION and not seed.settled
    server.set("FLAKY", mode="ok")
    now[0] = 61.0  # the TTL, not the hour a plan's answer is kept
    again = cache.seed_history(em, "FLAKY", timedelta(days=15), HOUR)
    assert again.depth == REQUESTED
