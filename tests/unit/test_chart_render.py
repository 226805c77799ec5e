"""The Helm chart's CRDs, RBAC rules, default settings, alerts and dashboard are generated
from manifests/ and monitoring/ by hack/render-chart.py: the committed chart must match."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "render-chart.py"


def load_renderer(repo: Path):
    spec = importlib.util.spec_from_file_location("render_chart", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.REPO, module.MANIFESTS = repo, repo / "manifests"
    module.MONITORING, module.CHART = repo / "monitoring", repo / "charts" / "carbonaware"
    return module


def test_the_committed_chart_matches_manifests_and_monitoring() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr


def test_a_rule_changed_in_manifests_only_is_reported_and_rendered(tmp_path: Path, capsys) -> None:
    for folder in ("manifests", "monitoring", "charts"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    rbac = tmp_path / "manifests" / "rbac.yaml"
    rbac.write_text(
        rbac.read_text().replace(
            "verbs: [get, create, patch]", "verbs: [get, create, patch, delete]"
        )
    )
    renderer = load_renderer(tmp_path)

    assert renderer.main(["--check"]) == 1
    assert "charts/carbonaware/templates/_rules.tpl" in capsys.readouterr().err
    assert renderer.main([]) == 0
    assert renderer.main(["--check"]) == 0
    rules_tpl = (tmp_path / "charts/carbonaware/templates/_rules.tpl").read_text()
    body = rules_tpl.split('define "carbonaware.operatorRules" }}\n')[1].split("{{- end }}")[0]
    jobs_rule = next(r for r in yaml.safe_load(body) if r["resources"] == ["jobs"])
    assert jobs_rule["verbs"] == ["get", "create", "patch", "delete"]


def test_every_crd_in_the_kustomization_is_in_the_chart() -> None:
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    names = {
        doc["metadata"]["name"]
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((REPO / "manifests" / name).read_text())
        if doc and doc["kind"] == "CustomResourceDefinition"
    }
    chart_crds = (REPO / "charts/carbonaware/templates/crds.yaml").read_text()
    assert "carbonawarejobs.carbonaware.io" in names
    for name in names:
        assert f"  name: {name}\n" in chart_crds


def test_the_chart_and_the_kustomization_label_the_operators_version() -> None:
    from carbonaware import __version__

    chart = yaml.safe_load((REPO / "charts/carbonaware/Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    (labels,) = (entry["pairs"] for entry in kustomization["labels"])
    assert labels["app.kubernetes.io/version"] == __version__
    assert {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
    } <= labels.keys()
