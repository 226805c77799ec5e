"""Build a provider (or a fallback chain of them) from configuration.

Credentials come from the configuration (``token``/``token_file``, kept as secrets), else from
environment variables; never from a command line. Per provider:

=================  ==============================================================
electricitymaps    ``ELECTRICITYMAPS_TOKEN`` or ``ELECTRICITYMAPS_TOKEN_FILE``
watttime           ``WATTTIME_USERNAME`` and ``WATTTIME_PASSWORD``
                   (or ``WATTTIME_PASSWORD_FILE``)
ukci, replay,      no credentials
static
=================  ==============================================================

Electricity Maps ``basis`` defaults to ``direct`` (operational emissions), which matches the
trace exports' ``(direct)`` column, so replayed and live numbers compare; set ``lifecycle``
for life-cycle factors (the Electricity Maps API's own default).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from carbonaware.core.model import Basis
from carbonaware.providers.base import ConfigError, Provider

PROVIDER_NAMES = ("electricitymaps", "ukci", "watttime", "replay", "static")


class ProviderConfig(BaseModel):
    """Where readings come from. Secrets are ``SecretStr``: masked in repr and dumps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    zone: str | None = None
    trace: str | None = None  # replay: path of the trace file
    speed: float = Field(default=1.0, gt=0)  # replay: trace seconds per wall-clock second
    start: str | None = None  # replay: ISO timestamp or offset ("36h") into the trace
    value: float | None = Field(default=None, ge=0)  # static: g/kWh
    base_url: str | None = None
    token: SecretStr | None = None
    token_file: str | None = None
    username: SecretStr | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    timeout: float = Field(default=10.0, gt=0)
    # Emission factors: None = the provider's default (direct for Electricity Maps, the
    # file's own basis for a replayed trace; an Electricity Maps export's direct column).
    basis: Literal["direct", "lifecycle"] | None = None
    fallback: list[ProviderConfig] = Field(default_factory=list)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ProviderConfig:
        """Validate plain data (e.g. a CRD spec); bad fields raise one ConfigError."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
                for err in exc.errors(include_input=False)
            )
            raise ConfigError(f"invalid provider configuration: {problems}") from None


def make_provider(
    config: ProviderConfig,
    *,
    clock: Callable[[], float] = time.time,
    session: requests.Session | None = None,
    env: Mapping[str, str] | None = None,
) -> Provider:
    """The provider ``config`` describes; a FallbackChain when it lists fallbacks.

    Raises ConfigError (with the environment variable to set) for an unknown name or
    missing credentials. ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    primary = _make_one(config, clock=clock, session=session, env=env)
    if not config.fallback:
        return primary
    from carbonaware.providers.chain import FallbackChain

    rest = [make_provider(c, clock=clock, session=session, env=env) for c in config.fallback]
    return FallbackChain([primary, *rest], clock=clock)


def _make_one(
    config: ProviderConfig,
    *,
    clock: Callable[[], float],
    session: requests.Session | None,
    env: Mapping[str, str],
) -> Provider:
    name = config.name.strip().lower()
    if name == "static":
        from carbonaware.providers.static import StaticProvider

        if config.value is None:
            raise ConfigError("provider 'static' needs a value (g/kWh), e.g. value: 200")
        return StaticProvider(config.value, clock=clock)
    if name == "replay":
        from carbonaware.providers.replay import ReplayProvider

        if not config.trace:
            raise ConfigError(
                "provider 'replay' needs a trace file (an Electricity Maps CSV export or a "
                "'timestamp,intensity' CSV)"
            )
        return ReplayProvider(
            config.trace, config.zone, config.speed, config.start, clock, basis=config.basis
        )
    if name == "electricitymaps":
        from carbonaware.providers.electricitymaps import ElectricityMapsProvider

        token = _secret(
            config.token, config.token_file, env, "ELECTRICITYMAPS_TOKEN", "electricitymaps"
        )
        if token is None:
            raise ConfigError(
                "provider 'electricitymaps' needs an API token: set ELECTRICITYMAPS_TOKEN, "
                "or ELECTRICITYMAPS_TOKEN_FILE to a file that holds it"
            )
        return ElectricityMapsProvider(
            token,
            base_url=config.base_url,
            basis=Basis(config.basis or "direct"),
            timeout=config.timeout,
            session=session,
        )
    if name == "ukci":
        from carbonaware.providers.ukci import UKCarbonIntensityProvider

        return UKCarbonIntensityProvider(
            base_url=config.base_url, timeout=config.timeout, session=session, clock=clock
        )
    if name == "watttime":
        from carbonaware.providers.watttime import WattTimeProvider

        username = _secret(config.username, None, env, "WATTTIME_USERNAME", "watttime")
        password = _secret(
            config.password, config.password_file, env, "WATTTIME_PASSWORD", "watttime"
        )
        if username is None or password is None:
            raise ConfigError(
                "provider 'watttime' needs an account: set WATTTIME_USERNAME and "
                "WATTTIME_PASSWORD (or WATTTIME_PASSWORD_FILE to a file that holds it)"
            )
        return WattTimeProvider(
            username,
            password,
            base_url=config.base_url,
            timeout=config.timeout,
            session=session,
            clock=clock,
        )
    raise ConfigError(
        f"unknown provider {config.name!r}; choose one of: {', '.join(PROVIDER_NAMES)}"
    )


def _secret(
    value: SecretStr | None,
    file: str | None,
    env: Mapping[str, str],
    var: str,
    provider: str,
) -> str | None:
    """A credential from config, a config-named file, ``$VAR`` or the file in ``$VAR_FILE``."""
    if value is not None and value.get_secret_value().strip():
        return value.get_secret_value().strip()
    path = file or env.get(f"{var}_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"provider {provider!r}: cannot read the credential file {path} "
                f"({exc.strerror or type(exc).__name__}); set {var} or {var}_FILE"
            ) from None
        if not text:
            raise ConfigError(f"provider {provider!r}: the credential file {path} is empty")
        return text
    from_env = env.get(var, "").strip()
    return from_env or None
