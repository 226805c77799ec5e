"""One provider answer shared by every job that would get the same answer, and no more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carbonaware.kube import metrics
from carbonaware.kube.handlers import build_source
from carbonaware.kube.models import parse_spec
from carbonaware.kube.settings import OperatorSettings
from carbonaware.providers.cache import ProviderCache

# Replay timelines start at a job's creation: "now", so the trace is not over yet.
CREATED = datetime.now(UTC).replace(microsecond=0)


def _source(provider: dict, created: datetime = CREATED):
    spec = parse_spec({"zone": "SYNTHETIC", "provider": provider, "trainer": {}})
    return build_source(spec, "ns", created, OperatorSettings(), kube=None)


def _requests(provider: str) -> float:
    return metrics.REQUESTS.labels(provider=provider, kind="latest")._value.get()


def test_jobs_on_one_replay_timeline_share_one_request() -> None:
    cache = ProviderCache(ttl_seconds=60)
    first = _source({"name": "replay", "speed": 3600})
    second = _source({"name": "replay", "speed": 3600})
    before = _requests("replay")
    assert cache.latest(first.provider, "SYNTHETIC") == cache.latest(second.provider, "SYNTHETIC")
    assert _requests("replay") - before == 1


def test_replays_anchored_at_different_creations_do_not_share_answers() -> None:
    early = _source({"name": "replay", "speed": 3600})
    late = _source({"name": "replay", "speed": 3600}, CREATED - timedelta(seconds=10))
    assert early.provider.cache_key != late.provider.cache_key
    assert early.clock == "replay"
    # Each job's trace time starts at the trace start when it was created: 10 s at 3600x
    # later is 10 trace hours later (give or take the microseconds between the calls).
    gap = late.now() - early.now()
    assert abs(gap - timedelta(hours=10)) < timedelta(seconds=60)
    start = early.to_job_time(CREATED)
    assert abs(start - late.to_job_time(CREATED - timedelta(seconds=10))) < timedelta(seconds=60)


def test_live_providers_share_across_creation_times_and_run_on_wall_time() -> None:
    one = _source({"name": "static", "value": 100})
    other = _source({"name": "static", "value": 100}, CREATED + timedelta(days=3))
    assert one.provider.cache_key == other.provider.cache_key
    assert one.clock == "wall" and one.to_job_time(CREATED) == CREATED
