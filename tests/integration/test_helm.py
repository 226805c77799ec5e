"""The Helm chart (charts/carbonaware) with the real helm (hack/build-helm.sh) on the real
control plane: lint, a rendering the apiserver accepts, install, an upgrade that changes
values, and an uninstall that leaves no operator object behind (the CRDs stay, by policy).

No node runs the operator's pod here: these tests check the objects Helm manages, not the
operator's behaviour (tests/integration/test_operator.py runs the operator itself)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from cluster_fixtures import FAKE_KUBELET_NODE_SELECTOR, throwaway_namespace, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "carbonaware"
APP_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
# The installed operator's pod never runs, even where make test starts a node: a second
# operator watching every namespace would act on other tests' jobs.
OFF_NODE = [
    arg
    for key, value in FAKE_KUBELET_NODE_SELECTOR.items()
    for arg in ("--set", "nodeSelector." + key.replace(".", "\\.") + f"={value}")  # a.b -> a\.b
]
# Every optional part that needs no CRD beyond Kubernetes' own.
ALL_CORE_PARTS = [
    "--set",
    "grafanaDashboard.enabled=true",
    "--set",
    "providerSecrets.create=true",
    "--set",
    "providerSecrets.electricitymapsToken=not-a-real-token",
]


def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def template(helm: str, release: str, namespace: str, *values: str) -> list[dict]:
    return documents(run(helm, "template", release, str(CHART), "-n", namespace, *values).stdout)


@pytest.fixture
def namespace(kube_api) -> str:
    with throwaway_namespace(kube_api, "helm") as name:
        yield name


def test_helm_lint_passes_with_defaults_and_every_optional_part(helm: str) -> None:
    run(helm, "lint", "--strict", str(CHART))
    everything = [
        *ALL_CORE_PARTS,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "rbac.secretNamespaces={team-a,team-b}",
    ]
    result = run(helm, "lint", "--strict", str(CHART), *everything)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicas=two", "at '/replicas': got string, want integer"),
        (
            "settings.POLL_FLOOR=1s",
            "at '/settings': additional properties 'POLL_FLOOR' not allowed",
        ),
        ("metrics.port=70000", "at '/metrics/port'"),
        ("rbac.secretNamespaces=team-a", "at '/rbac/secretNamespaces': got string, want array"),
    ],
)
def test_a_bad_value_is_refused_with_one_clear_message(helm: str, value: str, message: str) -> None:
    """values.schema.json: helm install/upgrade/template refuse it before touching the cluster."""
    result = run(helm, "template", "bad", str(CHART), "--set", value, check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr
    assert "panic" not in result.stderr and "goroutine" not in result.stderr


def test_every_object_the_chart_renders_carries_the_full_label_set(helm: str) -> None:
    docs = template(
        helm,
        "labels",
        "default",
        *ALL_CORE_PARTS,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "rbac.secretNamespaces={team-a}",
    )
    kinds = {doc["kind"] for doc in docs}
    assert {"CustomResourceDefinition", "Deployment", "ServiceMonitor", "PrometheusRule"} <= kinds
    for doc in docs:
        labels = doc["metadata"]["labels"]
        missing = [key for key in APP_LABELS if not labels.get(key)]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "labels"
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(key) for key in APP_LABELS)


def test_the_charts_deployment_runs_the_operator_as_the_manifests_do(helm: str) -> None:
    """The Deployment template is the one part written twice (values make it a template):
    what the operator needs from it must match manifests/deployment.yaml."""
    manifest = next(
        doc
        for doc in documents((REPO / "manifests" / "deployment.yaml").read_text())
        if doc["kind"] == "Deployment"
    )
    chart = next(doc for doc in template(helm, "carbonaware", "x") if doc["kind"] == "Deployment")
    ours, theirs = chart["spec"]["template"]["spec"], manifest["spec"]["template"]["spec"]
    assert ours["securityContext"] == theirs["securityContext"]
    assert ours["volumes"] == theirs["volumes"]
    assert chart["spec"]["strategy"] == manifest["spec"]["strategy"]
    (mine,), (want,) = ours["containers"], theirs["containers"]
    for key in ("securityContext", "livenessProbe", "readinessProbe", "ports", "volumeMounts"):
        assert mine[key] == want[key], key
    assert mine["resources"] == want["resources"]
    # Same variables, the Secret and ConfigMap under the release's names.
    assert [e["name"] for e in mine["env"]] == [e["name"] for e in want["env"]]
    assert [e["valueFrom"]["secretKeyRef"]["key"] for e in mine["env"][1:]] == [
        e["valueFrom"]["secretKeyRef"]["key"] for e in want["env"][1:]
    ]


def test_the_rendered_chart_is_accepted_by_the_apiserver(
    helm: str, kubectl: str, kubeconfig: Path, namespace: str
) -> None:
    rendered = run(
        helm,
        "template",
        "dryrun",
        str(CHART),
        "-n",
        namespace,
        *ALL_CORE_PARTS,
        "--set",
        f"rbac.secretNamespaces={{{namespace}}}",
    ).stdout
    result = run(
        kubectl,
        "--kubeconfig",
        str(kubeconfig),
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        stdin=rendered,
    )
    kinds = [doc["kind"] for doc in documents(rendered)]
    assert len(result.stdout.strip().splitlines()) == len(kinds)
    assert "(server dry run)" in result.stdout


def test_install_upgrade_and_uninstall_on_the_cluster(
    helm: str, kubectl: str, kubeconfig: Path, namespace: str, kube_api
) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    release = f"cw-{uuid.uuid4().hex[:6]}"
    base = [str(CHART), "-n", namespace, "--kubeconfig", str(kubeconfig), *OFF_NODE]
    # --take-ownership: the cluster-wide CRDs and aggregated roles may already exist, applied
    # by other tests with kubectl (as a kustomize install would have).
    install = run(helm, "install", release, *base, "--take-ownership", *ALL_CORE_PARTS)
    assert "STATUS: deployed" in install.stdout
    try:
        deployment = apps.read_namespaced_deployment(f"{release}-operator", namespace)
        assert deployment.spec.replicas == 1
        assert deployment.spec.template.spec.node_selector == FAKE_KUBELET_NODE_SELECTOR
        assert deployment.spec.template.spec.containers[0].image == "carbonaware/operator:0.1.0"
        labels = deployment.metadata.labels
        assert labels["app.kubernetes.io/instance"] == release
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        config = core.read_namespaced_config_map(f"{release}-operator-config", namespace)
        assert config.data["CARBONAWARE_POLL_FLOOR"] == "10s"  # manifests/config.yaml's
        checksum = deployment.spec.template.metadata.annotations["checksum/config"]

        upgrade = run(
            helm,
            "upgrade",
            release,
            *base,
            "--reuse-values",
            "--set",
            "settings.CARBONAWARE_POLL_FLOOR=30s",
            "--set",
            "replicas=2",
            "--set",
            "image.tag=v9.9.9",
        )
        assert "STATUS: deployed" in upgrade.stdout and "REVISION: 2" in upgrade.stdout
        config = core.read_namespaced_config_map(f"{release}-operator-config", namespace)
        assert config.data["CARBONAWARE_POLL_FLOOR"] == "30s"
        assert config.data["CARBONAWARE_CACHE_TTL"] == "30s"  # the other defaults stay
        deployment = apps.read_namespaced_deployment(f"{release}-operator", namespace)
        assert deployment.spec.replicas == 2
        assert deployment.spec.template.spec.containers[0].image == "carbonaware/operator:v9.9.9"
        # The settings changed, so the pod template did: the operator restarts to read them.
        assert deployment.spec.template.metadata.annotations["checksum/config"] != checksum
        history = json.loads(
            run(
                helm,
                "history",
                release,
                "-n",
                namespace,
                "-o",
                "json",
                "--kubeconfig",
                str(kubeconfig),
            ).stdout
        )
        assert [h["revision"] for h in history] == [1, 2]
        manifest = documents(
            run(
                helm, "get", "manifest", release, "-n", namespace, "--kubeconfig", str(kubeconfig)
            ).stdout
        )
    except BaseException:
        run(
            helm,
            "uninstall",
            release,
            "-n",
            namespace,
            "--kubeconfig",
            str(kubeconfig),
            check=False,
        )
        raise

    result = run(
        helm, "uninstall", release, "-n", namespace, "--kubeconfig", str(kubeconfig), "--wait"
    )
    assert "These resources were kept due to the resource policy" in result.stdout
    objects = [
        (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")) for doc in manifest
    ]
    assert len(objects) >= 12

    def exists(kind: str, name: str, ns: str | None) -> bool:
        args = [
            kubectl,
            "--kubeconfig",
            str(kubeconfig),
            "get",
            kind,
            name,
            "--ignore-not-found",
            "-o",
            "name",
        ]
        if ns:
            args += ["-n", ns]
        return bool(run(*args).stdout.strip())

    for kind, name, ns in objects:
        if kind == "CustomResourceDefinition":
            # Kept (crds.keep): deleting a CRD deletes every CarbonAwareJob in the cluster.
            assert exists(kind, name, ns), name
        else:
            wait_for(
                lambda k=kind, n=name, s=ns: not exists(k, n, s), 30, f"{kind}/{name} to be deleted"
            )
    # Nothing else the release labelled stays behind either.
    left = run(
        kubectl,
        "--kubeconfig",
        str(kubeconfig),
        "get",
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings",
        "-A",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    ).stdout.split()
    assert left == []
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment(f"{release}-operator", namespace)
    assert missing.value.status == 404


def can_i(kubectl: str, kubeconfig: Path, who: str, verb: str, resource: str, ns: str) -> bool:
    result = run(
        kubectl,
        "--kubeconfig",
        str(kubeconfig),
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        ns,
        "--as",
        who,
        check=False,
    )
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_namespace_editors_and_viewers_get_carbonaware_jobs_through_the_builtin_roles(
    crd: None, kubectl: str, kubeconfig: Path, kube_api
) -> None:
    """manifests/rbac-aggregate.yaml (the chart renders the same) aggregates into the
    built-in edit/admin/view ClusterRoles: a RoleBinding to `edit` is all a tenant needs."""
    from kubernetes import client

    run(
        kubectl,
        "--kubeconfig",
        str(kubeconfig),
        "apply",
        "-f",
        str(REPO / "manifests" / "rbac-aggregate.yaml"),
    )
    rbac = client.RbacAuthorizationV1Api(kube_api)
    with (
        throwaway_namespace(kube_api, "tenant-a") as team_a,
        throwaway_namespace(kube_api, "tenant-b") as team_b,
    ):
        for user, role in (("alice", "edit"), ("bob", "view")):
            rbac.create_namespaced_role_binding(
                team_a,
                {
                    "metadata": {"name": f"{user}-{role}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                    ],
                },
            )
        jobs = "carbonawarejobs.carbonaware.io"
        # The controller-manager's aggregation controller fills `edit` in shortly.
        wait_for(
            lambda: can_i(kubectl, kubeconfig, "alice", "create", jobs, team_a),
            30,
            "edit to cover CarbonAwareJobs",
        )
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            assert can_i(kubectl, kubeconfig, "alice", verb, jobs, team_a), verb
            assert not can_i(kubectl, kubeconfig, "alice", verb, jobs, team_b), verb
        wait_for(
            lambda: can_i(kubectl, kubeconfig, "bob", "list", jobs, team_a),
            30,
            "view to cover CarbonAwareJobs",
        )
        assert can_i(kubectl, kubeconfig, "bob", "get", jobs, team_a)
        assert can_i(kubectl, kubeconfig, "bob", "watch", jobs, team_a)
        assert not can_i(kubectl, kubeconfig, "bob", "create", jobs, team_a)
        assert not can_i(kubectl, kubeconfig, "bob", "get", "secrets", team_a)
        # And for real: alice submits a job in her namespace and is refused in the other.
        job = yaml.safe_dump(
            {
                "apiVersion": "carbonaware.io/v1alpha1",
                "kind": "CarbonAwareJob",
                "metadata": {"name": "mine"},
                "spec": {"zone": "DE", "trainer": {"epochs": 1}},
            }
        )
        as_alice = [kubectl, "--kubeconfig", str(kubeconfig), "--as", "alice", "create", "-f", "-"]
        run(*as_alice, "-n", team_a, stdin=job)
        refused = run(*as_alice, "-n", team_b, stdin=job, check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr


def test_the_operator_reads_secrets_only_in_the_namespaces_named(
    helm: str, kubectl: str, kubeconfig: Path, namespace: str, kube_api
) -> None:
    release = f"cw-{uuid.uuid4().hex[:6]}"
    with (
        throwaway_namespace(kube_api, "team") as team,
        throwaway_namespace(kube_api, "other") as other,
    ):
        base = [str(CHART), "-n", namespace, "--kubeconfig", str(kubeconfig), *OFF_NODE]
        run(
            helm,
            "install",
            release,
            *base,
            "--set",
            "crds.install=false",
            "--set",
            "rbac.aggregateToDefaultRoles=false",
            "--set",
            f"rbac.secretNamespaces={{{team}}}",
        )
        try:
            operator = f"system:serviceaccount:{namespace}:{release}-operator"
            assert can_i(kubectl, kubeconfig, operator, "get", "secrets", team)
            assert not can_i(kubectl, kubeconfig, operator, "get", "secrets", other)
            assert not can_i(kubectl, kubeconfig, operator, "list", "secrets", team)
            # Everything else it needs stays cluster-wide.
            assert can_i(kubectl, kubeconfig, operator, "create", "jobs.batch", other)
            assert can_i(
                kubectl, kubeconfig, operator, "watch", "carbonawarejobs.carbonaware.io", other
            )
        finally:
            run(helm, "uninstall", release, "-n", namespace, "--kubeconfig", str(kubeconfig))


def test_the_optional_servicemonitor_prometheusrule_and_dashboard_install(
    helm: str, kubectl: str, kubeconfig: Path, namespace: str, kube_api, monitoring_crds: Path
) -> None:
    """With prometheus-operator's real CRDs (v0.85.0, from its Go module) on the cluster."""
    from kubernetes import client

    names = ("servicemonitors", "prometheusrules")
    files = [str(monitoring_crds / f"monitoring.coreos.com_{name}.yaml") for name in names]
    kube = [kubectl, "--kubeconfig", str(kubeconfig)]
    run(
        *kube, "apply", "--server-side", "--force-conflicts", *(a for f in files for a in ("-f", f))
    )
    for name in names:
        run(*kube, "wait", "--for=condition=Established", "--timeout=60s",
            f"crd/{name}.monitoring.coreos.com")  # fmt: skip
    release = f"cw-{uuid.uuid4().hex[:6]}"
    run(
        helm, "install", release, str(CHART), "-n", namespace, "--kubeconfig", str(kubeconfig),
        *OFF_NODE, "--set", "crds.install=false", "--set", "rbac.aggregateToDefaultRoles=false",
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true",
    )  # fmt: skip
    try:
        custom = client.CustomObjectsApi(kube_api)
        rule = custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, "prometheusrules", f"{release}-operator"
        )
        alerts = yaml.safe_load((REPO / "monitoring" / "alerts.yaml").read_text())
        assert rule["spec"]["groups"] == alerts["groups"]
        monitor = custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, "servicemonitors", f"{release}-operator"
        )
        service = client.CoreV1Api(kube_api).read_namespaced_service(
            f"{release}-operator-metrics", namespace
        )
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service.metadata.labels.items()
        assert monitor["spec"]["endpoints"][0]["port"] == service.spec.ports[0].name == "metrics"
        dashboard = client.CoreV1Api(kube_api).read_namespaced_config_map(
            f"{release}-operator-dashboard", namespace
        )
        assert dashboard.metadata.labels["grafana_dashboard"] == "1"
        shipped = json.loads((REPO / "monitoring" / "dashboard.json").read_text())
        assert json.loads(dashboard.data["carbonaware.json"]) == shipped
    finally:
        run(helm, "uninstall", release, "-n", namespace, "--kubeconfig", str(kubeconfig))
