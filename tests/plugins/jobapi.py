"""The CarbonAwareJob API as the tests use it: one set of constants and helpers."""

from __future__ import annotations

from typing import Any

from cluster_fixtures import wait_for

GROUP, VERSION, PLURAL = "carbonaware.io", "v1alpha1", "carbonawarejobs"


def trainer_line(**fields: Any) -> str:
    """A final report line as carbon-trainer writes it (carbontrainer.report.to_json_line),
    for tests that play the kubelet: the trainer's serialisation and energy label, the test's
    figures (``fields`` override these)."""
    from carbontrainer.report import to_json_line

    report = {
        "status": "ok",
        "accuracy": 0.98,
        "epochs": 1,
        "wall_seconds": 30.0,
        "energy_kwh": 0.002,
        "energy_method": "measured:rapl-package",  # a label the trainer emits
        "device": "cpu",
    }
    return to_json_line(report | fields)


def create(kube_api, namespace: str, name: str, spec: dict[str, Any]) -> dict:
    """Create the CarbonAwareJob ``name`` with ``spec`` in ``namespace``."""
    from kubernetes import client

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CarbonAwareJob",
        "metadata": {"name": name},
        "spec": spec,
    }
    return client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )


def get(kube_api, namespace: str, name: str) -> dict:
    from kubernetes import client

    return client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )


def status(kube_api, namespace: str, name: str) -> dict:
    return get(kube_api, namespace, name).get("status") or {}


def wait_phase(kube_api, namespace: str, name: str, phase: str, timeout: float = 60) -> dict:
    """The job's status once it reaches ``phase`` (fails the test after ``timeout`` s)."""

    def reached() -> dict | None:
        current = status(kube_api, namespace, name)
        return current if current.get("phase") == phase else None

    return wait_for(reached, timeout, f"{name} to reach phase {phase}", interval_s=0.25)
