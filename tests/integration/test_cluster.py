"""The test cluster is a real Kubernetes: schema pruning, RBAC, the Job controller,
the scheduler and the garbage collector all act as they do in production.

Runs against `$KUBECONFIG` (e.g. kind) or the local control plane of hack/local-cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cluster_fixtures import CLUSTER_DIR, LOCAL_CLUSTER, parse_exports, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.integration


def api_status(call) -> int:
    """HTTP status of a Kubernetes API call: 200 when it succeeds, else the error's."""
    try:
        call()
    except ApiException as error:
        return error.status
    return 200


@pytest.fixture
def widget_crd(kube_api):
    """A namespaced CRD with a structural schema and a status subresource."""
    extensions = client.ApiextensionsV1Api(kube_api)
    group = f"it{uuid.uuid4().hex[:8]}.carbonaware.io"  # unique: sessions may run at once
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"size": {"type": "integer", "minimum": 1}},
            },
            "status": {
                "type": "object",
                "properties": {"phase": {"type": "string"}},
            },
        },
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
            ],
        },
    }
    extensions.create_custom_resource_definition(crd)

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(f"widgets.{group}").status
        return any(
            c.type == "Established" and c.status == "True" for c in conditions.conditions or []
        )

    wait_for(established, 30, f"CRD widgets.{group} to be Established")
    try:
        yield group
    finally:
        extensions.delete_custom_resource_definition(f"widgets.{group}")


def test_crd_schema_prunes_unknown_fields_and_status_is_a_subresource(
    kube_api, namespace, widget_crd
):
    objects = client.CustomObjectsApi(kube_api)
    group, version, plural = widget_crd, "v1", "widgets"
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3, "colour": "green"},
    }

    # The API may be served a moment after Established on a busy apiserver.
    def created():
        try:
            return objects.create_namespaced_custom_object(
                group, version, namespace, plural, widget
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    stored = wait_for(created, 30, "the Widget API to be served")
    assert stored["spec"] == {"size": 3}, "a field the schema does not declare is pruned"

    invalid = {**widget, "metadata": {"name": "w2"}, "spec": {"size": "three"}}
    assert (
        api_status(
            lambda: objects.create_namespaced_custom_object(
                group, version, namespace, plural, invalid
            )
        )
        == 422
    ), "the schema's types are validated"

    patched = objects.patch_namespaced_custom_object_status(
        group,
        version,
        namespace,
        plural,
        "w1",
        {"status": {"phase": "Running", "undeclared": 1}, "spec": {"size": 9}},
    )
    assert patched["status"] == {"phase": "Running"}, "undeclared status field is pruned"
    assert patched["spec"] == {"size": 3}, "the status subresource ignores spec changes"

    main = objects.patch_namespaced_custom_object(
        group, version, namespace, plural, "w1", {"status": {"phase": "Hacked"}}
    )
    assert main["status"] == {"phase": "Running"}, "the main resource ignores status changes"


def service_account_api(kube_api, token: str) -> client.ApiClient:
    """A client that authenticates only with a ServiceAccount's bearer token."""
    admin = kube_api.configuration
    config = client.Configuration()
    config.host = admin.host
    config.ssl_ca_cert = admin.ssl_ca_cert
    config.verify_ssl = admin.verify_ssl
    config.api_key = {"authorization": token}
    config.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(config)


def test_rbac_denies_a_service_account_until_a_role_binding_allows_it(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    with service_account_api(kube_api, token) as as_reader:
        reader_core = client.CoreV1Api(as_reader)

        def list_config_maps() -> int:
            return api_status(lambda: reader_core.list_namespaced_config_map(namespace))

        assert list_config_maps() == 403, "no RoleBinding yet: RBAC denies"

        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="configmap-reader"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=[""], resources=["configmaps"], verbs=["get", "list"]
                    )
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
                ],
            ),
        )
        # The authorizer reads RBAC objects from an informer cache: allow it a moment.
        wait_for(lambda: list_config_maps() == 200, 15, "the RoleBinding to take effect")
        assert api_status(lambda: reader_core.list_namespaced_secret(namespace)) == 403, (
            "the Role grants configmaps only"
        )


def test_job_controller_creates_a_pod_the_scheduler_sees_and_gc_removes(kube_api, namespace):
    batch = client.BatchV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    job = batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="hello"),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[
                            client.V1Container(
                                name="hello",
                                image="carbonaware.local/never-pulled:test",
                                command=["echo", "hello"],
                            )
                        ],
                    )
                ),
            ),
        ),
    )

    def job_pods() -> list[client.V1Pod]:
        return core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/controller-uid={job.metadata.uid}"
        ).items

    pod = wait_for(job_pods, 30, "the Job controller to create a Pod")[0]
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("Job", job.metadata.uid, True)

    def scheduler_decided() -> bool:
        conditions = core.read_namespaced_pod(pod.metadata.name, namespace).status.conditions
        # With no node the scheduler marks the pod Unschedulable; with one it binds it.
        return any(c.type == "PodScheduled" for c in conditions or [])

    wait_for(scheduler_decided, 30, "the scheduler to act on the Job's Pod")
    wait_for(
        lambda: (
            (batch.read_namespaced_job_status("hello", namespace).status.active or 0)
            + (batch.read_namespaced_job_status("hello", namespace).status.failed or 0)
            >= 1
        ),
        30,
        "the Job controller to count the Pod in the Job's status",
    )

    batch.delete_namespaced_job("hello", namespace, propagation_policy="Background")
    wait_for(lambda: not job_pods(), 60, "the garbage collector to delete the orphaned Pod")


@pytest.fixture
def scratch_cluster_dir(tmp_path_factory) -> Path:
    """A second local cluster in its own directory, so the lifecycle can be tested."""
    if os.environ.get("KUBECONFIG") and not Path(os.environ["KUBECONFIG"]).resolve().is_relative_to(
        CLUSTER_DIR.resolve()
    ):
        pytest.skip("tests hack/local-cluster itself; KUBECONFIG points at another cluster")
    return tmp_path_factory.mktemp("scratch-cluster")


def local_cluster(cluster_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LOCAL_CLUSTER), *args],
        env={**os.environ, "CLUSTER_DIR": str(cluster_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def component_pids(cluster_dir: Path) -> dict[str, int]:
    state = json.loads((cluster_dir / "state.json").read_text())
    return {name: proc["pid"] for name, proc in state["processes"].items()}


def test_local_cluster_up_is_idempotent_and_down_stops_exactly_its_processes(
    scratch_cluster_dir,
):
    first = local_cluster(scratch_cluster_dir, "up")
    assert first.returncode == 0, first.stderr
    try:
        pids = component_pids(scratch_cluster_dir)
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

        again = local_cluster(scratch_cluster_dir, "up")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert component_pids(scratch_cluster_dir) == pids, "no second copy was started"
        assert parse_exports(again.stdout) == parse_exports(first.stdout)

        status = local_cluster(scratch_cluster_dir, "status")
        assert status.returncode == 0, status.stdout
        assert "ok" in status.stdout
    finally:
        down = local_cluster(scratch_cluster_dir, "down")
    assert down.returncode == 0, down.stderr
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still runs"
    assert not (scratch_cluster_dir / "state.json").exists()
    assert not (scratch_cluster_dir / "pki").exists(), "down removes the throwaway CA"
    assert (scratch_cluster_dir / "logs" / "kube-apiserver.log").exists(), "logs are kept"
    assert local_cluster(scratch_cluster_dir, "status").returncode == 1

    # Warm up again after down: a fresh cluster (new CA, new processes) comes up.
    second = local_cluster(scratch_cluster_dir, "up")
    try:
        assert second.returncode == 0, second.stderr
        assert set(component_pids(scratch_cluster_dir).values()).isdisjoint(pids.values())
    finally:
        assert local_cluster(scratch_cluster_dir, "down").returncode == 0


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_local_cluster_up_fails_loudly_and_leaves_nothing_running(scratch_cluster_dir, tmp_path):
    # A kube-apiserver that dies at start stands in for any broken component; the others
    # (etcd included) are the real binaries.
    real_bin = subprocess.run(
        ["bash", str(LOCAL_CLUSTER.parent / "build-k8s.sh")], capture_output=True, text=True
    ).stdout.splitlines()[-1]
    broken_bin = tmp_path / "bin"
    broken_bin.mkdir()
    for name in ("etcd", "kube-controller-manager", "kube-scheduler"):
        (broken_bin / name).symlink_to(Path(real_bin) / name)
    apiserver = broken_bin / "kube-apiserver"
    apiserver.write_text("#!/bin/sh\necho 'E0000 cannot start: broken on purpose' >&2\nexit 1\n")
    apiserver.chmod(0o755)

    up = subprocess.run(
        [str(LOCAL_CLUSTER), "up"],
        env={**os.environ, "CLUSTER_DIR": str(scratch_cluster_dir), "K8S_BIN": str(broken_bin)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 1
    assert "kube-apiserver exited during start-up" in up.stderr
    assert "broken on purpose" in up.stderr, "the component's log is shown"
    assert up.stdout == "", "no export lines for a cluster that is not up"
    assert not (scratch_cluster_dir / "state.json").exists()
    assert "--data-dir" in (scratch_cluster_dir / "logs" / "etcd.log").read_text(), "etcd ran"
    assert processes_mentioning(scratch_cluster_dir) == [], "etcd, started first, was stopped"


def processes_mentioning(path: Path) -> list[str]:
    """Command lines of live processes that name `path` (the cluster's components do)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        text = " ".join(a.decode(errors="replace") for a in args)
        if str(path) in text and not _is_zombie(int(cmdline.parent.name)):
            found.append(text)
    return found


def test_kubectl_carbon_says_so_when_the_crd_is_not_installed(scratch_cluster_dir):
    """A fresh cluster has no CarbonAwareJob CRD: the plugin says how to install it, in one
    line and exit 2, instead of an API traceback (issue 8)."""
    plugin = Path(sys.executable).parent / "kubectl-carbon"
    up = local_cluster(scratch_cluster_dir, "up")
    assert up.returncode == 0, up.stderr
    try:
        kubeconfig = scratch_cluster_dir / "admin.kubeconfig"
        result = subprocess.run(
            [str(plugin), "status", "anything", "-n", "default", "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result
        assert "CRD is not installed" in result.stderr and "kubectl apply -k" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    finally:
        local_cluster(scratch_cluster_dir, "down")
