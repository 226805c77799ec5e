"""``carbonctl intensity``: the latest reading for a zone, and how far the forecast reaches."""

from __future__ import annotations

import click

from carbonaware.cli.provider_options import build_source, provider_options
from carbonaware.core.durations import format_duration
from carbonaware.providers.base import NoForecastError, NotInPlanError


@click.command()
@provider_options
def command(provider_args: dict) -> None:
    """Print the latest carbon intensity for a zone (and the forecast length, if any)."""
    source = build_source(provider_args)
    reading = source.provider.latest(source.zone)
    kind = "forecast" if reading.forecast else "estimated" if reading.estimated else "actual"
    click.echo(
        f"{reading.zone}: {reading.intensity:.1f} gCO2eq/kWh at "
        f"{reading.timestamp:%Y-%m-%d %H:%M} UTC ({reading.basis} factors, {kind}, "
        f"provider {reading.provider or source.provider.name})"
    )
    none = "none from this provider"
    try:
        forecast = source.provider.forecast(source.zone)
    except NoForecastError as exc:  # the reading above stands: no forecast is no error
        forecast = []
        if isinstance(exc, NotInPlanError):
            none = f"none: {exc.meaning or exc.detail}"
    if forecast:
        reach = forecast[-1].timestamp - reading.timestamp
        click.echo(f"forecast: {len(forecast)} readings, up to {format_duration(reach)} ahead")
    else:
        click.echo(f"forecast: {none}")
