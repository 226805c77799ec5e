"""Fuzzing (hypothesis) of what comes from outside: the CarbonAwareJob spec and provider bodies.

The contract under test, for any input at all:
- ``parse_spec`` returns a spec or raises ``SpecError`` with one short line; nothing else
  escapes (a stray exception in a kopf handler would retry forever instead of failing).
- A provider's response parser returns readings that are usable (timezone-aware, finite,
  non-negative intensity) or raises a ``ProviderError``; nothing else escapes (anything else
  would bypass the fallback chain). Bodies are generated as the JSON decoder can produce
  them, including huge integers and the non-standard ``NaN``/``Infinity`` that Python's json
  module (and so ``requests``) accepts.
"""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime

from carbonaware.kube.models import SpecError, parse_spec
from carbonaware.providers.base import ProviderError
from carbonaware.providers.electricitymaps import ElectricityMapsProvider
from carbonaware.providers.ukci import UKCarbonIntensityProvider
from carbonaware.providers.watttime import WattTimeProvider
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "1h", "-1h", "30m", "2y", "1e400", "NaN", "2024-01-01T00:00:00Z"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)

SPEC_KEYS = [
    "zone",
    "provider",
    "thresholdGramsPerKWh",
    "maxDelay",
    "strategy",
    "expectedDuration",
    "pollInterval",
    "power",
    "trainer",
    "jobTemplate",
]


def _spec_like() -> st.SearchStrategy:
    """Mostly the right keys with wrong or odd values: deep enough to reach every validator."""
    provider = st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(st.sampled_from(["replay", "static", "electricitymaps"]), scalars),
            "secretRef": json_values,
            "speed": scalars,
            "value": scalars,
            "fallback": st.lists(json_values, max_size=3),
        },
    )
    values = {key: json_values for key in SPEC_KEYS}
    values["provider"] = st.one_of(provider, json_values)
    values["zone"] = st.one_of(st.sampled_from(["DE", "GB", ""]), scalars)
    values["trainer"] = st.one_of(st.just({}), json_values)
    return st.fixed_dictionaries({}, optional=values)


@FUZZ
@given(st.one_of(_spec_like(), st.dictionaries(st.text(max_size=20), json_values, max_size=6)))
def test_parse_spec_accepts_or_says_why_in_one_line(raw: dict) -> None:
    try:
        spec = parse_spec(raw)
    except SpecError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 500, message
        return
    assert spec.zone and spec.threshold_grams_per_kwh > 0
    assert (spec.trainer is None) != (spec.job_template is None)
    assert spec.max_delay.total_seconds() >= 0 and spec.poll_interval.total_seconds() >= 0


def _as_decoded(value):
    """What the body looks like after a trip through the wire and json.loads."""
    try:
        return json.loads(json.dumps(value))
    except (ValueError, OverflowError):
        return value


def _check(readings) -> None:
    for reading in readings:
        assert reading.timestamp.tzinfo is not None
        assert math.isfinite(reading.intensity) and reading.intensity >= 0, reading


def _point_like() -> st.SearchStrategy:
    stamps = st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        st.sampled_from(["2024-01-01T00:00Z", "2024-01-01T00:00:00.000Z", "yesterday", ""]),
        scalars,
    )
    return st.dictionaries(
        st.sampled_from(
            [
                "carbonIntensity",
                "datetime",
                "isEstimated",
                "emissionFactorType",
                "point_time",
                "value",
                "from",
                "to",
                "intensity",
                "actual",
                "forecast",
            ]
        ),
        st.one_of(stamps, json_values),
        max_size=6,
    )


@FUZZ
@given(st.one_of(json_values, _point_like()), st.booleans())
@example({"carbonIntensity": 10**400, "datetime": "2024-01-01T00:00:00Z"}, False)
@example({"carbonIntensity": float("inf"), "datetime": "2024-01-01T00:00:00Z"}, False)
def test_electricitymaps_point_parser_never_escapes(body, forecast: bool) -> None:
    provider = ElectricityMapsProvider("token")
    try:
        reading = provider._reading("DE", _as_decoded(body), forecast=forecast)
    except ProviderError:
        return
    if reading is not None:
        _check([reading])


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({"data": st.lists(_point_like())})))
def test_ukci_body_parser_never_escapes(body) -> None:
    provider = UKCarbonIntensityProvider(clock=lambda: datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    with contextlib.suppress(ProviderError):
        _check(provider._readings("GB", _as_decoded(body), forecast=False))


@FUZZ
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"data": st.lists(_point_like(), max_size=4)},
            optional={"meta": st.fixed_dictionaries({}, optional={"units": scalars})},
        ),
    )
)
@example({"data": [{"point_time": "2024-01-01T00:00:00Z", "value": 10**400}]})
@example({"data": [{"point_time": "2024-01-01T00:00:00Z", "value": float("inf")}]})
def test_watttime_body_parser_never_escapes(body) -> None:
    provider = WattTimeProvider("user", "password")
    with contextlib.suppress(ProviderError):
        _check(provider._readings("CAISO_NORTH", _as_decoded(body), forecast=False))
