"""The CPU time of a Job's pods, sampled from each node's kubelet Summary API.

The kubelet's Summary API (``/stats/summary``, types in k8s.io/kubelet/pkg/apis/stats/
v1alpha1) gives, per container, ``cpu.usageCoreNanoSeconds``: the container's cumulative CPU
time since it started. It is read through the apiserver's node proxy,
``GET /api/v1/nodes/<node>/proxy/stats/summary``, which needs RBAC ``get`` on
``nodes/proxy``: the least privilege that gives cumulative CPU time. (The metrics API of
metrics-server needs only ``get pods.metrics.k8s.io`` but gives a rate, ``usage.cpu`` over
its last window, not a counter: integrating it misses every burst between scrapes, and it
exists only where metrics-server is installed. So the counter is read at its source.)

A finished container's cgroup goes with it and so do its stats: the operator samples every
running pod on each reconcile tick (``CARBONAWARE_POLL_FLOOR``, 10 s by default) and keeps
the last sample of each container, so a pod that ended still counts with what it had used
at its last sample (up to one tick of CPU time is missed at its end; docs/accounting.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carbonaware.core.pod_energy import PodUsage
from carbonaware.kube.builders import parse_time

LOGGER = logging.getLogger(__name__)
GIB = 1024**3


@dataclass(frozen=True)
class ContainerSample:
    """One container's cumulative CPU time at one moment."""

    pod_uid: str
    pod: str
    container: str
    started: str  # the container's startTime: a restarted container is a new instance
    core_seconds: float
    working_set_bytes: float
    time: str


def parse_summary(
    doc: Mapping[str, Any], namespace: str, pod_uids: Collection[str]
) -> list[ContainerSample]:
    """The containers of the pods ``pod_uids`` (in ``namespace``) in a Summary API response;
    containers without a CPU counter yet are left out. Malformed parts are skipped."""
    samples = []
    pods = doc.get("pods") if isinstance(doc, Mapping) else None
    for pod in pods if isinstance(pods, list) else []:
        ref = pod.get("podRef") if isinstance(pod, Mapping) else None
        if not isinstance(ref, Mapping) or ref.get("namespace") != namespace:
            continue
        if ref.get("uid") not in pod_uids:
            continue
        for container in pod.get("containers") or []:
            cpu = container.get("cpu") or {}
            nanos = cpu.get("usageCoreNanoSeconds")
            if isinstance(nanos, bool) or not isinstance(nanos, int) or nanos < 0:
                continue
            memory = container.get("memory") or {}
            working_set = memory.get("workingSetBytes")
            samples.append(
                ContainerSample(
                    pod_uid=str(ref["uid"]),
                    pod=str(ref.get("name", "")),
                    container=str(container.get("name", "")),
                    started=str(container.get("startTime", "")),
                    core_seconds=nanos / 1e9,
                    working_set_bytes=float(working_set) if isinstance(working_set, int) else 0.0,
                    time=str(cpu.get("time", "")),
                )
            )
    return samples


def cpu_cores(quantity: Any) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 1.5) in cores; 0 when absent or unreadable."""
    text = str(quantity or "").strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text or 0)
    except ValueError:
        return 0.0


@dataclass
class UsageTracker:
    """The last sample of every container of a Job's pods, and each pod's times and request:
    what the operator keeps between ticks."""

    samples: dict[tuple[str, str, str], ContainerSample] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> name, times, request
    error: str | None = None  # the last sampling failure, for the status

    def record(self, pods: Iterable[Mapping[str, Any]], samples: Iterable[ContainerSample]) -> None:
        for pod in pods:
            meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            ends = [
                (c.get("state") or {}).get("terminated", {}).get("finishedAt")
                for c in status.get("containerStatuses") or []
            ]
            self.pods[meta["uid"]] = {
                "name": meta["name"],
                "start": status.get("startTime"),
                "end": max(ends) if ends and all(ends) else None,
                "cores": sum(
                    cpu_cores(((c.get("resources") or {}).get("requests") or {}).get("cpu"))
                    for c in spec.get("containers") or []
                ),
            }
        for sample in samples:
            key = (sample.pod_uid, sample.container, sample.started)
            old = self.samples.get(key)
            if old is None or sample.core_seconds >= old.core_seconds:
                self.samples[key] = sample

    def usages(self) -> list[PodUsage]:
        """Every sampled pod's CPU time, wall time, request and memory."""
        by_pod: dict[str, list[ContainerSample]] = {}
        for sample in self.samples.values():
            by_pod.setdefault(sample.pod_uid, []).append(sample)
        result = []
        for uid, samples in by_pod.items():
            info = self.pods.get(uid, {})
            start = parse_time(info.get("start"))
            last = max((parse_time(s.time) for s in samples if s.time), default=None)
            end = parse_time(info.get("end")) or last
            wall = (end - start).total_seconds() if start and end and end > start else 0.0
            result.append(
                PodUsage(
                    pod=info.get("name") or samples[0].pod,
                    core_seconds=sum(s.core_seconds for s in samples),
                    wall_seconds=wall,
                    requested_cores=info.get("cores", 0.0),
                    memory_gb=sum(s.working_set_bytes for s in samples) / GIB,
                )
            )
        return sorted(result, key=lambda u: u.pod)


class PodUsageSampler:
    """Reads the Summary API of the nodes running a Job's pods, through the node proxy."""

    def __init__(self, core_api: Any) -> None:
        self.core = core_api

    def summary(self, node: str) -> dict[str, Any]:
        # _preload_content=False: the generated client would turn the JSON into a Python repr.
        response = self.core.connect_get_node_proxy_with_path(
            node, "stats/summary", _preload_content=False
        )
        return json.loads(response.data)

    def sample(self, tracker: UsageTracker, pods: list[dict[str, Any]], at: datetime) -> None:
        """Sample the running pods of ``pods`` into ``tracker``; a node that cannot be read
        is noted in ``tracker.error`` and the other nodes still count."""
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        by_node: dict[str, list[dict[str, Any]]] = {}
        for pod in running:
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                by_node.setdefault(node, []).append(pod)
        tracker.record(pods, [])
        for node, on_node in by_node.items():
            try:
                doc = self.summary(node)
            except Exception as exc:  # forbidden, node gone, kubelet down: say so, go on
                status = getattr(exc, "status", None)
                tracker.error = (
                    f"kubelet stats of node {node} unreadable at {at:%H:%M:%S}Z"
                    f" ({status or type(exc).__name__})"
                )
                LOGGER.warning(tracker.error)
                continue
            namespace = on_node[0]["metadata"]["namespace"]
            uids = {p["metadata"]["uid"] for p in on_node}
            tracker.record([], parse_summary(doc, namespace, uids))
