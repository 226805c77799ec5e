"""Pure builders for training across pods (`spec.trainer.workers: N`, N > 1).

Kubernetes' pattern for it: an Indexed Job (N completions, parallelism N; each pod gets its
rank as `JOB_COMPLETION_INDEX`) and a headless Service for the rendezvous. The Service selects
only rank 0's pod (the Job controller labels each pod with its completion index), so its name
resolves to rank 0's address, where the trainer's rendezvous listens (`MASTER_ADDR`,
`MASTER_PORT`). It publishes the address before the pod is ready: the ranks meet while they
start. One worker: exactly the single-pod Job of builders.build_job_spec.

The reports: every rank writes its own final line to its pod's termination message; the
job's figures add them up (core/distributed.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, NamedTuple

from carbonaware.core.distributed import RankReport, combine_rank_reports
from carbonaware.core.workload_report import WorkloadReport
from carbonaware.kube import builders, job_results
from carbonaware.kube.models import CarbonAwareJobSpec

RENDEZVOUS_PORT = 29500
# Labels and annotation the Job controller puts on an Indexed Job's pods.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


def workers_of(spec: CarbonAwareJobSpec) -> int:
    return spec.trainer.workers if spec.trainer is not None else 1


def rendezvous_service_name(name: str, uid: str) -> str:
    """A DNS-1035 label (a Service's name must start with a letter), unique per uid."""
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    return f"rdv-{name[:50].rstrip('-.')}-{digest}"


def build_rendezvous_service(
    *, name: str, namespace: str, uid: str, job: str | None = None
) -> dict[str, Any]:
    """The headless Service whose name resolves to rank 0's pod, owned by the CarbonAwareJob;
    ``job``: the Job's name when not the stable one (a placement's fallback Job)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": rendezvous_service_name(name, uid),
            "namespace": namespace,
            "labels": {**builders.MANAGED_BY, builders.JOB_LABEL: name[:63].rstrip("-.")},
            "ownerReferences": [builders.owner_reference(name, uid)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                JOB_NAME_LABEL: job or builders.job_name(name, uid),
                COMPLETION_INDEX_LABEL: "0",
            },
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }


def build_distributed_job_spec(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: CarbonAwareJobSpec,
    default_trainer_image: str,
    suspend: bool | None = None,
    placement: int = 0,
) -> dict[str, Any]:
    """The Job for `spec`: builders.build_job_spec's, made an Indexed Job of N ranks when
    spec.trainer.workers is N > 1 (their rendezvous: build_rendezvous_service)."""
    job = builders.build_job_spec(
        name=name,
        namespace=namespace,
        uid=uid,
        spec=spec,
        default_trainer_image=default_trainer_image,
        suspend=suspend,
        placement=placement,
    )
    workers = workers_of(spec)
    if workers <= 1:
        return job
    job_spec = job["spec"]
    job_spec.update(completionMode="Indexed", completions=workers, parallelism=workers)
    container = job_spec["template"]["spec"]["containers"][0]
    container["env"] = [
        *container["env"],
        {"name": "WORLD_SIZE", "value": str(workers)},
        {"name": "MASTER_ADDR", "value": rendezvous_service_name(name, uid)},
        {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
    ]
    container["ports"] = [
        {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}
    ]
    return job


def claim_access_modes(claim: dict[str, Any] | None) -> tuple[str, ...] | None:
    """A PersistentVolumeClaim's access modes (the bound volume's, else the requested ones);
    None for no claim."""
    if claim is None:
        return None
    status_modes = (claim.get("status") or {}).get("accessModes")
    return tuple(status_modes or (claim.get("spec") or {}).get("accessModes") or ())


def _pod_rank(pod: dict[str, Any]) -> int:
    metadata = pod.get("metadata") or {}
    index = (metadata.get("labels") or {}).get(COMPLETION_INDEX_LABEL) or (
        metadata.get("annotations") or {}
    ).get(COMPLETION_INDEX_LABEL)
    try:
        return int(index)
    except (TypeError, ValueError):
        return 0  # a pod of a plain (not Indexed) Job: one rank


class RanksReport(NamedTuple):
    """The job's report, added up from its ranks' (core/distributed.py), and how many
    ranks' reports it adds up."""

    report: WorkloadReport
    ranks_reported: int


def trainer_result_of_ranks(pods: list[dict[str, Any]]) -> RanksReport | None:
    """The job's trainer report from its pods: each rank's latest report, added up.

    The one way the operator reads a Job's report. A plain Job's pods are all rank 0: the
    latest report, as job_results.termination_message picks it, one rank reported. A user's own
    Indexed Job (jobTemplate) is added up alike.
    """
    by_rank: dict[int, list[dict[str, Any]]] = {}
    for pod in pods:
        by_rank.setdefault(_pod_rank(pod), []).append(pod)
    reports: dict[int, WorkloadReport] = {}
    for rank, rank_pods in by_rank.items():
        report = job_results.parse_trainer_result(job_results.termination_message(rank_pods))
        if report is not None:
            reports[rank] = report
    if not reports:
        return None
    job = combine_rank_reports(
        [
            RankReport(
                rank=rank,
                energy_kwh=report.energy_kwh,
                energy_method=report.energy_label,
                duration_seconds=report.wall_seconds,
                accuracy=report.accuracy,
            )
            for rank, report in reports.items()
        ]
    )
    first = reports[min(reports)]
    if len(reports) == 1:  # one rank: its report as it wrote it
        return RanksReport(first, 1)
    combined = dataclasses.replace(
        first,
        accuracy=job.accuracy,
        wall_seconds=job.duration_seconds,
        energy_kwh=job.energy_kwh,
        energy_method=job.energy_method if job.energy_kwh is not None else None,
    )
    return RanksReport(combined, job.ranks_reported)
