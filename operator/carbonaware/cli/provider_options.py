"""The provider options shared by ``carbonctl intensity`` and ``carbonctl run``.

Credentials never come from the command line: ``--token-file`` names a file, or the provider
reads its environment variable (see :mod:`carbonaware.providers.registry`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from carbonaware.cli.numbers import Bounded
from carbonaware.providers.base import ConfigError
from carbonaware.providers.registry import PROVIDER_NAMES, ProviderConfig, make_provider
from carbonaware.source import Source, replay_options

# pandas warns on every replay clock read that datetime drops its nanoseconds: harmless noise
warnings.filterwarnings("ignore", "Discarding nonzero nanoseconds", UserWarning)


def provider_options(function: Callable) -> Callable:
    """Add --provider, --zone, --trace, --speed, --start, --value, --base-url, --token-file,
    --basis and --timeout to a click command; the command receives them as ``provider_args``."""
    options = [
        click.option(
            "--provider",
            default="replay",
            show_default=True,
            help=f"Where readings come from: {', '.join(PROVIDER_NAMES)}.",
        ),
        click.option(
            "--zone",
            default=None,
            help="Grid zone, e.g. GB, DE, US-CAL-CISO (replay: defaults to the trace's zone).",
        ),
        click.option(
            "--trace",
            default=None,
            help="replay: a trace file (Electricity Maps CSV export or timestamp,intensity CSV)."
            " Default: the shipped synthetic demo trace.",
        ),
        click.option(
            "--speed",
            type=Bounded(0, 1_000_000, low_open=True),
            default=1.0,
            show_default=True,
            help="replay: trace seconds per wall-clock second (3600 = one trace hour a second).",
        ),
        click.option(
            "--start", default=None, help="replay: offset into the trace (36h) or ISO time."
        ),
        click.option(
            "--value", type=Bounded(0, 5000), default=None, help="static: the constant g/kWh."
        ),
        click.option("--base-url", default=None, help="Override the provider's API URL."),
        click.option(
            "--token-file",
            default=None,
            help="File holding the API token (else the provider's environment variable).",
        ),
        click.option(
            "--basis",
            type=click.Choice(["direct", "lifecycle"]),
            default=None,
            help="Emission factors (default: the provider's own).",
        ),
        click.option(
            "--timeout",
            type=Bounded(0, 3600, low_open=True),
            default=10.0,
            show_default=True,
            help="HTTP timeout (s).",
        ),
    ]

    @functools.wraps(function)
    def wrapper(**kwargs):
        names = ("provider", "zone", "trace", "speed", "start", "value", "base_url",
                 "token_file", "basis", "timeout")  # fmt: skip
        provider_args = {name: kwargs.pop(name) for name in names}
        return function(provider_args=provider_args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def build_source(provider_args: dict) -> Source:
    """The provider the options describe; ConfigError (exit 2) on anything wrong."""
    args = {k: v for k, v in provider_args.items() if v is not None}
    name = str(args.get("provider", "")).strip().lower()
    zone = args.pop("zone", None)
    if name == "replay":
        # the trace's own zone decides: asking a GB trace for DE is an error, not a relabel
        args |= replay_options(args.get("trace"), args.get("speed"), args.get("start"))
        if not Path(args["trace"]).is_file():
            raise ConfigError(f"cannot read trace file {args['trace']}: no such file")
    elif zone:
        args["zone"] = zone
    args["name"] = args.pop("provider")
    provider = make_provider(ProviderConfig.from_mapping(args))
    zone = zone or getattr(provider, "zone", None)
    if not zone:
        raise ConfigError(f"provider {name!r} needs --zone (e.g. --zone GB)")
    return Source(provider, zone, provider if name == "replay" else None)
