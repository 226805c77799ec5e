"""spec.placements: parsing, the Job built for the chosen placement, unschedulable pods."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from carbonaware.kube import builders
from carbonaware.kube.builders import parse_time
from carbonaware.kube.models import PlacementSpec, SpecError, parse_spec
from carbonaware.kube.placement import unschedulable_since
from carbonaware.kube.pod_placement import ZONE_ANNOTATION, combined_node_affinity

REGION = "topology.kubernetes.io/region"


def term(key: str, operator: str, *values: str) -> dict:
    """One nodeSelectorTerm with one expression."""
    expression = {"key": key, "operator": operator, **({"values": list(values)} if values else {})}
    return {"matchExpressions": [expression]}


TEMPLATE = {
    "spec": {
        "template": {
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "nodeSelector": {"gpu": "a100", REGION: "somewhere"},
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                term("arch", "In", "amd64"),
                                term("arch", "In", "arm64"),
                            ]
                        }
                    }
                },
            }
        }
    }
}
PLACEMENTS = [
    {"zone": "NL", "nodeSelector": {REGION: "europe-west4"}},
    {
        "zone": "US-CAL-CISO",
        "provider": {"name": "static", "value": 90},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [term(REGION, "In", "us-west1")]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": term("ssd", "Exists")}
            ],
        },
        "powerScale": 1.5,
    },
]


def build(spec: dict, placement: int = 0) -> dict:
    return builders.build_job_spec(
        name="train",
        namespace="ns",
        uid="uid-1",
        spec=parse_spec(spec),
        default_trainer_image="trainer:1",
        placement=placement,
    )


def test_placements_parse_and_the_first_is_the_default_zone():
    spec = parse_spec({"placements": PLACEMENTS, "provider": {"name": "replay"}, "trainer": {}})
    assert spec.zone == "NL"  # every single-zone reader sees the default placement
    first, second = spec.candidates()
    assert first.power_scale == 1.0 and second.power_scale == 1.5
    assert spec.provider_for(first).name == "replay"  # the job's provider
    assert spec.provider_for(second).name == "static"  # its own
    single = parse_spec({"zone": "DE", "trainer": {}})
    assert single.placements is None and single.candidates() == (PlacementSpec(zone="DE"),)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"trainer": {}}, "set exactly one of spec.zone or spec.placements"),
        ({"zone": "DE", "placements": PLACEMENTS, "trainer": {}}, "exactly one of spec.zone"),
        ({"placements": [], "trainer": {}}, "spec.placements"),
        ({"placements": [{"zone": "NL"}], "trainer": {}}, "placements.0: needs a nodeSelector"),
        (
            {"placements": PLACEMENTS, "interruptible": True, "trainer": {}},
            "interruptible with spec.placements is not supported",
        ),
        (
            {"placements": [{**PLACEMENTS[0], "powerScale": 0}], "trainer": {}},
            "spec.placements.0.powerScale",
        ),
    ],
)
def test_bad_placements_are_one_clear_error(spec, message):
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_spec(spec)


def test_the_chosen_placement_goes_to_the_trainer_pod_and_the_job_says_where():
    spec = {"placements": PLACEMENTS, "trainer": {"nodeSelector": {"gpu": "a100"}}}
    job = build(spec, 0)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100", REGION: "europe-west4"}
    assert "affinity" not in pod and "tolerations" not in pod
    assert job["metadata"]["annotations"][ZONE_ANNOTATION] == "NL"
    assert job["spec"]["template"]["metadata"]["annotations"][ZONE_ANNOTATION] == "NL"
    other = build(spec, 1)
    pod = other["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]
    assert other["metadata"]["annotations"][ZONE_ANNOTATION] == "US-CAL-CISO"
    # everything else about the Job is the same wherever it runs
    assert other["metadata"]["name"] == job["metadata"]["name"]
    assert other["spec"]["template"]["spec"]["containers"] == pod["containers"]


def test_a_single_zone_job_is_built_as_before():
    job = build({"zone": "DE", "trainer": {"nodeSelector": {"gpu": "a100"}}})
    assert ZONE_ANNOTATION not in job["metadata"]["annotations"]
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "a100"}


def test_placement_and_workload_affinity_must_both_hold():
    job = build({"placements": PLACEMENTS, "jobTemplate": TEMPLATE}, 1)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100", REGION: "somewhere"}  # no selector here
    assert pod["tolerations"] == [
        {"key": "gpu", "operator": "Exists"},
        {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},
    ]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    # (amd64 OR arm64) AND us-west1 == (amd64 AND us-west1) OR (arm64 AND us-west1)
    assert [[e["values"][0] for e in t["matchExpressions"]] for t in terms] == [
        ["amd64", "us-west1"],
        ["arm64", "us-west1"],
    ]
    preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["weight"] == 1
    # the region selector of the first placement overrides the template's
    first = build({"placements": PLACEMENTS, "jobTemplate": TEMPLATE}, 0)
    assert first["spec"]["template"]["spec"]["nodeSelector"][REGION] == "europe-west4"
    assert TEMPLATE["spec"]["template"]["spec"]["nodeSelector"][REGION] == "somewhere"


def test_combined_affinity_with_one_side_empty_is_the_other():
    field = {"matchFields": term("metadata.name", "In", "n1")["matchExpressions"]}
    only = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [field]}}
    assert combined_node_affinity({}, only) == only
    assert combined_node_affinity(only, {}) == only
    assert combined_node_affinity({}, {}) == {}


def pod(status: str | None, reason: str = "Unschedulable", at: str = "2026-01-01T00:00:05Z"):
    conditions = [] if status is None else [
        {"type": "PodScheduled", "status": status, "reason": reason, "lastTransitionTime": at}
    ]  # fmt: skip
    return {"status": {"conditions": conditions}}


def test_unschedulable_since_only_when_every_pod_is():
    first = "2026-01-01T00:00:01Z"
    assert unschedulable_since([pod("False", at=first), pod("False")]) == parse_time(first)
    assert unschedulable_since([pod("False"), pod("True", reason="")]) is None
    assert unschedulable_since([pod("False", reason="SchedulingGated")]) is None
    assert unschedulable_since([pod(None)]) is None  # not looked at by the scheduler yet
    assert unschedulable_since([]) is None  # no pod yet


def test_the_placements_example_parses_and_builds_one_job_per_zone():
    example = Path(__file__).resolve().parents[2] / "examples" / "placements.yaml"
    raw = yaml.safe_load(example.read_text())["spec"]
    spec = parse_spec(raw)
    assert [p.zone for p in spec.candidates()] == ["DE", "GB", "NL"] and spec.zone == "DE"
    regions = [build(raw, i)["spec"]["template"]["spec"]["nodeSelector"][REGION] for i in range(3)]
    assert regions == ["europe-west3", "europe-west2", "europe-west4"]
