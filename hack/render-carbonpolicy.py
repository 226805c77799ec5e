#!/usr/bin/env python3
"""Copy the CarbonAwareJob CRD's shared spec fields (kube/gate_objects.SHARED_FIELDS) into
manifests/carbonpolicy.yaml, so the CarbonPolicy's fields and CEL rules are never edited
twice; tests/unit/test_gate_objects.py fails when they drift. Run after changing crd.yaml,
then `hack/render-chart.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from carbonaware.kube.gate_objects import SHARED_FIELDS  # noqa: E402

MANIFESTS = REPO / "manifests"


def spec_schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def main() -> None:
    path = MANIFESTS / "carbonpolicy.yaml"
    text = path.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    job = spec_schema(yaml.safe_load((MANIFESTS / "crd.yaml").read_text()))
    policy_crd = yaml.safe_load(text)
    policy = spec_schema(policy_crd)
    for name in SHARED_FIELDS:
        policy["properties"][name] = job["properties"][name]
    body = yaml.safe_dump(policy_crd, sort_keys=False, width=100, allow_unicode=True)
    path.write_text(header + body)
    print(f"render-carbonpolicy: wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
