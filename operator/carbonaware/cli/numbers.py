"""Numeric command-line options that refuse what no run can use: ``nan``, ``inf``, and values
outside the range the option means (a click usage error: one line, exit 2)."""

from __future__ import annotations

import math

import click


class Bounded(click.ParamType):
    """A finite float within ``[low, high]`` (``low`` excluded when ``low_open``)."""

    name = "number"

    def __init__(self, low: float, high: float, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        below = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or below or number > self.high:
            side = ">" if self.low_open else ">="
            self.fail(f"must be {side} {self.low:g} and <= {self.high:g}, got {value}", param, ctx)
        return number
