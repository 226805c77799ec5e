"""Fixtures for the Kubernetes tiers: a real cluster for `integration` and `e2e` tests.

- `kubeconfig` (session): `$KUBECONFIG` when set (a kind cluster, or `make test`'s cluster),
  else the local control plane from `hack/local-cluster up`, started for this session.
  Several pytest sessions may share one local cluster; the last session out stops it, and
  only if a pytest session started it (a cluster started by hand is left running).
- `kube_api` (session): a `kubernetes.client.ApiClient` for that kubeconfig.
- `namespace` (function): a throwaway namespace, deleted after the test.
- Tests marked `integration` get the cluster automatically and fail loudly when it cannot
  start; tests marked `e2e` also need a Ready node and skip, with the reason, without one.
- A failed cluster test shows the tail of each local component's log in its report.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# `kubernetes` is imported inside the fixtures: unit-only runs should not pay for it.

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO_ROOT / "hack" / "local-cluster"
NODE_SCRIPT = REPO_ROOT / "hack" / "node.sh"
CLUSTER_DIR = Path(os.environ.get("CLUSTER_DIR", "/tmp/carbonaware-cluster")).absolute()
LOG_TAIL_LINES = 40
# Exit codes of `hack/local-cluster up` (and of `hack/node.sh up` for the first).
NODE_UNAVAILABLE, NODE_FAILED = 3, 4


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    # Set when this is the local cluster from hack/local-cluster: its logs and binaries.
    log_dir: Path | None = None
    k8s_bin: Path | None = None


def component_logs(log_dir: Path, lines: int = LOG_TAIL_LINES) -> str:
    tails = []
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        tails.append(f"--- {log} (last {lines} lines)\n" + "\n".join(text[-lines:]))
    return "\n".join(tails) or f"(no logs in {log_dir})"


def parse_exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines printed by `hack/local-cluster up|env`."""
    exports = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, value = line.removeprefix("export ").split("=", 1)
            exports[name] = value
    return exports


def node_unavailable_reason() -> str | None:
    """Why no node can run here, or None when `hack/node.sh check` says one can."""
    if not NODE_SCRIPT.exists():
        return f"{NODE_SCRIPT.relative_to(REPO_ROOT)} is missing, so no node can be started"
    check = subprocess.run(
        ["bash", str(NODE_SCRIPT), "check"], capture_output=True, text=True, timeout=120
    )
    if check.returncode == 0:
        return None
    lines = (check.stdout + check.stderr).strip().splitlines()
    return lines[-1] if lines else f"hack/node.sh check exited {check.returncode}"


# --- sharing one local cluster between pytest sessions --------------------------------

# Tests that play the kubelet (they patch pod status themselves) keep their pods off every
# real node: when a node is up (make test starts one for the e2e tier), its kubelet would run
# the pod and overwrite the status the test wrote. No node carries this label.
FAKE_KUBELET_NODE_SELECTOR = {"carbonaware.io/test-tier": "fake-kubelet"}


def off_node(trainer: dict | None = None) -> dict:
    """A spec.trainer whose pod no real node will run (see FAKE_KUBELET_NODE_SELECTOR)."""
    return {**(trainer or {}), "nodeSelector": FAKE_KUBELET_NODE_SELECTOR}


HOLDERS_DIR = CLUSTER_DIR / "pytest-holders"
STARTED_BY_PYTEST = CLUSTER_DIR / "started-by-pytest"


@contextmanager
def sessions_lock() -> Iterator[None]:
    CLUSTER_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(CLUSTER_DIR.with_name(CLUSTER_DIR.name + ".pytest.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def live_holders() -> list[int]:
    holders = []
    for entry in HOLDERS_DIR.glob("*") if HOLDERS_DIR.exists() else []:
        pid = int(entry.name)
        if Path(f"/proc/{pid}").exists():
            holders.append(pid)
        else:
            entry.unlink(missing_ok=True)  # a crashed session
    return holders


def run_local_cluster(request: pytest.FixtureRequest, *args: str) -> subprocess.CompletedProcess:
    # Not captured: a cold start may build Kubernetes first, which takes long; show progress.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return subprocess.run([str(LOCAL_CLUSTER), *args], stdout=subprocess.PIPE, text=True)


def start_failed(result: subprocess.CompletedProcess, args: tuple[str, ...]) -> None:
    pytest.fail(
        f"`hack/local-cluster {' '.join(args)}` failed (exit {result.returncode}): the "
        f"control plane must run on every machine.\n{component_logs(CLUSTER_DIR / 'logs')}",
        pytrace=False,
    )


def wants_node(session: pytest.Session) -> bool:
    return any(
        item.get_closest_marker("e2e") and not item.get_closest_marker("kind")
        for item in session.items
    )


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"])
        if not kubeconfig.is_file():
            pytest.fail(f"KUBECONFIG={kubeconfig} is not a file", pytrace=False)
        is_local = kubeconfig.resolve().is_relative_to(CLUSTER_DIR.resolve())
        log_dir = CLUSTER_DIR / "logs" if is_local else None
        yield Cluster(kubeconfig, log_dir, local_k8s_bin() if is_local else None)
        return

    args: tuple[str, ...] = ("up",)
    if wants_node(request.session) and node_unavailable_reason() is None:
        args = ("up", "--with-node")
    with sessions_lock():
        was_running = (
            subprocess.run([str(LOCAL_CLUSTER), "status"], capture_output=True).returncode == 0
        )
        result = run_local_cluster(request, *args)
        # 3/4: the control plane is up without a node; e2e tests report why.
        if result.returncode not in (0, NODE_UNAVAILABLE, NODE_FAILED):
            start_failed(result, args)
        if not was_running:
            STARTED_BY_PYTEST.touch()
        HOLDERS_DIR.mkdir(exist_ok=True)
        (HOLDERS_DIR / str(os.getpid())).touch()
    exports = parse_exports(result.stdout)
    k8s_bin = Path(exports["PATH"].split(":", 1)[0])
    with pytest.MonkeyPatch.context() as env:
        # For subprocesses (kubectl, the operator) and kubernetes.config.load_kube_config().
        env.setenv("KUBECONFIG", exports["KUBECONFIG"])
        # Our kubectl first: it matches the apiserver's version.
        env.setenv("PATH", f"{k8s_bin}{os.pathsep}{os.environ['PATH']}")
        yield Cluster(Path(exports["KUBECONFIG"]), CLUSTER_DIR / "logs", k8s_bin)
    with sessions_lock():
        (HOLDERS_DIR / str(os.getpid())).unlink(missing_ok=True)
        if STARTED_BY_PYTEST.exists() and not live_holders():
            run_local_cluster(request, "down")


def local_k8s_bin() -> Path | None:
    env = subprocess.run([str(LOCAL_CLUSTER), "env"], capture_output=True, text=True)
    path = parse_exports(env.stdout).get("PATH")
    return Path(path.split(":", 1)[0]) if path else None


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> str:
    """The kubectl to shell out to: the one built with the local cluster, else PATH's."""
    if cluster.k8s_bin and (cluster.k8s_bin / "kubectl").exists():
        return str(cluster.k8s_bin / "kubectl")
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("no kubectl on PATH (hack/build-k8s.sh builds one)", pytrace=False)
    return found


@pytest.fixture(scope="session")
def kube_api(kubeconfig: Path):
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()


def wait_for(
    check: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2
) -> object:
    """Poll `check` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval_s)


@contextmanager
def throwaway_namespace(
    kube_api, prefix: str = "test", ready_timeout_s: float = 30
) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists (pods need it); deleted after."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube_api)
    safe_prefix = "".join(c if c.isalnum() else "-" for c in prefix.lower())[:40].strip("-")
    name = f"{safe_prefix or 'test'}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_service_account() -> bool:
        try:
            return bool(core.read_namespaced_service_account("default", name))
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    try:
        wait_for(default_service_account, ready_timeout_s, f"the default ServiceAccount in {name}")
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def namespace(kube_api, request: pytest.FixtureRequest) -> Iterator[str]:
    with throwaway_namespace(kube_api, request.node.name) as name:
        yield name


@pytest.fixture(scope="session")
def ready_node(cluster: Cluster, kube_api) -> str:
    """Name of a Ready, schedulable node; skips (with why) where no node can run."""
    from kubernetes import client

    def ready_nodes() -> list[str]:
        return [
            node.metadata.name
            for node in client.CoreV1Api(kube_api).list_node().items
            if not node.spec.unschedulable
            and any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        ]

    nodes = ready_nodes()
    if nodes:
        return nodes[0]
    if cluster.log_dir is None:
        pytest.skip("e2e needs a node: the cluster at KUBECONFIG has no Ready, schedulable node")
    reason = node_unavailable_reason()
    if reason:
        pytest.skip(f"e2e needs a node: {reason}")
    state = json.loads((CLUSTER_DIR / "state.json").read_text())
    if state.get("node_unavailable"):
        pytest.skip(f"e2e needs a node: {state['node_error']}")
    if state.get("node_error"):
        pytest.fail(f"the local node failed to start: {state['node_error']}", pytrace=False)
    if not state.get("with_node"):
        pytest.skip(
            "e2e needs a node: the local cluster runs without one "
            "(start it with `hack/local-cluster up --with-node`)"
        )
    return wait_for(ready_nodes, 60, "a Ready node")[0]


@pytest.fixture(scope="module", autouse=True)
def _node_for_e2e_modules(request: pytest.FixtureRequest) -> None:
    # Before the module's own module-scoped fixtures (autouse ones go first in a scope), so
    # an e2e module skips before it builds or loads images for a node that is not there.
    if request.node.get_closest_marker("e2e") and not request.node.get_closest_marker("kind"):
        request.getfixturevalue("ready_node")


@pytest.fixture(autouse=True)
def _cluster_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kind"):
        return  # it makes its own kind cluster
    if request.node.get_closest_marker("e2e"):
        request.getfixturevalue("ready_node")
    elif request.node.get_closest_marker("integration"):
        request.getfixturevalue("cluster")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    marked = item.get_closest_marker("integration") or item.get_closest_marker("e2e")
    log_dir = CLUSTER_DIR / "logs"
    uses_local = not os.environ.get("KUBECONFIG") or Path(
        os.environ["KUBECONFIG"]
    ).resolve().is_relative_to(CLUSTER_DIR.resolve())
    if report.failed and marked and uses_local and log_dir.is_dir():
        report.sections.append(("kubernetes component logs", component_logs(log_dir)))
    return report
