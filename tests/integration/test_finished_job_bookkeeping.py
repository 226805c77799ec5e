"""A finished job's bookkeeping (the log ConfigMap with its plot, then the metrics) when the
log write fails: the tick is retried, and the job's energy and emissions are counted once,
after the write succeeded, not once per attempt.

The write is made to fail by a ValidatingAdmissionPolicy (the apiserver's own CEL admission)
that refuses a ConfigMap update carrying binaryData, i.e. the plot, in this namespace only;
deleting its binding lets the next attempt through."""

from __future__ import annotations

import contextlib
import time
import urllib.request
from pathlib import Path

import pytest
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import OperatorProcess, finish_pod, free_port, release
from jobapi import create, status, trainer_line, wait_phase

pytestmark = pytest.mark.integration

RESULT = trainer_line(status="completed", exit_code=0, accuracy=0.97, energy_kwh=0.003)
PUE = 1.2


def _no_plot_policy(name: str, namespace: str) -> tuple[dict, dict]:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [
                {"expression": "!has(object.binaryData)", "message": "test: no plot for now"}
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return policy, binding


def _energy_counted(port: int) -> float:
    """kWh in carbonaware_energy_joules_total, over every namespace and zone."""
    total = 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("carbonaware_energy_joules_total{"):
                total += float(line.split()[-1])
    return total / 3.6e6


def test_a_failed_log_write_does_not_count_the_finished_job_twice(
    crd, kube_api, kubeconfig: Path, tmp_path: Path
) -> None:
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    port = free_port()
    with throwaway_namespace(kube_api, "bookkeeping") as ns:
        policy, binding = _no_plot_policy(f"no-plot-{ns}", ns)
        admission.create_validating_admission_policy(policy)
        admission.create_validating_admission_policy_binding(binding)
        probe = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="probe"), data={"a": "b"})
        core.create_namespaced_config_map(ns, probe)

        def policy_in_force() -> bool:
            try:
                core.patch_namespaced_config_map("probe", ns, {"binaryData": {"p": "AA=="}})
            except client.exceptions.ApiException as exc:
                return exc.status == 422 or "no plot" in str(exc.body)
            return False

        operator = OperatorProcess(
            kubeconfig,
            (ns,),
            tmp_path / "operator.log",
            extra_env={"CARBONAWARE_METRICS_PORT": str(port)},
        )
        try:
            wait_for(policy_in_force, 30, "the admission policy to take effect")
            operator.start()
            spec = {
                "zone": "DE",
                "provider": {"name": "static", "value": 50},
                "pollInterval": "1s",
                "power": {"watts": 100, "pue": PUE},
                "trainer": off_node(),
            }
            create(kube_api, ns, "counted", spec)
            job_name = wait_phase(kube_api, ns, "counted", "Running", timeout=60)["jobName"]
            wait_for(lambda: finish_pod(kube_api, ns, job_name, 0, RESULT), 30, "the pod")
            wait_for(
                lambda: operator.log_text().count("test: no plot for now") >= 3,
                60,
                "three refused log writes",
            )
            assert status(kube_api, ns, "counted")["phase"] == "Running"
            assert _energy_counted(port) == 0.0  # not counted before its log is written
            admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
            done = wait_phase(kube_api, ns, "counted", "Succeeded", timeout=60)
            assert done["energyKWh"] == pytest.approx(0.003 * PUE)
            time.sleep(3)  # a few more reconciles' time: nothing is counted again
            assert _energy_counted(port) == pytest.approx(0.003 * PUE)
            stored = core.read_namespaced_config_map(done["logConfigMap"], ns)
            assert stored.binary_data and "carbon_plot.png" in stored.binary_data
        finally:
            operator.stop()
            release(kube_api, ns)
            admission.delete_validating_admission_policy(policy["metadata"]["name"])
            with contextlib.suppress(client.exceptions.ApiException):
                admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
