"""The product as a user meets it, on a real node: both images built by Docker and loaded into
the node, the operator deployed in the cluster with `kubectl apply -k`, the quick-start
CarbonAwareJob waiting for a cleaner grid, then training MNIST in a real pod, then reporting
its carbon; `carbonctl plot --job` renders the plot from the job's ConfigMap; deleting the job
removes everything it made.

Beside it runs an interruptible job (issue #6): the real trainer trains in a real pod, gets
SIGTERM when the operator suspends its Job for the dirty day, checkpoints to a hostPath
PersistentVolume and exits 75; the operator resumes the Job and a new pod resumes from the
checkpoint and finishes. It is applied just before the quick start, so its first run and most
of its pause fall in the two minutes the quick start spends waiting; the last test checks it.

The tests run in file order and share one scenario (one operator, two jobs), each checking one
step; a timeline of when each phase began is printed at the end. Set E2E_ARTIFACTS=DIR to keep
what a user would see (kubectl tables, `kubectl carbon status`, carbon_plot.png) for the docs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from carbonaware.core.accounting import emissions_over_segments
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.kube.builders import parse_time
from cluster_fixtures import Cluster, throwaway_namespace, wait_for
from PIL import Image
from test_node import load_into_node

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAY = Path(__file__).parent / "overlay"
VENV_BIN = Path(sys.executable).parent  # carbonctl, kubectl-carbon
OPERATOR_IMAGE = "carbonaware/operator:dev"
TRAINER_IMAGE = "carbonaware/trainer:dev"
SYSTEM_NAMESPACE = "carbonaware-system"
OPERATOR_NAME = "carbonaware-operator"
MNIST_HOST_DIR = (
    Path(os.environ.get("CARBONAWARE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
    / "mnist"
)

# The quick start, replayed from 23:00 on the demo trace's first evening (195 g/kWh, above
# the 150 threshold) at 60x (a trace hour a minute): the grid drops to 143 g/kWh at 01:00,
# two minutes later, and the job starts then; its ~5 minutes of training fall in the clean
# night (~100-140 g/kWh), as a real carbon-aware job's would. The example's 360x would
# stretch them over a whole trace day. 16,000 samples in batches of 16 reach >= 97 %
# (12,000 in 16s gave 97.00 %, 12,000 in 128s 96.1 %).
REPLAY_START = "23h"
REPLAY_SPEED = 60
POLL_INTERVAL = "2s"
BATCH_SIZE = 16
MAX_SAMPLES = 16_000
MIN_ACCURACY = 0.97
# The interruptible job (issue #6) runs beside the quick start, mostly while that one waits.
# Replayed at 400x (a trace hour every 9 s) from 03:00 on day two (99 g/kWh): 6 h of work, at
# most 18 h late, so done by 03:00 on day three. core.interruptible.should_run runs it in the
# clean night until its work left drops to one step (~08:00, ~46 s), pauses it through the
# dirty day (~160 s) and resumes it for the last step, 02:00 on day three (120 g/kWh), ~207 s
# after it was applied, about when the quick start succeeds; from then on no step is left to
# wait for, so it never pauses again. (With a 20 h delay, as in
# tests/integration/test_operator_interruptible.py, a job that outruns its 6 h estimate may be
# paused again at a later reading when a cleaner step is ahead; it used to be paused for
# minutes within an hour too, from rounding — seen here as 4 segments — which
# core.interruptible.change_now now holds until the next reading.) Its resumed pod should
# not train alongside the quick start's: two trainers of 2 threads each on 2 cores ran at a
# third of their speed (a measured +120 s).
# The trainer's work is sized so that its first pod is still training when the Job is
# suspended (~46 s after it starts) and, once resumed, finishes the rest from the checkpoint
# (the resumed run continues the same batches: it matched uninterrupted runs to the digit), so
# 96 % leaves a margin.
# The trainer image now runs PyTorch 2.6 (bf16 where it measures faster): several times the
# old image's speed. Held to 0.4 core by a CPU limit, its pod trained 698 samples/s here
# (2026-12-07), so 24,000 samples ended in 44 s, before the job's first pause (~46 s). With
# 48,000 the first run covers at most ~34,000 (at ~750 samples/s, the limit's ceiling) and
# is still training when suspended; the resumed run trains the rest in 20-75 s.
PAUSABLE_CPU_LIMIT = "400m"
PAUSABLE_SPEED = 400
PAUSABLE_BATCH_SIZE = 64
PAUSABLE_SAMPLES = 48_000
PAUSABLE_MIN_ACCURACY = 0.96
CHECKPOINT_CLAIM = "checkpoints"
TIMEOUTS_S = {"rollout": 180, "Waiting": 90, "Running": 240, "Succeeded": 600, "deleted": 120}


@dataclass
class Scenario:
    cluster: Cluster
    kubectl: str
    namespace: str
    artifacts: Path
    start: float = field(default_factory=time.monotonic)
    timeline: list[tuple[str, float]] = field(default_factory=list)
    job: dict = field(default_factory=dict)  # the CarbonAwareJob as last read
    pausable: dict = field(default_factory=dict)  # the interruptible one as last read
    checkpoint_dir: Path | None = None  # the host folder behind its checkpoint volume
    pod_watch: subprocess.Popen | None = None  # `kubectl get pods -w` of its trainer pods

    def mark(self, event: str) -> None:
        self.timeline.append((event, time.monotonic() - self.start))

    def run(self, *args: str, check: bool = True, timeout_s: float = 120):
        result = subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stderr}", pytrace=False)
        return result

    def get_json(self, *args: str) -> dict:
        return json.loads(self.run("get", *args, "-o", "json").stdout)

    def keep(self, name: str, text: str) -> None:
        (self.artifacts / name).write_text(text)


def quickstart_job(namespace: str, claim: str) -> dict:
    """examples/job.yaml, replayed from the trace's evening, with MNIST from a volume."""
    job = yaml.safe_load((REPO_ROOT / "examples" / "job.yaml").read_text())
    job["metadata"]["namespace"] = namespace
    job["spec"]["provider"]["start"] = REPLAY_START
    job["spec"]["provider"]["speed"] = REPLAY_SPEED
    job["spec"]["pollInterval"] = POLL_INTERVAL
    job["spec"]["trainer"]["batchSize"] = BATCH_SIZE
    job["spec"]["trainer"]["maxSamples"] = MAX_SAMPLES
    job["spec"]["trainer"]["dataVolume"] = {"claimName": claim}
    return job


def host_path_volume(namespace: str, claim: str, host_dir: Path, access: str) -> list[dict]:
    """A hostPath PersistentVolume `<namespace>-<claim>` of `host_dir` and a claim bound to it."""
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [access],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": [access],
                "storageClassName": "",
                "volumeName": f"{namespace}-{claim}",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def mnist_volume(namespace: str) -> list[dict]:
    """../shared/data/mnist, read-only, as the claim `mnist` (both jobs train from it)."""
    return host_path_volume(namespace, "mnist", MNIST_HOST_DIR, "ReadOnlyMany")


def pausable_job(namespace: str) -> dict:
    """An interruptible MNIST job that checkpoints to the claim CHECKPOINT_CLAIM."""
    return {
        "apiVersion": "carbonaware.io/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": "mnist-pausable", "namespace": namespace},
        "spec": {
            "zone": "SYNTHETIC",
            "provider": {"name": "replay", "speed": PAUSABLE_SPEED, "start": "27h"},
            "pollInterval": POLL_INTERVAL,
            "maxDelay": "18h",
            "expectedDuration": "6h",
            "interruptible": True,
            "power": {"watts": 60, "pue": 1.2},
            "trainer": {
                "epochs": 1,
                "batchSize": PAUSABLE_BATCH_SIZE,
                "maxSamples": PAUSABLE_SAMPLES,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "512Mi"},
                    "limits": {"cpu": PAUSABLE_CPU_LIMIT, "memory": "2Gi"},
                },
                "dataVolume": {"claimName": "mnist"},
                "checkpointVolume": {"claimName": CHECKPOINT_CLAIM},
            },
        },
    }


def table_row(text: str) -> dict[str, str]:
    """The one data row of a `kubectl get` table, keyed by column header."""
    header, row = text.splitlines()[:2]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return {header[a:b].strip(): row[a:b].strip() for a, b in bounds}


def print_timeline(request: pytest.FixtureRequest, scenario: Scenario) -> None:
    lines = ["", "e2e timeline (seconds since the images were built):"]
    lines += [f"  {at:7.1f} s  {event}" for event, at in scenario.timeline]
    lines.append(f"artifacts: {scenario.artifacts}")
    scenario.keep("timeline.txt", "\n".join(lines[1:]) + "\n")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n".join(lines))


@pytest.fixture(scope="module")
def scenario(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    kubectl: str,
    kube_api,
    docker_build,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    if not (MNIST_HOST_DIR / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST is missing from {MNIST_HOST_DIR}")
    artifacts = Path(os.environ.get("E2E_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with throwaway_namespace(kube_api, "e2e-product") as namespace:
        scenario = Scenario(cluster, kubectl, namespace, artifacts)
        try:
            yield scenario
        finally:
            print_timeline(request, scenario)
            # A job a failed test left behind goes while its operator runs (its finalizer
            # would otherwise hold the namespace).
            scenario.run(
                "delete", "carbonawarejobs", "--all", "-n", namespace, "--timeout=60s",
                check=False, timeout_s=90,
            )  # fmt: skip
            # Uninstall the operator (not the CRD: other tiers of this session use it), so
            # no in-cluster operator acts on other tests' jobs.
            scenario.run("delete", "namespace", SYSTEM_NAMESPACE, "--ignore-not-found", check=False)
            scenario.run(
                "delete", "clusterrolebinding,clusterrole", OPERATOR_NAME,
                "--ignore-not-found", check=False,
            )  # fmt: skip
            if scenario.pod_watch is not None:
                scenario.pod_watch.kill()
                scenario.pod_watch.wait()
            # Not waiting: the PVs are released once the namespace (and its claims) is gone.
            scenario.run(
                "delete", "pv", f"{namespace}-mnist", f"{namespace}-{CHECKPOINT_CLAIM}",
                "--ignore-not-found", "--wait=false", check=False,
            )  # fmt: skip


def test_images_are_built_and_loaded_into_the_node(
    scenario: Scenario, docker_build, ready_node: str
) -> None:
    for image, dockerfile in (
        (OPERATOR_IMAGE, "Dockerfile.operator"),
        (TRAINER_IMAGE, "Dockerfile.trainer"),
    ):
        docker_build(REPO_ROOT, image, REPO_ROOT / dockerfile)
        load_into_node(scenario.cluster, image)
    scenario.start = time.monotonic()
    scenario.mark("images built and loaded into the node")

    # The kubelet reports the node's images in its status: both are there under their names.
    def node_images() -> set[str]:
        node = scenario.get_json("node", ready_node)
        images = node["status"].get("images") or []
        return {name for image in images for name in image.get("names") or []}

    wanted = {f"docker.io/{OPERATOR_IMAGE}", f"docker.io/{TRAINER_IMAGE}"}
    wait_for(lambda: wanted <= node_images(), 90, f"{sorted(wanted)} in the node's status")


def overlay_for(scenario: Scenario, tmp_path: Path) -> Path:
    """tests/e2e/overlay; on the local cluster, pointed at the apiserver's own address.

    The local node runs no kube-proxy, so the `kubernetes` Service's ClusterIP (which the
    kubelet puts in KUBERNETES_SERVICE_HOST) leads nowhere; the apiserver's endpoint does.
    Explicit env wins over the kubelet's service variables. kind has kube-proxy: unchanged.
    """
    if scenario.cluster.log_dir is None:
        return OVERLAY
    endpoints = scenario.get_json("endpoints", "kubernetes", "-n", "default")
    (subset,) = endpoints["subsets"]
    address, port = subset["addresses"][0]["ip"], subset["ports"][0]["port"]
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": address},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(port)},
    ]
    env_path = "/spec/template/spec/containers/0/env/-"
    patch = [{"op": "add", "path": env_path, "value": e} for e in env]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAY, tmp_path)],  # kustomize: relative only
        "patches": [
            {"target": {"kind": "Deployment", "name": OPERATOR_NAME}, "patch": json.dumps(patch)}
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return tmp_path


def test_operator_runs_as_a_deployment_under_its_service_account(
    scenario: Scenario, tmp_path: Path
) -> None:
    applied = scenario.run("apply", "-k", str(overlay_for(scenario, tmp_path)))
    scenario.mark("kubectl apply -k (manifests/ + e2e overlay)")
    scenario.keep("apply.txt", applied.stdout)
    applied_kinds = {line.split("/")[0].split(".")[0] for line in applied.stdout.splitlines()}
    for kind in ("customresourcedefinition", "clusterrole", "deployment", "serviceaccount"):
        assert kind in applied_kinds, applied.stdout

    rollout = scenario.run(
        "rollout", "status", f"deployment/{OPERATOR_NAME}", "-n", SYSTEM_NAMESPACE,
        f"--timeout={TIMEOUTS_S['rollout']}s", check=False, timeout_s=TIMEOUTS_S["rollout"] + 30,
    )  # fmt: skip
    pods = scenario.get_json(
        "pods", "-n", SYSTEM_NAMESPACE, "-l", f"app.kubernetes.io/name={OPERATOR_NAME}"
    )["items"]
    if rollout.returncode != 0:
        described = scenario.run("describe", "pods", "-n", SYSTEM_NAMESPACE, check=False).stdout
        logs = scenario.run(
            "logs", "-n", SYSTEM_NAMESPACE, f"deployment/{OPERATOR_NAME}", "--tail=40", check=False
        )
        pytest.fail(
            f"the operator did not become ready:\n{rollout.stderr}\n{described}\n{logs.stdout}",
            pytrace=False,
        )
    scenario.mark("operator Deployment ready")

    (pod,) = pods
    assert pod["spec"]["serviceAccountName"] == OPERATOR_NAME
    assert pod["spec"]["containers"][0]["image"] == OPERATOR_IMAGE
    assert pod["status"]["phase"] == "Running"
    # It talks to the apiserver with its own ServiceAccount: RBAC allows what it needs only.
    sa = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{OPERATOR_NAME}"
    assert scenario.run("auth", "can-i", "patch", "carbonawarejobs/status", "--as", sa).stdout
    assert scenario.run("auth", "can-i", "delete", "nodes", "--as", sa, check=False).returncode


def wait_for_pausable(scenario: Scenario, phase: str) -> dict:
    """The interruptible job's status once it reaches `phase` (failing the test if it fails)."""
    name = scenario.pausable["metadata"]["name"]

    def reached() -> dict | None:
        scenario.pausable = scenario.get_json("carbonawarejobs", name, "-n", scenario.namespace)
        status = scenario.pausable.get("status", {})
        if status.get("phase") == "Failed":
            pytest.fail(f"the job failed: {json.dumps(status)}", pytrace=False)
        return status if status.get("phase") == phase else None

    status = wait_for(reached, TIMEOUTS_S[phase], f"{name} to reach {phase}", 0.5)
    scenario.mark(f"{name} {phase}")
    return status


def test_interruptible_job_starts_in_the_clean_night_with_a_checkpoint_volume(
    scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Applied before the quick start so that its first run and pause overlap that job's wait;
    test_interruptible_job_was_suspended_resumed_and_finished checks the rest."""
    namespace = scenario.namespace
    # The trainer runs as UID 10001 and the kubelet applies no fsGroup to a hostPath volume,
    # so the folder must be writable by anyone for the pod to write its checkpoint there.
    scenario.checkpoint_dir = tmp_path_factory.mktemp("checkpoints")
    scenario.checkpoint_dir.chmod(0o777)
    job = pausable_job(namespace)
    name = job["metadata"]["name"]
    volumes = [
        *mnist_volume(namespace),
        *host_path_volume(namespace, CHECKPOINT_CLAIM, scenario.checkpoint_dir, "ReadWriteOnce"),
    ]
    manifest = scenario.artifacts / "pausable-job.yaml"
    manifest.write_text(yaml.safe_dump_all([*volumes, job], sort_keys=False))
    # Every state its trainer pods go through, the suspended pod's last moments included.
    with (scenario.artifacts / "pausable-pods.json").open("w") as watch_log:
        scenario.pod_watch = subprocess.Popen(
            [
                scenario.kubectl, "--kubeconfig", str(scenario.cluster.kubeconfig), "get", "pods",
                "-n", namespace, "-l", f"carbonaware.io/job={name}", "--watch", "-o", "json",
            ],
            stdout=watch_log, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    scenario.run("apply", "-f", str(manifest))
    scenario.pausable = job
    scenario.mark(f"CarbonAwareJob {name} (interruptible) applied")

    status = wait_for_pausable(scenario, "Running")
    # Clean now (99 g/kWh): the Job runs at once, its first run segment open.
    assert status["decision"]["action"] == "run", status["decision"]
    assert [segment.keys() for segment in status["segments"]] == [{"start"}]
    job_spec = scenario.get_json("job", status["jobName"], "-n", namespace)["spec"]
    assert job_spec["suspend"] is False
    pod_volumes = job_spec["template"]["spec"]["volumes"]
    claims = {
        v["persistentVolumeClaim"]["claimName"] for v in pod_volumes if "persistentVolumeClaim" in v
    }
    assert claims == {"mnist", CHECKPOINT_CLAIM}


def test_quickstart_job_waits_then_runs_then_succeeds(scenario: Scenario) -> None:
    namespace = scenario.namespace
    volume = mnist_volume(namespace)  # the interruptible job applied it already: unchanged
    job = quickstart_job(namespace, claim="mnist")
    manifest = scenario.artifacts / "job.yaml"
    manifest.write_text(yaml.safe_dump_all([*volume, job], sort_keys=False))
    scenario.run("apply", "-f", str(manifest))
    name, threshold = job["metadata"]["name"], job["spec"]["thresholdGramsPerKWh"]
    scenario.mark(f"CarbonAwareJob {name} applied")

    seen: dict[str, str] = {}  # phase -> `kubectl get carbonawarejobs` when first seen

    def reach(phase: str) -> bool:
        scenario.job = scenario.get_json("carbonawarejobs", name, "-n", namespace)
        current = scenario.job.get("status", {}).get("phase")
        if current and current not in seen:
            seen[current] = scenario.run("get", "carbonawarejobs", name, "-n", namespace).stdout
            scenario.mark(f"phase {current}")
            scenario.keep(f"get-{current.lower()}.txt", seen[current])
        if current == "Failed":
            pytest.fail(f"the job failed: {json.dumps(scenario.job['status'])}", pytrace=False)
        return phase in seen

    for phase in ("Waiting", "Running", "Succeeded"):
        wait_for(lambda phase=phase: reach(phase), TIMEOUTS_S[phase], f"phase {phase}", 0.5)

    waiting = table_row(seen["Waiting"])
    assert waiting["PHASE"] == "Waiting"
    assert float(waiting["INTENSITY"]) > threshold, seen["Waiting"]
    assert table_row(seen["Running"])["PHASE"] == "Running"
    assert float(table_row(seen["Running"])["INTENSITY"]) <= threshold, seen["Running"]

    done = table_row(seen["Succeeded"])
    assert float(done["EMISSIONS(G)"]) > 0, seen["Succeeded"]
    assert float(done["SAVED(%)"]) > 0, seen["Succeeded"]
    wide = scenario.run("get", "carbonawarejobs", name, "-n", namespace, "-o", "wide").stdout
    scenario.keep("get-wide.txt", wide)
    assert float(table_row(wide)["ENERGY(KWH)"]) > 0, wide

    status = scenario.job["status"]
    assert status["energyKWh"] > 0 and status["energyMethod"]
    assert 0 < status["emissionsGrams"] < status["baselineEmissionsGrams"]
    assert status["savedGrams"] == pytest.approx(
        status["baselineEmissionsGrams"] - status["emissionsGrams"], rel=1e-3, abs=1e-6
    )
    assert status["waitedSeconds"] > 0
    scenario.keep("status.yaml", yaml.safe_dump(status, sort_keys=False))


def test_the_trainer_pod_really_trained(scenario: Scenario) -> None:
    status = scenario.job.get("status", {})
    assert status.get("phase") == "Succeeded", "the job did not succeed (see the test above)"
    namespace, job_name = scenario.namespace, status["jobName"]
    (pod,) = scenario.get_json("pods", "-n", namespace, "-l", f"job-name={job_name}")["items"]
    log = scenario.run("logs", "-n", namespace, pod["metadata"]["name"]).stdout
    scenario.keep("trainer.log", log)
    assert "epoch 1/1 done" in log, log[-2000:]

    (container,) = pod["status"]["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert terminated["exitCode"] == 0
    result = json.loads(terminated["message"])
    assert result["status"] == "completed"
    assert result["accuracy"] >= MIN_ACCURACY, result
    # The operator copied the trainer's result into the status.
    assert status["trainer"]["accuracy"] == pytest.approx(result["accuracy"])
    assert status["trainer"]["epochs"] == result["epochs"] == 1


def user_env(scenario: Scenario) -> dict[str, str]:
    """The environment of a user who installed the project: its scripts on PATH."""
    path = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "KUBECONFIG": str(scenario.cluster.kubeconfig), "PATH": path}


def test_kubectl_carbon_status_shows_the_finished_job(scenario: Scenario) -> None:
    assert (VENV_BIN / "kubectl-carbon").exists(), "no kubectl-carbon console script"
    name = scenario.job["metadata"]["name"]
    # kubectl finds the plugin on PATH, as it does for a user.
    result = subprocess.run(
        [scenario.kubectl, "carbon", "status", name, "-n", scenario.namespace],
        capture_output=True, text=True, env=user_env(scenario), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scenario.keep("kubectl-carbon-status.txt", result.stdout)
    assert "Succeeded" in result.stdout, result.stdout


def test_carbonctl_plot_renders_the_job_from_its_configmap(
    scenario: Scenario, tmp_path: Path
) -> None:
    name, namespace = scenario.job["metadata"]["name"], scenario.namespace
    result = subprocess.run(
        [VENV_BIN / "carbonctl", "plot", "--job", name, "-n", namespace],
        cwd=tmp_path, capture_output=True, text=True, env=user_env(scenario), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plot = tmp_path / "carbon_plot.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < plot.stat().st_size < 2_000_000
    with Image.open(plot) as image:
        assert image.format == "PNG"
        assert image.width >= 800 and image.height >= 400, image.size
        # A drawn chart, not a blank canvas: many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    shutil.copy(plot, scenario.artifacts / "carbon_plot.png")
    scenario.mark("carbonctl plot --job wrote carbon_plot.png")


def delete_and_wait_until_gone(scenario: Scenario, job: dict) -> None:
    """`kubectl delete` a finished CarbonAwareJob; its Job, pods and ConfigMap must go."""
    name, namespace = job["metadata"]["name"], scenario.namespace
    job_name, config_map = job["status"]["jobName"], job["status"]["logConfigMap"]
    assert scenario.get_json("configmap", config_map, "-n", namespace)
    scenario.run("delete", "carbonawarejob", name, "-n", namespace)
    scenario.mark(f"kubectl delete carbonawarejob {name}")

    def all_gone() -> bool:
        left = scenario.run(
            "get", "jobs,pods,configmaps", "-n", namespace, "-o", "name",
            "-l", f"job-name={job_name}", check=False,
        ).stdout.split()  # fmt: skip
        job = scenario.run("get", "job", job_name, "-n", namespace, check=False)
        cm = scenario.run("get", "configmap", config_map, "-n", namespace, check=False)
        return not left and job.returncode != 0 and cm.returncode != 0

    wait_for(all_gone, TIMEOUTS_S["deleted"], "the Job, its pods and the ConfigMap to go", 1)
    scenario.mark(f"{name}: Job, pods and ConfigMap garbage-collected")


def test_deleting_the_job_removes_its_job_pods_and_configmap(scenario: Scenario) -> None:
    delete_and_wait_until_gone(scenario, scenario.job)


def watched_pods(path: Path) -> list[dict]:
    """The pod objects `kubectl get pods --watch -o json` wrote (one JSON document each)."""
    text, decoder, pods, at = path.read_text(), json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        document, at = decoder.raw_decode(text, at)
        pods += document.get("items", [document])
    return pods


def terminated(pod: dict) -> dict | None:
    (container,) = pod["status"].get("containerStatuses") or [{}]
    return (container.get("state") or {}).get("terminated")


def events_in_order(scenario: Scenario, name: str) -> list[str]:
    selector = f"involvedObject.kind=CarbonAwareJob,involvedObject.name={name}"
    events = scenario.get_json("events", "-n", scenario.namespace, "--field-selector", selector)
    timed = [
        (e.get("eventTime") or e.get("firstTimestamp") or "", e["reason"]) for e in events["items"]
    ]
    return [reason for _, reason in sorted(timed)]


def test_interruptible_job_was_suspended_resumed_and_finished(scenario: Scenario) -> None:
    """The real SIGTERM -> checkpoint -> exit 75 -> resume path, end to end (issue #6)."""
    assert scenario.pausable, "the interruptible job was not applied (see the test above)"
    name, namespace = scenario.pausable["metadata"]["name"], scenario.namespace
    status = wait_for_pausable(scenario, "Succeeded")
    scenario.keep("pausable-status.yaml", yaml.safe_dump(status, sort_keys=False))

    # Suspended once, through the dirty day, then resumed: two closed run segments.
    segments = status["segments"]
    assert len(segments) == 2 and all(s.keys() == {"start", "end"} for s in segments), segments
    spans = [(parse_time(s["start"]), parse_time(s["end"])) for s in segments]
    assert spans[1][0] - spans[0][1] > timedelta(hours=12), segments
    assert events_in_order(scenario, name).count("Suspended") == 1
    reasons = [r for r in events_in_order(scenario, name) if r in ("Suspended", "Resumed")]
    assert reasons == ["Suspended", "Resumed"]
    (suspended,) = [c for c in status["conditions"] if c["type"] == "Suspended"]
    assert (suspended["status"], suspended["reason"]) == ("False", "Resumed"), suspended

    # The first pod got SIGTERM when the Job was suspended, checkpointed and exited 75 ...
    scenario.pod_watch.terminate()
    scenario.pod_watch.wait(timeout=10)
    pods = watched_pods(scenario.artifacts / "pausable-pods.json")
    ends = {p["metadata"]["name"]: t for p in pods if (t := terminated(p))}
    assert len(ends) == 2, f"expected two trainer pods to end, saw {sorted(ends)}"
    first, last = sorted(ends.values(), key=lambda t: t["finishedAt"])
    assert first["exitCode"] == 75, first
    interrupted = json.loads(first["message"])
    assert interrupted["status"] == "interrupted" and interrupted["exit_reason"] == "SIGTERM"
    assert interrupted["samples"] > 0, interrupted  # it was training, not still starting
    # ... and the Job controller did not count that as a failure: one pod, succeeded.
    job = scenario.get_json("job", status["jobName"], "-n", namespace)
    assert job["spec"]["suspend"] is False
    assert job["status"].get("succeeded") == 1 and not job["status"].get("failed"), job["status"]
    selector = f"job-name={status['jobName']}"
    (pod,) = scenario.get_json("pods", "-n", namespace, "-l", selector)["items"]
    (container,) = pod["status"]["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 0
    assert container["state"]["terminated"]["message"] == last["message"]

    # The new pod resumed from the checkpoint on the volume and finished the epoch.
    result = json.loads(last["message"])
    log = scenario.run("logs", "-n", namespace, pod["metadata"]["name"]).stdout
    scenario.keep("pausable-trainer.log", log)
    assert result["status"] == "completed" and result["resumed"] is True, result
    assert result["resumed_from"]["step"] * PAUSABLE_BATCH_SIZE == interrupted["samples"]
    assert result["samples_all_runs"] == PAUSABLE_SAMPLES > result["samples"], result
    assert result["accuracy"] >= PAUSABLE_MIN_ACCURACY, result
    assert "resuming from /work/checkpoints" in log, log[-2000:]
    checkpoint = scenario.checkpoint_dir / "checkpoint.pt"
    assert checkpoint.is_file() and checkpoint.stat().st_uid == 10001  # the pod's user wrote it
    assert status["trainer"]["accuracy"] == pytest.approx(result["accuracy"])
    assert status["trainer"]["epochs"] == result["epochs"] == 1

    # Emissions integrate over the two segments only, against the readings in the job's log
    # (as tests/integration/test_operator_interruptible.py checks them without a node).
    log_data = scenario.get_json("configmap", status["logConfigMap"], "-n", namespace)["data"]
    readings = IntensityLog.from_csv(log_data["carbon_log.csv"]).readings
    expected = emissions_over_segments(status["energyKWh"], spans, readings)
    assert expected.method == "integrated"
    assert status["emissionsGrams"] > 0
    assert status["emissionsGrams"] == pytest.approx(expected.grams, rel=1e-3)
    through_the_day = emissions_over_segments(
        status["energyKWh"], [(spans[0][0], spans[-1][1])], readings
    )
    assert status["emissionsGrams"] < through_the_day.grams  # pausing saved carbon

    delete_and_wait_until_gone(scenario, scenario.pausable)
