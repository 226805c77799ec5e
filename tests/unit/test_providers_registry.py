"""Building providers from configuration: names, credentials, and secrets kept out of sight."""

from __future__ import annotations

import logging

import pytest
from carbonaware.providers.base import ConfigError
from carbonaware.providers.chain import FallbackChain
from carbonaware.providers.registry import ProviderConfig, make_provider
from carbonaware.providers.replay import ReplayProvider
from carbonaware.providers.static import StaticProvider

SECRET = "em-Sup3rSecretToken-42"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown provider 'carbonsky'.*electricitymaps"):
        make_provider(ProviderConfig(name="carbonsky"), env={})


def test_missing_tokens_name_the_env_var_to_set():
    with pytest.raises(ConfigError, match="ELECTRICITYMAPS_TOKEN"):
        make_provider(ProviderConfig(name="electricitymaps"), env={})
    with pytest.raises(ConfigError, match="WATTTIME_USERNAME and WATTTIME_PASSWORD"):
        make_provider(ProviderConfig(name="watttime"), env={"WATTTIME_USERNAME": "me"})


def test_token_from_env_file_and_config(tmp_path):
    from carbonaware.providers.electricitymaps import ElectricityMapsProvider

    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    for config, env in [
        (ProviderConfig(name="electricitymaps"), {"ELECTRICITYMAPS_TOKEN": SECRET}),
        (ProviderConfig(name="electricitymaps"), {"ELECTRICITYMAPS_TOKEN_FILE": str(token_file)}),
        (ProviderConfig(name="electricitymaps", token=SECRET), {}),
        (ProviderConfig(name="electricitymaps", token_file=str(token_file)), {}),
    ]:
        provider = make_provider(config, env=env)
        assert isinstance(provider, ElectricityMapsProvider)
        assert SECRET not in repr(provider)
    with pytest.raises(ConfigError, match="cannot read the credential file"):
        make_provider(ProviderConfig(name="electricitymaps", token_file=str(tmp_path / "x")))


def test_secrets_never_show_in_repr_dump_errors_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    config = ProviderConfig(name="watttime", username="alice", password=SECRET, token=SECRET)
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in str(config.model_dump())
    assert SECRET not in config.model_dump_json()
    with pytest.raises(ConfigError) as info:
        ProviderConfig.from_mapping({"name": "electricitymaps", "token": SECRET, "timeout": -1})
    assert SECRET not in str(info.value) and "timeout" in str(info.value)
    make_provider(config, env={})
    assert SECRET not in caplog.text


def test_replay_static_and_fallback_chain(traces_dir):
    trace = str(traces_dir / "electricitymaps" / "GB_2022_hourly.csv")
    config = ProviderConfig.from_mapping(
        {
            "name": "replay",
            "trace": trace,
            "speed": 3600,
            "start": "36h",
            "fallback": [{"name": "static", "value": 250}],
        }
    )
    chain = make_provider(config, clock=lambda: 0.0)
    assert isinstance(chain, FallbackChain)
    assert isinstance(chain.providers[0], ReplayProvider)
    assert isinstance(chain.providers[1], StaticProvider)
    assert chain.latest("GB").provider == "replay"
    # A zone the trace does not hold falls through to the static provider.
    reading = chain.latest("DE")
    assert reading.provider == "static" and reading.intensity == 250
    status = chain.status("DE")
    assert status.answered_by == "static" and status.fell_back
    assert "holds zone 'GB'" in str(status.failures[0])


def test_missing_replay_trace_or_static_value():
    with pytest.raises(ConfigError, match="needs a trace"):
        make_provider(ProviderConfig(name="replay"))
    with pytest.raises(ConfigError, match="needs a value"):
        make_provider(ProviderConfig(name="static"))
    with pytest.raises(ConfigError, match="does not exist"):
        make_provider(ProviderConfig(name="replay", trace="/nonexistent/trace.csv"))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "replay", "trace": "t.csv", "speed": 0}, "speed"),
        ({"name": "static", "value": -3}, "value"),
        ({"name": "static", "value": 3, "colour": "green"}, "colour"),
        ({"name": "electricitymaps", "basis": "marginal"}, "basis"),
    ],
)
def test_bad_fields_are_one_config_error_naming_the_field(data, field):
    with pytest.raises(ConfigError, match=f"invalid provider configuration: {field}"):
        ProviderConfig.from_mapping(data)
