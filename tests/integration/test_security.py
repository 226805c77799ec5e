"""Security on the real control plane: least privilege, no leaked secrets, hardened pods.

- RBAC: ``kubectl auth can-i --list`` as the operator's ServiceAccount equals, rule for rule,
  the minimal set the code needs (NEEDED below, each with the code path that needs it).
- A provider token from a Secret never reaches the operator's log, Events, status or the log
  ConfigMap, even when the provider echoes it back in its error messages (faultkit "leaky").
- Pods: the operator Deployment's and the trainer Job's pod templates pass the apiserver's
  Pod Security Admission at the ``restricted`` level (non-root, no privilege escalation,
  capabilities dropped, seccomp RuntimeDefault) and mount the root filesystem read-only.
- examples/networkpolicy.yaml is a valid NetworkPolicy that limits the operator's egress.
- The bounded ConfigMap log: 100,000 readings appended stay under its byte budget, and the
  ConfigMap built from it is accepted by the apiserver.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import FaultServer, OperatorProcess, release
from jobapi import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SA_NAMESPACE, SA_NAME = "carbonaware-system", "carbonaware-operator"
TOKEN = "em-tok-7f3a9c1e-never-print-me"

# resource -> verbs: exactly what the operator's code (and kopf under it) calls.
NEEDED = {
    # kopf: list+watch the jobs; patch for its finalizer and bookkeeping annotations;
    # kube/cronjobs.py: create each run (409 -> get), delete runs (history, Replace).
    "carbonawarejobs.carbonaware.io": {"get", "list", "watch", "patch", "create", "delete"},
    # kopf on CarbonAwareCronJobs, as on the jobs; status and owned runs likewise.
    "carbonawarecronjobs.carbonaware.io": {"get", "list", "watch", "patch"},
    "carbonawarecronjobs.carbonaware.io/status": {"patch"},
    "carbonawarecronjobs.carbonaware.io/finalizers": {"update"},
    # handlers: every status write (Tick -> patch.status).
    "carbonawarejobs.carbonaware.io/status": {"patch"},
    # owned objects with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
    "carbonawarejobs.carbonaware.io/finalizers": {"update"},
    # KubeApi.ensure_job (create, 409 -> get), read_job, suspend_job (interruptible jobs).
    "jobs.batch": {"get", "create", "patch"},
    # KubeApi.job_pods: the trainer's termination message.
    "pods": {"list"},
    # KubeApi.ensure_service: the ranks' rendezvous (create; 409 -> patch its selector).
    "services": {"create", "patch"},
    # KubeApi.read_claim: the checkpoint claim's access modes (workers > 1).
    "persistentvolumeclaims": {"get"},
    # KubeApi.read_configmap / write_configmap (create, replace).
    "configmaps": {"get", "create", "update"},
    # KubeApi.secret_value: one named Secret, never listed.
    "secrets": {"get"},
    # kopf.info/kopf.warn Events.
    "events": {"create"},
    # kopf: notices the CRD appear or go.
    "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
    # kopf with CARBONAWARE_NAMESPACES: follows namespaces.
    "namespaces": {"list", "watch"},
    # kopf peering (main.ensure_peering creates the object).
    "clusterkopfpeerings.kopf.dev": {"get", "list", "watch", "patch", "create"},
    # The carbon gate (kube/carbon_gate.py): kopf's Workload watch; CarbonGate._patch holds a
    # waiting Workload inactive and writes the accounting; _apply_check (status SSA).
    "workloads.kueue.x-k8s.io": {"list", "watch", "patch"},
    "workloads.kueue.x-k8s.io/status": {"patch"},
    # CarbonGate.sweep lists the AdmissionChecks and marks its own Active.
    "admissionchecks.kueue.x-k8s.io": {"list"},
    "admissionchecks.kueue.x-k8s.io/status": {"patch"},
    # CarbonGate.sweep reads each check's CarbonPolicy by name.
    "carbonpolicies.carbonaware.io": {"get"},
}
# What every authenticated user may do (system:basic-user): not the operator's doing.
EVERYONE = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


def kubectl_run(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None):
    return subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def sa_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with the ServiceAccount's token only."""
    config = yaml.safe_load(admin.read_text())
    cluster = dict(config["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    user = {"name": SA_NAME, "user": {"token": token}}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [user],
                "contexts": [{"name": SA_NAME, "context": {"cluster": "local", "user": SA_NAME}}],
                "current-context": SA_NAME,
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def installed(kubectl: str, kubeconfig: Path, tmp_path_factory) -> Path:
    """The manifests' CRDs, namespace and RBAC; returns a kubeconfig for the operator's SA."""
    for name in ("crd.yaml", "peering.yaml", "namespace.yaml", "rbac.yaml"):
        ok(kubectl_run(kubectl, kubeconfig, "apply", "-f", str(MANIFESTS / name)))
    ok(
        kubectl_run(
            kubectl, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/carbonawarejobs.carbonaware.io",
        )
    )  # fmt: skip
    token = ok(
        kubectl_run(
            kubectl, kubeconfig, "-n", SA_NAMESPACE, "create", "token", SA_NAME, "--duration=1h"
        )
    ).strip()
    path = tmp_path_factory.mktemp("sa") / "operator.kubeconfig"
    return sa_kubeconfig(kubeconfig, token, path)


def can_i_list(kubectl: str, sa_config: Path, namespace: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` parsed: resource -> verbs (resource names left out)."""
    out = ok(kubectl_run(kubectl, sa_config, "auth", "can-i", "--list", "-n", namespace))
    rules: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        if not line.strip() or line.lstrip().startswith("["):
            continue  # non-resource URLs (/api, /healthz, ...) are everyone's
        resource, verbs = line.split()[0], line[line.rindex("[") + 1 : line.rindex("]")]
        rules.setdefault(resource, set()).update(verbs.split())
    return rules


def test_the_service_account_can_do_exactly_what_the_code_needs(
    installed: Path, kubectl: str, kube_api
) -> None:
    with throwaway_namespace(kube_api, "rbac") as ns:
        granted = can_i_list(kubectl, installed, ns)
    granted = {r: v for r, v in granted.items() if r not in EVERYONE}
    extra = {r: sorted(v - NEEDED.get(r, set())) for r, v in granted.items()}
    extra = {r: v for r, v in extra.items() if v}
    missing = {r: sorted(v - granted.get(r, set())) for r, v in NEEDED.items()}
    missing = {r: v for r, v in missing.items() if v}
    assert not extra, f"granted beyond what the code needs: {extra}"
    assert not missing, f"the code needs, but is not granted: {missing}"
    assert not any("*" in verbs for verbs in granted.values())


def test_a_provider_token_never_reaches_logs_events_status_or_the_log_configmap(
    installed: Path, kube_api, fault_server: FaultServer, tmp_path: Path
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    fault_server.set("DE", mode="leaky")
    fault_server.set("FR", mode="ok", intensity=40)
    with throwaway_namespace(kube_api, "secrets") as ns:
        core.create_namespaced_secret(
            ns,
            client.V1Secret(metadata=client.V1ObjectMeta(name="em"), string_data={"token": TOKEN}),
        )
        operator = OperatorProcess(installed, (ns,), tmp_path / "operator.log").start()
        try:
            em = {"name": "electricitymaps", "baseUrl": fault_server.base_url}
            em["secretRef"] = {"name": "em"}
            api = client.CustomObjectsApi(kube_api)
            for name, zone, provider, max_delay in (
                # the API echoes the token in its 401/500 bodies; no fallback: deadline start
                ("leaky", "DE", em, "6s"),
                # the same, falling back to a static value
                ("leaky-chain", "DE", {**em, "fallback": [{"name": "static", "value": 50}]}, "1h"),
                # a healthy provider: the token is sent, and the job runs and logs readings
                ("healthy", "FR", em, "1h"),
            ):
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "CarbonAwareJob",
                    "metadata": {"name": name},
                    "spec": {
                        "zone": zone,
                        "provider": provider,
                        "maxDelay": max_delay,
                        "thresholdGramsPerKWh": 100,
                        "pollInterval": "1s",
                        "trainer": off_node(),
                    },
                }
                api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

            def all_running() -> list | None:
                items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
                phases = [(i.get("status") or {}).get("phase") for i in items]
                return items if phases.count("Running") == 3 else None

            items = wait_for(all_running, 60, "all three jobs to start")
        finally:
            operator.stop()
            release(kube_api, ns)
        assert TOKEN in fault_server.tokens_seen, "the token never reached the provider"
        leaky = next(i for i in items if i["metadata"]["name"] == "leaky")["status"]
        available = next(c for c in leaky["conditions"] if c["type"] == "ProviderAvailable")
        assert available["status"] == "False" and "***" in available["message"]
        events = core.list_namespaced_event(ns).items
        assert any(e.reason == "ProviderUnavailable" for e in events)
        configmaps = core.list_namespaced_config_map(ns).items
        places = {
            "operator log": operator.log_text(),
            "status": json.dumps([i.get("status") for i in items]),
            "objects": json.dumps([i.get("metadata", {}).get("annotations") for i in items]),
            "events": " ".join(f"{e.reason} {e.message}" for e in events),
            "log ConfigMaps": json.dumps([c.data for c in configmaps]),
        }
        assert "***" in places["operator log"] or "***" in places["events"]
        for where, text in places.items():
            assert TOKEN not in text, f"the provider token leaked into the {where}"
            assert TOKEN[:16] not in text, f"part of the provider token leaked into the {where}"


# --- pods: the restricted Pod Security Standard, enforced by the apiserver ------------------


def _deployment_pod() -> dict:
    for doc in yaml.safe_load_all((MANIFESTS / "deployment.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            return doc["spec"]["template"]
    raise AssertionError("manifests/deployment.yaml has no Deployment")


def _trainer_pod() -> dict:
    from carbonaware.kube.builders import build_job_spec
    from carbonaware.kube.models import parse_spec

    spec = parse_spec({"zone": "DE", "trainer": {"epochs": 1}})
    job = build_job_spec(
        name="mnist",
        namespace="x",
        uid="00000000-0000-0000-0000-000000000000",
        spec=spec,
        default_trainer_image="carbonaware/trainer:dev",
    )
    return job["spec"]["template"]


@pytest.mark.parametrize("which", ["operator Deployment", "trainer Job"])
def test_pods_pass_the_restricted_pod_security_standard(kube_api, which: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    template = copy.deepcopy(
        _deployment_pod() if which == "operator Deployment" else _trainer_pod()
    )
    pod_spec = template["spec"]
    for container in pod_spec["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert not security.get("capabilities", {}).get("add")
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    # Drop what only exists inside the operator's namespace (SA, ConfigMaps, Secrets).
    pod_spec.pop("serviceAccountName", None)
    core = client.CoreV1Api(kube_api)
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    with throwaway_namespace(kube_api, "psa") as ns:
        core.patch_namespace(ns, {"metadata": {"labels": labels}})
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": pod_spec}
        core.create_namespaced_pod(ns, pod, dry_run="All")  # admitted as restricted
        # And the check is live: the same pod, running as root, is refused.
        root = copy.deepcopy(pod)
        root["spec"]["securityContext"] = {"runAsUser": 0}
        for container in root["spec"]["containers"]:
            container.pop("securityContext", None)
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(ns, root, dry_run="All")
        assert refused.value.status == 403 and "restricted" in refused.value.body


# --- the NetworkPolicy example ---------------------------------------------------------------


def test_the_networkpolicy_example_limits_operator_egress(kube_api) -> None:
    from kubernetes import client

    policy = yaml.safe_load((REPO / "examples" / "networkpolicy.yaml").read_text())
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    operator_labels = _deployment_pod()["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= operator_labels.items(), "the policy does not select the operator"
    ports = {
        p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports") or []
    }  # DNS, the apiserver, HTTPS: nothing else
    assert ports == {53, 443, 6443}
    assert all(rule.get("ports") for rule in policy["spec"]["egress"]), "an all-ports rule"
    with throwaway_namespace(kube_api, "netpol") as ns:
        policy["metadata"]["namespace"] = ns
        client.NetworkingV1Api(kube_api).create_namespaced_network_policy(ns, policy, dry_run="All")


# --- the bounded log ---------------------------------------------------------------------------


def test_100000_readings_keep_the_log_configmap_under_budget(kube_api) -> None:
    from carbonaware.core.intensity_log import DEFAULT_BUDGET_BYTES, IntensityLog
    from carbonaware.core.model import Basis, Reading
    from carbonaware.kube.builders import build_log_configmap
    from kubernetes import client

    log = IntensityLog({"zone": "DE", "threshold": "150"})
    start = datetime(2024, 1, 1, tzinfo=UTC)
    largest = 0
    for i in range(100_000):  # five-minute readings: almost a year of waiting
        log.append(
            Reading(
                zone="DE",
                timestamp=start + timedelta(minutes=5 * i),
                intensity=100 + (i * 7919) % 400 + 0.123,
                basis=Basis.DIRECT,
                provider="electricitymaps",
            )
        )
        if i % 1000 == 0:
            largest = max(largest, log.size_bytes())
    size = log.size_bytes()
    assert max(largest, size) <= DEFAULT_BUDGET_BYTES
    assert log.readings[-1].timestamp == start + timedelta(minutes=5 * 99_999)  # newest kept
    assert "downsampled_before" in log.metadata
    body = build_log_configmap(name="year-long", namespace="x", uid="0" * 36, csv_text=log.to_csv())
    with throwaway_namespace(kube_api, "budget") as ns:
        body["metadata"]["namespace"] = ns
        body["metadata"].pop("ownerReferences", None)
        stored = client.CoreV1Api(kube_api).create_namespaced_config_map(ns, body)
        assert len(stored.data["carbon_log.csv"].encode()) == size
