"""The operator's kubelet CPU-time path through the real apiserver's node proxy.

The real node is reserved for the e2e tier (tests/e2e/test_node_pod_energy.py runs a real kubelet);
here the kubelet is played by the test, as faultkit plays it elsewhere: a Node object whose
address and kubelet port point at an HTTPS server on this machine's own address serving the
Summary API shape (k8s.io/kubelet/pkg/apis/stats/v1alpha1), whose CPU counter the test sets.
Everything else is real: the apiserver proxies `nodes/<node>/proxy/stats/summary` to it with
its kubelet client certificate, the operator runs with only the shipped RBAC plus the opt-in
manifests/rbac-kubelet-stats.yaml (its ServiceAccount's token), and the Job controller
completes the Job of a `jobTemplate` CarbonAwareJob.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from carbonaware.core.pod_energy import CCF_CORE_WATTS, JOULES_PER_KWH
from cluster_fixtures import FAKE_KUBELET_NODE_SELECTOR, throwaway_namespace, wait_for
from faultkit import OperatorProcess, release
from jobapi import create, wait_phase
from test_operator import (
    CLEAN_NIGHT,
    MANIFESTS,
    SA_NAME,
    SA_NAMESPACE,
    _kubectl,
    service_account_kubeconfig,
)

pytestmark = [pytest.mark.integration]
BURNED_NANOS = 12_000_000_000  # the container's CPU time at its last sample: 12 core-s
WALL_S = 20


def own_address() -> str | None:
    """This machine's address the apiserver may proxy to (it refuses loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent: only picks the route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


class StandInKubelet:
    """GET /stats/summary: one pod whose container's CPU counter the test sets."""

    def __init__(self, address: str) -> None:
        self.pod: dict | None = None  # {"name", "namespace", "uid"}
        self.nanos = 0
        self.served = 0
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # the container's
        authority = trustme.CA()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(address).configure_cert(tls)
        kubelet = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/stats/summary":
                    self.send_error(404)
                    return
                body = json.dumps(kubelet.summary()).encode()
                kubelet.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def summary(self) -> dict:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pods = []
        if self.pod is not None:
            cpu = {"time": now, "usageNanoCores": 1, "usageCoreNanoSeconds": self.nanos}
            container = {
                "name": "burn",
                "startTime": self.started,
                "cpu": cpu,
                "memory": {"time": now},
            }
            pods.append({"podRef": self.pod, "startTime": now, "containers": [container]})
        return {"node": {"nodeName": "stand-in", "startTime": now}, "pods": pods}

    def stop(self) -> None:
        self.server.shutdown()


def test_a_job_template_jobs_energy_comes_from_its_pods_cpu_time_through_the_node_proxy(
    crd: None, kubectl: str, kubeconfig: Path, kube_api, tmp_path: Path
) -> None:
    from kubernetes import client

    address = own_address()
    if address is None:
        pytest.skip("no non-loopback address for the stand-in kubelet (the proxy refuses 127/8)")
    core = client.CoreV1Api(kube_api)
    for name in ("namespace.yaml", "rbac.yaml", "rbac-kubelet-stats.yaml"):
        _kubectl(kubectl, kubeconfig, "apply", "-f", str(MANIFESTS / name))
    token = _kubectl(
        kubectl, kubeconfig, "-n", SA_NAMESPACE, "create", "token", SA_NAME, "--duration=1h"
    ).stdout.strip()
    own_config = service_account_kubeconfig(kubeconfig, token, tmp_path / "operator.kubeconfig")
    kubelet = StandInKubelet(address)
    node = f"energy-stand-in-{uuid.uuid4().hex[:6]}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
    core.patch_node_status(
        node,
        {
            "status": {
                "addresses": [{"type": "InternalIP", "address": address}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
            }
        },
    )
    try:
        with throwaway_namespace(kube_api, "kubelet-energy") as ns:
            operator = OperatorProcess(
                own_config,
                (ns,),
                tmp_path / "operator.log",
                extra_env={
                    "CARBONAWARE_KUBELET_CPU": "true",
                    "CARBONAWARE_CPU_MODEL": "Intel(R) Xeon(R) Platinum 8175M (Skylake)",
                },
            ).start()
            try:
                run_and_check(kube_api, core, ns, node, kubelet)
            finally:
                operator.stop()
                release(kube_api, ns)
    finally:
        core.delete_node(node)
        kubelet.stop()
        _kubectl(kubectl, kubeconfig, "delete", "-f", str(MANIFESTS / "rbac-kubelet-stats.yaml"))


def run_and_check(kube_api, core, ns: str, node: str, kubelet: StandInKubelet) -> None:
    from kubernetes import client

    container = {"name": "burn", "image": "busybox", "resources": {"requests": {"cpu": "500m"}}}
    template = {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": FAKE_KUBELET_NODE_SELECTOR,
                    "containers": [container],
                }
            },
        }
    }
    spec = {"zone": "SYNTHETIC", "provider": CLEAN_NIGHT, "pollInterval": "1s"}
    create(kube_api, ns, "burner", {**spec, "jobTemplate": template})
    job_name = wait_phase(kube_api, ns, "burner", "Running", timeout=60)["jobName"]

    def the_pod():
        pods = core.list_namespaced_pod(
            ns, label_selector=f"batch.kubernetes.io/job-name={job_name}"
        ).items
        return pods[0] if pods else None

    pod = wait_for(the_pod, 30, "the Job controller to create the pod")
    binding = client.V1Binding(
        metadata=client.V1ObjectMeta(name=pod.metadata.name),
        target=client.V1ObjectReference(kind="Node", name=node),
    )
    core.create_namespaced_pod_binding(pod.metadata.name, ns, binding, _preload_content=False)
    started = datetime.now(UTC) - timedelta(seconds=WALL_S)
    stamp = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"name": "burn", "image": "busybox", "imageID": "", "ready": True, "restartCount": 0}
    core.patch_namespaced_pod_status(
        pod.metadata.name,
        ns,
        {
            "status": {
                "phase": "Running",
                "startTime": stamp,
                "containerStatuses": [{**status, "state": {"running": {"startedAt": stamp}}}],
            }
        },
    )
    kubelet.pod = {"name": pod.metadata.name, "namespace": ns, "uid": pod.metadata.uid}
    kubelet.nanos = BURNED_NANOS // 3
    wait_for(lambda: kubelet.served >= 2, 30, "the operator to read the kubelet's stats")
    kubelet.nanos = BURNED_NANOS
    seen = kubelet.served
    wait_for(lambda: kubelet.served >= seen + 2, 30, "the operator to read the new counter")
    kubelet.pod = None  # the container ended: its stats are gone from the kubelet
    ended = (started + timedelta(seconds=WALL_S)).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {"exitCode": 0, "reason": "Completed", "startedAt": stamp, "finishedAt": ended}
    core.patch_namespaced_pod_status(
        pod.metadata.name,
        ns,
        {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{**status, "state": {"terminated": terminated}}],
            }
        },
    )
    done = wait_phase(kube_api, ns, "burner", "Succeeded", timeout=60)

    skylake = CCF_CORE_WATTS["skylake"]
    core_s = BURNED_NANOS / 1e9
    held = max(0.5 * WALL_S, core_s)  # 500m requested over 20 s, or the 12 core-s it used
    joules = skylake.idle * held + (skylake.busy - skylake.idle) * core_s
    pue = 1.2  # spec.power's default
    assert done["energyMethod"].startswith(
        "estimated:kubelet-cpu (1 pod, 12.0 core-s) × ccf:skylake 0.65-4.26 W/core"
    ), done["energyMethod"]
    assert done["energyKWh"] == pytest.approx(joules / JOULES_PER_KWH * pue, rel=1e-3)
    assert done["energySources"] == [
        {"source": done["energyMethod"], "energyKWh": pytest.approx(done["energyKWh"])}
    ]
