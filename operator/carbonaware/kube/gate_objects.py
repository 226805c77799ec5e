"""The carbon gate's typed CarbonPolicy and the pure builders of what it writes.

A CarbonPolicy (cluster-scoped, manifests/carbonpolicy.yaml) is the parameters object of a
Kueue AdmissionCheck whose controllerName is ``carbonaware.io/carbon-gate``. It carries the
decision fields of a CarbonAwareJob spec; :func:`job_spec` turns it, with a Workload's
overrides, into that spec so the same provider, cache and policy code serve both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError

from carbonaware.core.accounting import CarbonReport
from carbonaware.core.gate import CONTROLLER_NAME, CheckUpdate, Overrides
from carbonaware.kube import builders
from carbonaware.kube.builders import iso
from carbonaware.kube.conditions import get_condition, set_condition
from carbonaware.kube.models import CarbonAwareJobSpec, SpecError, _Camel

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
KUEUE_API_VERSION = f"{KUEUE_GROUP}/{KUEUE_VERSION}"
POLICY_PLURAL = "carbonpolicies"
POLICY_KIND = "CarbonPolicy"
FIELD_MANAGER = "carbonaware-gate"
GATE_LABEL = f"{builders.GROUP}/workload"  # on the log ConfigMap: the Workload's name
# On a Workload the gate deactivated while it waits: the name of the check that holds it. Only
# Workloads carrying it are activated again by the gate (never one a person deactivated).
HELD_ANNOTATION = f"{builders.GROUP}/held-by-check"
# The accounting, written on the Workload when it finishes (estimated energy: no trainer
# report exists for an arbitrary workload; emissions from the actual logged readings).
ACCOUNTED_ANNOTATION = f"{builders.GROUP}/emissions-grams"
# The policy fields a CarbonAwareJob spec shares (manifests/carbonpolicy.yaml copies them).
SHARED_FIELDS = (
    "zone",
    "provider",
    "thresholdGramsPerKWh",
    "maxDelay",
    "strategy",
    "expectedDuration",
    "pollInterval",
    "power",
)


class CarbonPolicySpec(_Camel):
    secret_namespace: str = Field(default="carbonaware-system", min_length=1)


def job_spec(policy_spec: dict[str, Any], overrides: Overrides) -> tuple[CarbonAwareJobSpec, str]:
    """The CarbonAwareJob-shaped spec a policy and a Workload's overrides decide with, and the
    namespace of the policy's Secrets. SpecError with one readable line on bad input."""
    raw = {k: v for k, v in (policy_spec or {}).items() if k in SHARED_FIELDS}
    try:
        spec = CarbonAwareJobSpec.model_validate(raw)
        extra = CarbonPolicySpec.model_validate(policy_spec or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        raise SpecError(f"CarbonPolicy spec.{where}: {first['msg']}") from None
    changes: dict[str, Any] = {}
    if overrides.expected_duration is not None:
        changes["expected_duration"] = overrides.expected_duration
    if overrides.max_delay is not None:
        changes["max_delay"] = overrides.max_delay
    return spec.model_copy(update=changes), extra.secret_namespace


def gate_checks(admission_checks: list[dict[str, Any]]) -> dict[str, str | None]:
    """Our AdmissionChecks by name, each with the CarbonPolicy its parameters name (None:
    no CarbonPolicy named)."""
    found: dict[str, str | None] = {}
    for check in admission_checks:
        spec = check.get("spec") or {}
        if spec.get("controllerName") != CONTROLLER_NAME:
            continue
        params = spec.get("parameters") or {}
        is_policy = params.get("apiGroup") == builders.GROUP and params.get("kind") == POLICY_KIND
        found[check["metadata"]["name"]] = params.get("name") if is_policy else None
    return found


def gated_state(workload: dict[str, Any], checks: dict[str, str | None]) -> dict[str, Any] | None:
    """The Workload's state for the first of our checks, None when it has none. A Workload
    the gate holds inactive counts as gated by its check even if Kueue dropped the state."""
    for state in (workload.get("status") or {}).get("admissionChecks") or []:
        if state.get("name") in checks:
            return state
    held = held_by(workload)
    return {"name": held, "state": "Pending"} if held in checks else None


def held_by(workload: dict[str, Any]) -> str | None:
    return ((workload.get("metadata") or {}).get("annotations") or {}).get(HELD_ANNOTATION)


def is_active(workload: dict[str, Any]) -> bool:
    return (workload.get("spec") or {}).get("active", True) is not False


def build_hold_patch(check_name: str | None) -> dict[str, Any]:
    """The Workload patch that holds it inactive for ``check_name`` (no quota, not queued), or
    with None releases it to Kueue's queue again."""
    return {
        "metadata": {"annotations": {HELD_ANNOTATION: check_name}},
        "spec": {"active": check_name is None},
    }


def _condition_true(workload: dict[str, Any], type: str) -> bool:
    condition = get_condition((workload.get("status") or {}).get("conditions"), type)
    return bool(condition) and condition.get("status") == "True"


def quota_reserved(workload: dict[str, Any]) -> bool:
    return _condition_true(workload, "QuotaReserved")


def finished(workload: dict[str, Any]) -> bool:
    return _condition_true(workload, "Finished")


def build_check_apply(
    workload: dict[str, Any],
    check_name: str,
    update: CheckUpdate,
    current: dict | None,
    now: datetime,
) -> dict[str, Any]:
    """The server-side apply body that sets our check's state on the Workload (status)."""
    moved = current is None or current.get("state") != update.state
    state: dict[str, Any] = {
        "name": check_name,
        "state": update.state,
        "message": update.message,
        "lastTransitionTime": iso(now) if moved else current.get("lastTransitionTime", iso(now)),
    }
    meta = workload["metadata"]
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "Workload",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "status": {"admissionChecks": [state]},
    }


def build_active_patch(
    check: dict[str, Any], active: bool, message: str, now: datetime
) -> dict[str, Any] | None:
    """The status patch that sets the AdmissionCheck's Active condition; None if set."""
    conditions = (check.get("status") or {}).get("conditions") or []
    current = get_condition(conditions, "Active")
    status = "True" if active else "False"
    if current and current.get("status") == status and current.get("message") == message:
        return None
    updated = set_condition(
        conditions,
        type="Active",
        status=active,
        reason="Active" if active else "PolicyNotFound",
        message=message,
        generation=check["metadata"].get("generation"),
        now=now,
    )
    return {"status": {"conditions": updated}}


def workload_owner(workload: dict[str, Any]) -> dict[str, Any]:
    meta = workload["metadata"]
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "Workload",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": False,
        "blockOwnerDeletion": False,
    }


def build_workload_log_configmap(
    workload: dict[str, Any],
    csv_text: str,
    metadata: dict[str, Any],
    stored_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Workload's intensity log ``<workload>-carbon-log``, owned by the Workload (the
    garbage collector removes it with the Workload)."""
    meta = workload["metadata"]
    body = builders.build_log_configmap(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        csv_text=csv_text,
        metadata=metadata,
        stored_metadata=stored_metadata,
    )
    labels = dict(body["metadata"]["labels"])
    labels.pop(builders.JOB_LABEL, None)
    labels[GATE_LABEL] = meta["name"][:63].rstrip("-.")
    body["metadata"]["labels"] = labels
    body["metadata"]["ownerReferences"] = [workload_owner(workload)]
    return body


def build_event_summary(update: CheckUpdate) -> tuple[str, str]:
    """(reason, message) of the Event for a new check state."""
    reason = {"Ready": "CarbonGateOpen", "Pending": "CarbonGateWaiting"}.get(
        update.state, "CarbonGateRejected"
    )
    return reason, update.message


def build_event(
    workload: dict[str, Any], reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event on the Workload (``kubectl describe workload`` shows it)."""
    meta = workload["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "Workload",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if reason == "CarbonGateRejected" else "Normal",
        "source": {"component": "carbonaware-operator"},
        "firstTimestamp": iso(now),
        "lastTimestamp": iso(now),
        "count": 1,
    }


def build_accounting_patch(report: CarbonReport) -> dict[str, Any]:
    """The Workload annotations that carry its carbon report (as strings, with units)."""
    annotations = {
        f"{builders.GROUP}/energy-kwh": f"{report.energy.kwh:.6g}",
        f"{builders.GROUP}/energy-method": report.energy.detail,
        ACCOUNTED_ANNOTATION: f"{report.emissions.grams:.6g}",
        f"{builders.GROUP}/baseline-emissions-grams": f"{report.baseline.grams:.6g}",
        f"{builders.GROUP}/saved-grams": f"{report.saved_grams:.6g}",
        f"{builders.GROUP}/emissions-basis": (
            f"{report.basis} factors, actual readings; {report.savings_method}"
        ),
    }
    return {"metadata": {"annotations": annotations}}


def accounting_summary(report: CarbonReport) -> str:
    return (
        f"carbon gate: finished; {report.energy.kwh:.4g} kWh ({report.energy.method}), "
        f"{report.emissions.grams:.4g} g emitted, {report.saved_grams:.4g} g saved vs "
        "starting at once"
    )


def condition_time(workload: dict[str, Any], type: str) -> datetime | None:
    condition = get_condition((workload.get("status") or {}).get("conditions"), type)
    if not condition or condition.get("status") != "True":
        return None
    return builders.parse_time(condition.get("lastTransitionTime"))
