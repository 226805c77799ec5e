"""The carbon gate: a Kueue AdmissionCheck controller (controllerName carbonaware.io/carbon-gate).

The thin shell around :mod:`carbonaware.core.gate`. kopf's watch keeps an index of the
Workloads (an event handler: no finalizer, no annotation is written on them); one sweep per
poll floor then

1. marks each of our AdmissionChecks Active (or not, when its CarbonPolicy is missing);
2. for each Workload that waits on one of them: reads the grid through the operator's
   shared provider cache (one request per zone and interval however many Workloads wait),
   appends the reading to the Workload's log ConfigMap, decides with the same pure policy as a
   CarbonAwareJob (:func:`carbonaware.core.policy.decide`), and writes the check state
   (``Ready``, ``Retry`` with a requeue time, or ``Pending``) by server-side apply, with an
   Event when it changes.

Restarts: the decision rests on the Workload's creation time, its log ConfigMap and the
readings, never on memory; a restarted operator reads the log back and decides the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from carbonaware.core import accounting
from carbonaware.core.gate import OverrideError, check_update, needs_write, parse_overrides
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.policy import PolicySettings, Strategy, decide
from carbonaware.kube import builders, gate_objects, metrics
from carbonaware.kube.builders import GROUP, iso, parse_time
from carbonaware.kube.gate_objects import KUEUE_GROUP, KUEUE_VERSION, POLICY_PLURAL
from carbonaware.kube.models import SpecError
from carbonaware.kube.runtime import Runtime
from carbonaware.kube.sources import build_source
from carbonaware.providers.base import ProviderError
from carbonaware.source import Source

POLICY_VERSION = "v1alpha1"
LOGGER = logging.getLogger(__name__)


@dataclass
class WorkloadMemory:
    """Between sweeps (lost on restart: all of it can be read back)."""

    log: IntensityLog | None = None
    log_version: str | None = None
    log_written: str = ""
    source: Source | None = None
    source_key: str = ""
    next_poll: float = 0.0
    last_reading: datetime | None = None
    written_at: float = 0.0
    owner_annotations: dict[str, str] | None = None
    announced_wait: bool = False


@dataclass
class CarbonGate:
    runtime: Runtime
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> body
    memory: dict[str, WorkloadMemory] = field(default_factory=dict)

    # -- the Kubernetes API (sync; on the operator's handler threads) ------------------
    @property
    def api(self):
        from kubernetes import client

        return client.CustomObjectsApi(self.runtime.kube.api_client)

    def _apply_check(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.api.patch_namespaced_custom_object_status(
            KUEUE_GROUP,
            KUEUE_VERSION,
            meta["namespace"],
            "workloads",
            meta["name"],
            body,
            field_manager=gate_objects.FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    # -- one sweep --------------------------------------------------------------------
    def sweep(self) -> None:
        """Reconcile every gated Workload once, with an Event on each new decision."""
        checks_list = self.api.list_cluster_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, "admissionchecks"
        )["items"]
        checks = gate_objects.gate_checks(checks_list)
        if not checks:
            return
        policies: dict[str, dict[str, Any] | None] = {}
        for name in {p for p in checks.values() if p}:
            try:
                policies[name] = self.api.get_cluster_custom_object(
                    GROUP, POLICY_VERSION, POLICY_PLURAL, name
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                policies[name] = None
        now = datetime.now(UTC)
        for check in checks_list:
            name = check["metadata"]["name"]
            if name not in checks:
                continue
            policy = checks[name]
            active = bool(policy and policies.get(policy))
            message = (
                f"carbon gate with CarbonPolicy {policy}"
                if active
                else f"parameters must name an existing CarbonPolicy (got {policy!r})"
            )
            patch = gate_objects.build_active_patch(check, active, message, now)
            if patch:
                self.api.patch_cluster_custom_object_status(
                    KUEUE_GROUP, KUEUE_VERSION, "admissionchecks", name, patch
                )
        for uid, workload in list(self.workloads.items()):
            state = gate_objects.gated_state(workload, checks)
            if state is None:
                continue
            if gate_objects.finished(workload):
                policy_name = checks[state["name"]]
                policy = policies.get(policy_name) if policy_name else None
                if policy is not None and not self._accounted(workload):
                    try:
                        self.account(uid, workload, policy)
                    except (ValueError, SpecError, OverrideError) as exc:
                        # Said once, on the Workload, instead of retried every sweep.
                        note = {gate_objects.ACCOUNTED_ANNOTATION: f"not accounted: {exc}"}
                        self._patch(workload, {"metadata": {"annotations": note}})
                    except ApiException as exc:
                        LOGGER.warning(
                            f"carbon gate: accounting {workload['metadata']['name']}: {exc}"
                        )
                continue
            if state.get("state") in ("Ready", "Rejected") and not gate_objects.held_by(workload):
                continue  # decided: Kueue takes it from here
            policy_name = checks[state["name"]]
            policy = policies.get(policy_name) if policy_name else None
            try:
                event = self.reconcile(uid, workload, state, policy)
            except (ApiException, ProviderError) as exc:
                LOGGER.warning(f"carbon gate: Workload {workload['metadata']['name']}: {exc}")
                continue
            if event:
                body = gate_objects.build_event(workload, *event, datetime.now(UTC))
                self.runtime.kube.core.create_namespaced_event(
                    workload["metadata"]["namespace"], body
                )

    def reconcile(
        self,
        uid: str,
        workload: dict[str, Any],
        state: dict[str, Any],
        policy: dict[str, Any] | None,
    ) -> tuple[str, str] | None:
        mem = self.memory.setdefault(uid, WorkloadMemory())
        meta = workload["metadata"]
        now_wall = datetime.now(UTC)
        if policy is None:
            return None  # the check is marked inactive; Kueue holds the queue
        try:
            overrides = parse_overrides(self._annotations(workload, mem))
            spec, secret_namespace = gate_objects.job_spec(policy.get("spec") or {}, overrides)
            created = parse_time(meta.get("creationTimestamp")) or now_wall
            key = f"{policy['metadata'].get('resourceVersion')}/{overrides}"
            if mem.source is None or mem.source_key != key:
                mem.source = build_source(
                    spec,
                    secret_namespace,
                    created,
                    self.runtime.settings,
                    self.runtime.kube,
                    self.runtime.sources,
                )
                mem.source_key = key
        except (OverrideError, SpecError) as exc:
            if state.get("state") == "Rejected":
                return None
            update = gate_objects.CheckUpdate("Rejected", f"carbon gate: {exc}")
            self._write(workload, state, update, mem, now_wall)
            return ("CarbonGateRejected", update.message)
        source = mem.source
        log = self._load_log(workload, mem)
        now = source.now()
        poll = max(spec.poll_interval, self.runtime.settings.poll_floor)
        if time.monotonic() >= mem.next_poll:
            try:
                reading = self.runtime.cache.latest(source.provider, spec.zone)
                if spec.strategy == "forecast":
                    with contextlib.suppress(ProviderError):
                        log.set_forecast(self.runtime.cache.forecast(source.provider, spec.zone))
                log.append(reading)
                metrics.observe_reading(reading)
                mem.next_poll = time.monotonic() + poll.total_seconds()
            except ProviderError as exc:
                mem.next_poll = time.monotonic() + poll.total_seconds()
                LOGGER.warning(f"carbon gate: {spec.zone}: {exc}")
            now = source.now()
        submitted = source.to_job_time(created)
        decision = decide(
            PolicySettings(
                Strategy(spec.strategy),
                spec.threshold_grams_per_kwh,
                spec.max_delay,
                spec.expected_duration,
            ),
            submitted,
            now,
            log.readings,
            log.forecast,
        )
        update = check_update(decision)
        latest = log.readings[-1].timestamp if log.readings else None
        log.update(
            {
                "zone": spec.zone,
                "strategy": spec.strategy,
                "threshold": f"{spec.threshold_grams_per_kwh:g}",
                "submitted_at": iso(submitted),
                "deadline": iso(decision.deadline),
                "status": update.state,
                "clock": source.clock,
                "workload": meta["name"],
            }
        )
        self._save_log(workload, log, mem)
        same_reading = latest == mem.last_reading
        mem.last_reading = latest
        if not update.active and gate_objects.is_active(workload):
            self._hold(workload, state["name"])  # before the check: no quota meanwhile
        write = needs_write(state, update, same_reading, time.monotonic() - mem.written_at)
        if write:
            self._write(workload, state, update, mem, now_wall)
        if update.active and gate_objects.held_by(workload):
            self._hold(workload, None)  # after the check: Kueue admits it on reservation
        if not write:
            return None
        if update.state != "Ready":
            if mem.announced_wait:  # once: a waiting Workload cycles Retry/Pending each poll
                return None
            mem.announced_wait = True
        return gate_objects.build_event_summary(update)

    @staticmethod
    def _accounted(workload: dict[str, Any]) -> bool:
        annotations = workload["metadata"].get("annotations") or {}
        return gate_objects.ACCOUNTED_ANNOTATION in annotations

    def account(self, uid: str, workload: dict[str, Any], policy: dict[str, Any]) -> None:
        """The finished Workload's energy, emissions and saving: in its annotations, an
        Event and its log. Energy is estimated (power × admitted-to-finished × PUE)."""
        mem = self.memory.setdefault(uid, WorkloadMemory())
        meta = workload["metadata"]
        overrides = parse_overrides(self._annotations(workload, mem))
        spec, _ = gate_objects.job_spec(policy.get("spec") or {}, overrides)
        started = gate_objects.condition_time(workload, "Admitted")
        finished = gate_objects.condition_time(workload, "Finished")
        submitted = parse_time(meta.get("creationTimestamp"))
        if started is None or finished is None or submitted is None:
            return
        log = self._load_log(workload, mem)
        energy = accounting.energy_from(None, spec.power.watts, finished - started, spec.power.pue)
        report = accounting.account(energy, [(started, finished)], submitted, log.readings)
        log.update(accounting.report_metadata(report))
        self._save_log(workload, log, mem)
        self._patch(workload, gate_objects.build_accounting_patch(report))
        body = gate_objects.build_event(
            workload, "CarbonAccounted", gate_objects.accounting_summary(report), datetime.now(UTC)
        )
        self.runtime.kube.core.create_namespaced_event(meta["namespace"], body)

    def _annotations(self, workload: dict[str, Any], mem: WorkloadMemory) -> dict[str, str]:
        """The overrides' annotations: the owning batch/v1 Job's (Kueue does not copy a
        Job's annotations to its Workload), the Workload's own winning."""
        if mem.owner_annotations is None:
            mem.owner_annotations = {}
            meta = workload["metadata"]
            for owner in meta.get("ownerReferences") or []:
                if owner.get("apiVersion") == "batch/v1" and owner.get("kind") == "Job":
                    job = self.runtime.kube.read_job(meta["namespace"], owner["name"])
                    mem.owner_annotations = ((job or {}).get("metadata") or {}).get(
                        "annotations"
                    ) or {}
        return {**mem.owner_annotations, **(workload["metadata"].get("annotations") or {})}

    def _hold(self, workload: dict[str, Any], check_name: str | None) -> None:
        self._patch(workload, gate_objects.build_hold_patch(check_name))

    def _patch(self, workload: dict[str, Any], patch: dict[str, Any]) -> None:
        meta = workload["metadata"]
        self.api.patch_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, meta["namespace"], "workloads", meta["name"], patch
        )

    def _write(self, workload, state, update, mem: WorkloadMemory, now: datetime) -> None:
        body = gate_objects.build_check_apply(workload, state["name"], update, state, now)
        self._apply_check(body)
        mem.written_at = time.monotonic()

    # -- the log ConfigMap ----------------------------------------------------------------
    def _load_log(self, workload: dict[str, Any], mem: WorkloadMemory) -> IntensityLog:
        if mem.log is not None:
            return mem.log
        meta = workload["metadata"]
        budget = self.runtime.settings.log_budget_bytes
        stored = self.runtime.kube.read_configmap(
            meta["namespace"], builders.log_configmap_name(meta["name"])
        )
        text = ((stored or {}).get("data") or {}).get(builders.LOG_CSV_KEY) or ""
        mem.log_version = ((stored or {}).get("metadata") or {}).get("resourceVersion")
        mem.log_written = text
        try:
            mem.log = IntensityLog.from_csv(text, budget_bytes=budget) if text else None
        except ValueError:
            mem.log = None
        if mem.log is None:
            mem.log = IntensityLog(budget_bytes=budget)
        return mem.log

    def _save_log(self, workload: dict[str, Any], log: IntensityLog, mem: WorkloadMemory) -> None:
        text = log.to_csv()
        if text == mem.log_written:
            return
        body = gate_objects.build_workload_log_configmap(workload, text, dict(log.metadata))
        try:
            mem.log_version = self.runtime.kube.write_configmap(body, mem.log_version)
        except ApiException as exc:
            if exc.status != 409:
                raise
            mem.log = None  # someone else wrote it: read it back next sweep
            return
        mem.log_written = text


def register_gate(registry: kopf.OperatorRegistry, runtime: Runtime) -> CarbonGate:
    """Register the carbon gate on ``registry`` (kube/main.py calls this)."""
    gate = CarbonGate(runtime)
    interval = runtime.settings.poll_floor.total_seconds()
    tasks: list[asyncio.Task] = []

    @kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, "workloads", registry=registry, id="carbon-gate")
    async def index(type: str, body: Any, uid: str, **_: Any) -> None:
        if type == "DELETED":
            gate.workloads.pop(uid, None)
            gate.memory.pop(uid, None)
        else:
            gate.workloads[uid] = dict(body)

    async def loop() -> None:
        while True:
            try:
                await runtime.in_thread(gate.sweep)
            except ApiException as exc:
                if exc.status != 404:  # 404: Kueue or the CarbonPolicy CRD not installed
                    LOGGER.warning(f"carbon gate sweep failed: HTTP {exc.status} {exc.reason}")
            except Exception as exc:  # one bad sweep must not end the gate
                LOGGER.warning(f"carbon gate sweep failed: {exc}")
            await asyncio.sleep(interval)

    @kopf.on.startup(registry=registry)
    async def start_gate(**_: Any) -> None:
        tasks.append(asyncio.get_running_loop().create_task(loop()))

    @kopf.on.cleanup(registry=registry)
    async def stop_gate(**_: Any) -> None:
        for task in tasks:
            task.cancel()

    return gate
