"""Invalid CarbonAwareJobs against a real kube-apiserver and a running operator.

Two lines of defence, each tested as a user meets it:

1. The apiserver (the CRD's structural schema and CEL rules) rejects what can be known from
   the object alone: wrong types, negative or absurd numbers, bad durations, unknown
   providers, missing or huge fields, a ``jobTemplate`` that is not a JobTemplateSpec. The
   table below complements tests/integration/test_crd.py (which owns the basic cases) with
   the hostile ones; each is sent server-side dry-run, so nothing is stored.
2. What only the operator can know (the provider does not know the zone, the named Secret or
   trace does not exist, the Job API refuses the template) ends in phase ``Failed`` with a
   condition that says why, an Event, and the operator still serving the other jobs: never
   a crash loop.

The operator runs as a subprocess (``carbonaware-operator``) with the admin kubeconfig; its
RBAC is tested in test_security.py. There is no node in this tier: no pod runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import FaultServer, OperatorProcess, release
from jobapi import GROUP, PLURAL, VERSION
from jobapi import status as job_status

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
OK = {"zone": "DE", "trainer": {}}


def with_(**fields) -> dict:
    return {**OK, **fields}


# (id, spec, text the apiserver's message must contain)
REJECTED = [
    ("threshold-a-string", with_(thresholdGramsPerKWh="low"), "must be of type number"),
    ("threshold-negative", with_(thresholdGramsPerKWh=-5), "must be above 0 and at most 2000"),
    ("threshold-absurd", with_(thresholdGramsPerKWh=1e12), "must be above 0 and at most 2000"),
    ("zone-a-number", {"zone": 49, "trainer": {}}, "must be of type string"),
    ("zone-empty", {"zone": "", "trainer": {}}, "spec.zone"),
    ("zone-injection", {"zone": "DE; rm -rf /", "trainer": {}}, "zone must be a zone code"),
    ("zone-huge", {"zone": "Z" * 100_000, "trainer": {}}, "may not be more than 64"),
    ("maxdelay-a-number", with_(maxDelay=3600), "must be of type string"),
    ("maxdelay-words", with_(maxDelay="one day"), "must be a duration"),
    ("maxdelay-years", with_(maxDelay="2y"), "must be a duration"),
    ("maxdelay-huge", with_(maxDelay="9" * 10_000 + "h"), "may not be more than 32"),
    ("expected-negative", with_(expectedDuration="-30m"), "must be a duration"),
    # Durations that no date can hold (they used to pass, then raise in every reconcile).
    ("maxdelay-overflows", with_(maxDelay="999999999d"), "must be a duration"),
    ("expected-overflows", with_(expectedDuration="99999999999s"), "must be a duration"),
    ("poll-zero", with_(pollInterval="0s"), "pollInterval must be a duration between 1s"),
    ("poll-negative", with_(pollInterval="-5m"), "pollInterval must be a duration"),
    ("poll-absurd", with_(pollInterval="1000h"), "pollInterval must be a duration"),
    ("strategy-unknown", with_(strategy="yolo"), "strategy must be 'threshold' or 'forecast'"),
    ("provider-a-string", with_(provider="electricitymaps"), "must be of type object"),
    ("provider-unknown", with_(provider={"name": "carbonfairy"}), "provider name must be one of"),
    (
        "fallback-unknown",
        with_(provider={"name": "replay", "fallback": [{"name": "psychic"}]}),
        "provider name must be one of",
    ),
    (
        "fallback-too-many",
        with_(provider={"name": "replay", "fallback": [{"name": "static", "value": 1}] * 5}),
        "must have at most 4 items",
    ),
    (
        "base-url-file",
        with_(provider={"name": "electricitymaps", "baseUrl": "file:///etc/passwd"}),
        "baseUrl must be an http:// or https:// URL",
    ),
    (
        "replay-speed-negative",
        with_(provider={"name": "replay", "speed": -1}),
        "replay speed must be above 0",
    ),
    (
        "static-value-absurd",
        with_(provider={"name": "static", "value": 1e9}),
        "static value must be between 0 and 5000",
    ),
    (
        "secret-ref-without-name",
        with_(provider={"name": "electricitymaps", "secretRef": {"key": "token"}}),
        "spec.provider.secretRef.name: Required value",
    ),
    ("watts-negative", with_(power={"watts": -100}), "power.watts must be above 0"),
    ("pue-absurd", with_(power={"pue": 40}), "power.pue must be between 1.0 and 3.0"),
    ("batch-zero", with_(trainer={"batchSize": 0}), "trainer.batchSize must be between 1"),
    ("epochs-absurd", with_(trainer={"epochs": 10**9}), "trainer.epochs must be between 1"),
    ("template-a-string", {"zone": "DE", "jobTemplate": "busybox"}, "must be of type object"),
    (
        "template-is-a-pod-spec",
        {"zone": "DE", "jobTemplate": {"spec": {"containers": [{"name": "c", "image": "b"}]}}},
        "spec.jobTemplate.spec.template: Required value",
    ),
    (
        "template-containers-not-a-list",
        {"zone": "DE", "jobTemplate": {"spec": {"template": {"spec": {"containers": "b"}}}}},
        "must be of type array",
    ),
    ("template-and-trainer", with_(jobTemplate=TEMPLATE), "set exactly one of spec.trainer"),
    ("spec-a-list", ["DE"], "must be of type object"),
]


def _message(exc) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.body)


def body(name: str, spec) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CarbonAwareJob",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("spec", "expected"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_the_apiserver_rejects_it_with_a_clear_message(crd, kube_api, spec, expected: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as rejected:
        api.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, body("bad", spec), dry_run="All"
        )
    message = _message(rejected.value)
    assert rejected.value.status == 422, message
    assert expected in message
    # One readable message, not a dump of the object back at the user.
    assert len(message) < 2_000, f"{len(message)} characters: {message[:300]}..."


def test_a_valid_object_passes_the_same_route(crd, kube_api) -> None:
    """The table above fails for the right reason: the same call with a good spec succeeds."""
    from kubernetes import client

    created = client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, body("good", OK), dry_run="All"
    )
    assert created["spec"]["thresholdGramsPerKWh"] == 200  # defaults applied


# --- what only the operator can know -------------------------------------------------------


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator_ns(crd, kube_api, kubeconfig: Path, tmp_path_factory) -> Iterator[tuple]:
    with throwaway_namespace(kube_api, "badinput") as ns:
        log = tmp_path_factory.mktemp("badinput") / "operator.log"
        operator = OperatorProcess(kubeconfig, (ns,), log).start()
        try:
            yield operator, ns
        finally:
            operator.stop()
            release(kube_api, ns)


def test_what_only_the_operator_can_know_fails_the_job_not_the_operator(
    operator_ns, kube_api, fault_server: FaultServer
) -> None:
    from kubernetes import client

    operator, ns = operator_ns
    api = client.CustomObjectsApi(kube_api)
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="em-wrong-key"), string_data={"apikey": "x"}
        ),
    )
    core.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="em"), string_data={"token": "t"})
    )
    fault_server.set("XX", mode="gone")
    electricitymaps = {"name": "electricitymaps", "baseUrl": fault_server.base_url}
    clean_now = {"name": "static", "value": 50}
    # A Job the Job API refuses: a Job's pods may not restart Always.
    refused_template = {
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Always",
                    "containers": [{"name": "c", "image": "busybox"}],
                }
            }
        }
    }
    # name -> (spec, condition reason, text in the message)
    cases = {
        "unknown-zone": (
            {"zone": "XX", "provider": {**electricitymaps, "secretRef": {"name": "em"}}},
            "UnknownZone",
            "XX",
        ),
        "missing-secret": (
            {"zone": "DE", "provider": {**electricitymaps, "secretRef": {"name": "nope"}}},
            "InvalidSpec",
            "cannot read Secret",
        ),
        "secret-without-key": (
            {"zone": "DE", "provider": {**electricitymaps, "secretRef": {"name": "em-wrong-key"}}},
            "InvalidSpec",
            "has no key 'token'",
        ),
        "missing-trace": (
            {"zone": "DEMO", "provider": {"name": "replay", "trace": "/nonexistent/trace.csv"}},
            "InvalidSpec",
            "/nonexistent/trace.csv",
        ),
        "maxdelay-beyond-ten-years": (
            {"zone": "DE", "provider": clean_now, "maxDelay": "9999d"},
            "InvalidSpec",
            "longer than 3650d",
        ),
        "refused-template": (
            {"zone": "DE", "provider": clean_now, "jobTemplate": refused_template},
            "JobRejected",
            "restartPolicy",
        ),
    }
    for name, (spec, _, _) in cases.items():
        spec = {"pollInterval": "1s", "trainer": off_node(), **spec}
        if "jobTemplate" in spec:
            del spec["trainer"]
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(name, spec))
    # And a good one next to them: the operator must still serve it.
    api.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        PLURAL,
        body(
            "good",
            {"zone": "DE", "provider": clean_now, "pollInterval": "1s", "trainer": off_node()},
        ),
    )

    for name, (_, reason, text) in cases.items():

        def failed(name=name) -> dict | None:
            current = job_status(kube_api, ns, name)
            return current if current.get("phase") == "Failed" else None

        status = wait_for(failed, 60, f"{name} to reach phase Failed")
        condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
        assert (condition["status"], condition["reason"]) == ("False", reason), (name, condition)
        assert text in condition["message"] and text in status["message"], (name, status)
        assert "Traceback" not in status["message"]

        def failed_event(name=name, text=text) -> bool:
            # kopf posts Events from a queue, after the status patch: give it a moment.
            events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
            return any(e.reason == "Failed" and text in e.message for e in events.items)

        wait_for(failed_event, 20, f"{name}'s Failed Event")
        jobs = client.BatchV1Api(kube_api).list_namespaced_job(
            ns, label_selector=f"carbonaware.io/job={name}"
        )
        assert jobs.items == [], f"{name}: a Job was created for a failed spec"

    good = wait_for(
        lambda: job_status(kube_api, ns, "good").get("phase") == "Running", 60, "good to run"
    )
    assert good
    # Failed is final: a few more ticks later nothing flapped, nobody restarted.
    fault_server_calls = fault_server.count("XX")
    time.sleep(3)
    assert fault_server.count("XX") == fault_server_calls, "a Failed job kept polling"
    for name in cases:
        assert job_status(kube_api, ns, name)["phase"] == "Failed"
    assert operator.alive() and operator.starts == 1
