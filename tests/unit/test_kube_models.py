"""The operator's typed view of a CarbonAwareJob spec and status."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from carbonaware.core.durations import DURATION_PATTERN
from carbonaware.kube.models import (
    CarbonAwareJobStatus,
    SpecError,
    parse_spec,
    parse_status,
)

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_durations_parse() -> None:
    spec = parse_spec({"zone": "DE", "trainer": {}})
    assert spec.max_delay == timedelta(hours=24)
    assert spec.poll_interval == timedelta(minutes=5)
    assert spec.threshold_grams_per_kwh == 200
    assert spec.trainer is not None and spec.trainer.epochs == 1
    assert spec.provider.name is None  # the operator's default provider


def test_camel_case_fields_as_written_in_yaml() -> None:
    spec = parse_spec(
        {
            "zone": "GB",
            "thresholdGramsPerKWh": 120,
            "maxDelay": "1h30m",
            "pollInterval": "30s",
            "provider": {
                "name": "electricitymaps",
                "secretRef": {"name": "em-token"},
                "fallback": [{"name": "static", "value": 300}],
            },
            "trainer": {"batchSize": 128, "maxSamples": 2000},
        }
    )
    assert spec.threshold_grams_per_kwh == 120
    assert spec.max_delay == timedelta(minutes=90)
    assert spec.provider.secret_ref is not None and spec.provider.secret_ref.key == "token"
    assert spec.provider.fallback[0].value == 300
    assert spec.trainer is not None and spec.trainer.batch_size == 128


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"zone": "DE"}, "exactly one of spec.trainer or spec.jobTemplate"),
        (
            {"zone": "DE", "trainer": {}, "jobTemplate": {"spec": {}}},
            "exactly one of spec.trainer or spec.jobTemplate",
        ),
        ({"zone": "DE", "trainer": {}, "maxDelay": "soon"}, "spec.maxDelay"),
        ({"zone": "DE", "trainer": {}, "provider": {"name": "nope"}}, "spec.provider.name"),
        ({"zone": "DE", "trainer": {}, "thresholdGramsPerKWh": -5}, "thresholdGramsPerKWh"),
    ],
)
def test_bad_specs_give_one_readable_line(raw: dict, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_status_round_trips_in_camel_case() -> None:
    wire = {
        "phase": "Succeeded",
        "energyKWh": 0.01,
        "logConfigMap": "a-carbon-log",
        "savedPercent": 12.5,
        "trainer": {"accuracy": 0.98, "durationSeconds": 30.0},
        "decision": {"action": "run", "reason": "clean", "plannedStart": "2021-01-01T00:00:00Z"},
    }
    status = parse_status(wire)
    assert status.energy_kwh == 0.01
    assert status.trainer is not None and status.trainer.duration_seconds == 30.0
    assert status.wire() == wire
    assert CarbonAwareJobStatus().wire() == {}


def test_crd_duration_rule_is_the_core_pattern() -> None:
    """The CRD's CEL rule and the parser must accept the same strings."""
    crd = yaml.safe_load((REPO / "manifests" / "crd.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rule = props["properties"]["maxDelay"]["x-kubernetes-validations"][0]["rule"]
    cel_regex = re.search(r"matches\('(.*)'\)", rule).group(1).replace("\\\\", "\\")
    assert cel_regex == DURATION_PATTERN


def test_interruptible_spec_and_status_segments_parse() -> None:
    spec = parse_spec(
        {"zone": "DE", "interruptible": True, "trainer": {"checkpointVolume": {"claimName": "c"}}}
    )
    assert spec.interruptible is True
    assert spec.trainer is not None and spec.trainer.checkpoint_volume is not None
    assert spec.trainer.checkpoint_volume.claim_name == "c"
    assert parse_spec({"zone": "DE", "trainer": {}}).interruptible is False
    wire = {
        "segments": [
            {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T02:00:00Z"},
            {"start": "2026-01-01T05:00:00Z"},  # still running
        ]
    }
    status = parse_status(wire)
    assert status.segments is not None and status.segments[1].end is None
    assert status.wire() == wire
