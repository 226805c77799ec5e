"""Pure builder: put a Job's pods in one placement of ``spec.placements``.

The placement's ``nodeSelector``, ``tolerations`` and ``nodeAffinity`` are combined with
what the workload already asks for, so that both must hold:

- ``nodeSelector``: merged, the placement's keys win (it says where the zone is);
- ``tolerations``: the workload's, then the placement's (repeats left out);
- ``nodeAffinity``: required terms are ANDed (each workload term combined with each
  placement term: Kubernetes ORs the terms and ANDs the expressions inside one); preferred
  terms are concatenated.

The Job and its pod template carry the zone in the annotation ``carbonaware.io/zone``.
"""

from __future__ import annotations

import copy
from typing import Any

from carbonaware.kube.models import PlacementSpec

ZONE_ANNOTATION = "carbonaware.io/zone"
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def placed_job(job: dict[str, Any], placement: PlacementSpec) -> dict[str, Any]:
    """A copy of the batch/v1 ``job`` whose pods run in ``placement``."""
    placed = copy.deepcopy(job)
    template = placed["spec"]["template"]
    for meta in (placed["metadata"], template.setdefault("metadata", {})):
        meta["annotations"] = {**(meta.get("annotations") or {}), ZONE_ANNOTATION: placement.zone}
    template["spec"] = placed_pod_spec(template["spec"], placement)
    return placed


def placed_pod_spec(pod_spec: dict[str, Any], placement: PlacementSpec) -> dict[str, Any]:
    """A copy of ``pod_spec`` with ``placement``'s selector, tolerations and affinity."""
    pod = copy.deepcopy(pod_spec)
    if placement.node_selector:
        pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), **placement.node_selector}
    if placement.tolerations:
        tolerations = list(pod.get("tolerations") or [])
        tolerations += [dict(t) for t in placement.tolerations if dict(t) not in tolerations]
        pod["tolerations"] = tolerations
    if placement.node_affinity:
        affinity = dict(pod.get("affinity") or {})
        affinity["nodeAffinity"] = combined_node_affinity(
            affinity.get("nodeAffinity") or {}, placement.node_affinity
        )
        pod["affinity"] = affinity
    return pod


def combined_node_affinity(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """A NodeAffinity that holds where both ``ours`` and ``theirs`` hold."""
    combined: dict[str, Any] = {}
    mine = (ours.get(_REQUIRED) or {}).get("nodeSelectorTerms") or []
    other = (theirs.get(_REQUIRED) or {}).get("nodeSelectorTerms") or []
    if mine and other:
        terms = [_and(a, b) for a in mine for b in other]
    else:
        terms = copy.deepcopy(mine or other)
    if terms:
        combined[_REQUIRED] = {"nodeSelectorTerms": terms}
    preferred = copy.deepcopy((ours.get(_PREFERRED) or []) + (theirs.get(_PREFERRED) or []))
    if preferred:
        combined[_PREFERRED] = preferred
    return combined


def _and(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    term = {}
    for key in ("matchExpressions", "matchFields"):
        both = copy.deepcopy((a.get(key) or []) + (b.get(key) or []))
        if both:
            term[key] = both
    return term
