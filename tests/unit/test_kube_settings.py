"""Operator settings from the environment (the ConfigMap in manifests/config.yaml)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from carbonaware.kube.settings import SettingsError, load_settings
from carbonaware.source import demo_trace_path, replay_options

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_configmap_parses_and_names_only_known_settings() -> None:
    config = yaml.safe_load((REPO / "manifests" / "config.yaml").read_text())["data"]
    settings = load_settings(config)
    assert settings.poll_floor == timedelta(seconds=10)
    assert settings.default_provider == "replay"
    assert settings.trainer_image == "carbonaware/trainer:dev"
    assert settings.namespaces == ()
    known = {f"CARBONAWARE_{name.upper()}" for name in settings.__dataclass_fields__}
    assert set(config) <= known  # no setting the operator would silently ignore


def test_defaults_replay_the_bundled_demo_trace() -> None:
    settings = load_settings({})
    trace = replay_options(None, None, None, settings.default_trace)["trace"]
    assert trace == str(demo_trace_path()) and Path(trace).is_file()


def test_follow_grid_is_on_unless_switched_off() -> None:
    assert load_settings({}).follow_grid is True
    assert load_settings({"CARBONAWARE_FOLLOW_GRID": "False"}).follow_grid is False
    assert load_settings({"CARBONAWARE_FOLLOW_GRID": "yes"}).follow_grid is True


def test_namespaces_and_durations() -> None:
    settings = load_settings(
        {"CARBONAWARE_NAMESPACES": "ml, research ,", "CARBONAWARE_POLL_FLOOR": "1m30s"}
    )
    assert settings.namespaces == ("ml", "research")
    assert settings.poll_floor == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CARBONAWARE_POLL_FLOOR": "often"}, "CARBONAWARE_POLL_FLOOR"),
        ({"CARBONAWARE_POLL_FLOOR": "10ms"}, "at least 100ms"),
        ({"CARBONAWARE_METRICS_PORT": "eighty"}, "CARBONAWARE_METRICS_PORT"),
        ({"CARBONAWARE_DEFAULT_PROVIDER": "carbonfairy"}, "unknown provider"),
        ({"CARBONAWARE_API_BACKOFFS": "1,two"}, "CARBONAWARE_API_BACKOFFS"),
        ({"CARBONAWARE_API_BACKOFFS": "1,0"}, "between 0 and 3600"),
        ({"CARBONAWARE_FOLLOW_GRID": "sometimes"}, "CARBONAWARE_FOLLOW_GRID: expected true"),
        ({"CARBONAWARE_CORE_WATTS": "skylake=4:1"}, "CARBONAWARE_CORE_WATTS: expected"),
        ({"CARBONAWARE_CORE_WATTS": "skylake"}, "CARBONAWARE_CORE_WATTS: expected"),
        ({"CARBONAWARE_MEMORY_W_PER_GB": "-1"}, "CARBONAWARE_MEMORY_W_PER_GB"),
        ({"CARBONAWARE_PROMETHEUS_URL": "prom:9090"}, "must be an http"),
    ],
)
def test_bad_settings_name_the_variable(env: dict, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        load_settings(env)


def test_api_backoffs_never_run_out() -> None:
    """kopf gives up on a request once a Sized list of backoffs is spent (and a watch that
    gives up ends for good); ours repeat the last value instead."""
    import collections.abc
    import itertools

    from carbonaware.kube.main import EndlessBackoffs

    settings = load_settings({"CARBONAWARE_API_BACKOFFS": "0.5, 2"})
    assert settings.api_backoffs == (0.5, 2.0)
    backoffs = EndlessBackoffs(settings.api_backoffs)
    assert not isinstance(backoffs, collections.abc.Sized)  # kopf's test for "finite"
    assert list(itertools.islice(backoffs, 5)) == [0.5, 2.0, 2.0, 2.0, 2.0]
    assert list(itertools.islice(backoffs, 2)) == [0.5, 2.0]  # each request starts afresh
    assert load_settings({}).api_backoffs[-1] == 60


def test_power_model_overrides_and_prometheus_settings_parse_and_the_token_is_not_printed() -> None:
    settings = load_settings(
        {
            "CARBONAWARE_CORE_WATTS": "Skylake=1:5, default=0.5:2",
            "CARBONAWARE_PROMETHEUS_URL": "http://prometheus:9090/",
            "CARBONAWARE_PROMETHEUS_TOKEN": "s3cret-token",
        }
    )
    watts = dict(settings.core_watts)
    assert (watts["skylake"].idle, watts["skylake"].busy) == (1.0, 5.0)
    assert watts["default"].busy == 2.0
    assert settings.prometheus_url == "http://prometheus:9090"
    assert "kepler_container_joules_total" in settings.kepler_query
    assert "s3cret-token" not in repr(settings)
