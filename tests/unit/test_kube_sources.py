"""One provider answer shared by every job that would get the same answer, and no more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carbonaware.kube import metrics
from carbonaware.kube.models import parse_spec
from carbonaware.kube.settings import OperatorSettings
from carbonaware.kube.sources import SharedSources, build_source
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


class _Secrets:
    """Stands in for KubeApi.secret_value (the unit tier has no apiserver; the integration
    tier reads real Secrets): Secret "a" holds one token, "b" another."""

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        return {"a": "tok-a", "b": "tok-b"}[name]


def test_jobs_with_one_live_configuration_share_one_provider_object() -> None:
    # Issue 7's memory goal: 1,000 jobs on 10 zones must not hold 1,000 HTTP sessions.
    shared = SharedSources()
    em = {"name": "electricitymaps", "baseUrl": "http://127.0.0.1:9/v3"}

    def source(provider: dict, secret: str = "a", zone: str = "DE"):
        provider = {**provider, "secretRef": {"name": secret}}
        spec = parse_spec({"zone": zone, "provider": provider, "trainer": {}})
        return build_source(spec, "ns", CREATED, OperatorSettings(), _Secrets(), shared)

    first, second = source(em), source(em, zone="FR")
    assert first is second and len(shared) == 1
    assert source(em, secret="b") is not first  # other credentials, other answers
    assert source({**em, "basis": "lifecycle"}) is not first
    assert first.provider.cache_key != source(em, secret="b").provider.cache_key
    replayed = [_source({"name": "replay", "speed": 3600}) for _ in range(2)]
    assert replayed[0].provider is not replayed[1].provider  # each anchored at its creation


def test_the_shared_sources_stay_bounded() -> None:
    shared = SharedSources(max_entries=2)
    for value in (100, 200, 300):
        provider = {"name": "static", "value": value}
        spec = parse_spec({"zone": "DE", "provider": provider, "trainer": {}})
        build_source(spec, "ns", CREATED, OperatorSettings(), None, shared)
    assert len(shared) == 2
